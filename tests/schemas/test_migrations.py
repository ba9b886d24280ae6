"""Migrations against the database that is there: catalog checks for both flavours.

Every test runs on a database migrated as plain PostgreSQL (``migrate(flavor="postgres")``,
always possible) and, where the cluster has the timescaledb extension installed and
preloaded, on one migrated as TimescaleDB; without the extension the TimescaleDB cases
skip with that reason. Each module gets fresh databases, dropped at the end.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pytest

from tickwire.schemas.settings import Settings
from tickwire.sinks.maintenance import maintain
from tickwire.sinks.migrate import LOCK_ID, load_migrations, migrate

pytestmark = pytest.mark.integration

NO_TIMESCALEDB = "timescaledb extension not installed or not preloaded in this PostgreSQL cluster"

# --- the contract: tables and views, their columns in order, with types -----------------
# (format_type spelling, "character varying" shortened to varchar, "timestamp with time
# zone" to timestamptz; "not null" where the column is NOT NULL)
COLUMNS = {
    "ab_tests": [
        "id bigint not null",
        "test_id uuid not null",
        "test_name varchar(100) not null",
        "control_version varchar(20) not null",
        "treatment_version varchar(20) not null",
        "test_type varchar(20) not null",
        "control_traffic_percent integer not null",
        "treatment_traffic_percent integer not null",
        "started_at timestamptz not null",
        "ended_at timestamptz",
        "scheduled_duration_hours integer",
        "success_metric varchar(50) not null",
        "minimum_improvement_percent numeric(5,2)",
        "control_metrics jsonb",
        "treatment_metrics jsonb",
        "improvement_percent numeric(6,2)",
        "status varchar(20)",
        "conclusion varchar(200)",
        "created_at timestamptz",
        "updated_at timestamptz",
    ],
    "candles_1d": [
        "symbol varchar(10)",
        "bucket timestamptz",
        "open numeric",
        "high numeric",
        "low numeric",
        "close numeric",
        "volume numeric",
        "bar_count bigint",
    ],
    "candles_1h": [
        "symbol varchar(10)",
        "bucket timestamptz",
        "open numeric",
        "high numeric",
        "low numeric",
        "close numeric",
        "volume numeric",
        "bar_count bigint",
    ],
    "correlation_conflicts": [
        "id bigint not null",
        "timeframe varchar(5) not null",
        "window_bars integer not null",
        "timestamp timestamptz not null",
        "symbol_a varchar(10) not null",
        "symbol_b varchar(10) not null",
        "crossing varchar(5) not null",
        "threshold numeric(4,3) not null",
        "value numeric(7,6)",
        "previous_value numeric(7,6)",
        "created_at timestamptz",
    ],
    "historical_correlations": [
        "timeframe varchar(5) not null",
        "window_bars integer not null",
        "day date not null",
        "timestamp timestamptz not null",
        "symbol_a varchar(10) not null",
        "symbol_b varchar(10) not null",
        "value numeric(7,6)",
        "common_bars integer not null",
    ],
    "correlation_thresholds": [
        "timeframe varchar(5) not null",
        "timestamp timestamptz not null",
        "regime varchar(20)",
        "threshold numeric(4,3) not null",
        "previous_threshold numeric(4,3)",
    ],
    "correlation_analysis_results": [
        "timeframe varchar(5) not null",
        "window_bars integer not null",
        "timestamp timestamptz not null",
        "symbol_count integer not null",
        "pair_count integer not null",
        "group_count integer not null",
        "threshold numeric(4,3) not null",
        "regime varchar(20)",
        "mean_correlation numeric(7,6)",
        "stddev_correlation numeric(7,6)",
        "most_correlated_a varchar(10)",
        "most_correlated_b varchar(10)",
        "most_correlated_value numeric(7,6)",
        "least_correlated_a varchar(10)",
        "least_correlated_b varchar(10)",
        "least_correlated_value numeric(7,6)",
    ],
    "correlation_entries": [
        "timeframe varchar(5) not null",
        "window_bars integer not null",
        "timestamp timestamptz not null",
        "symbol_a varchar(10) not null",
        "symbol_b varchar(10) not null",
        "value numeric(7,6)",
        "common_bars integer not null",
    ],
    "correlation_group_members": [
        "timeframe varchar(5) not null",
        "window_bars integer not null",
        "timestamp timestamptz not null",
        "group_no integer not null",
        "symbol varchar(10) not null",
        "mean_abs_correlation numeric(7,6)",
        "created_at timestamptz",
    ],
    "correlation_groups": [
        "id bigint not null",
        "timeframe varchar(5) not null",
        "window_bars integer not null",
        "timestamp timestamptz not null",
        "group_no integer not null",
        "threshold numeric(4,3) not null",
        "member_count integer not null",
        "mean_abs_correlation numeric(7,6)",
        "min_abs_correlation numeric(7,6)",
        "created_at timestamptz",
    ],
    "correlation_matrix": [
        "id bigint not null",
        "timeframe varchar(5) not null",
        "window_bars integer not null",
        "timestamp timestamptz not null",
        "symbol_count integer not null",
        "pair_count integer not null",
        "mean_correlation numeric(7,6)",
        "median_correlation numeric(7,6)",
        "stddev_correlation numeric(7,6)",
        "min_correlation numeric(7,6)",
        "max_correlation numeric(7,6)",
        "mean_abs_correlation numeric(7,6)",
        "threshold numeric(4,3)",
        "pairs_above_threshold integer",
        "created_at timestamptz",
    ],
    "improvement_events": [
        "id bigint not null",
        "event_type varchar(30) not null",
        "event_timestamp timestamptz",
        "component_type varchar(30) not null",
        "component_id varchar(50) not null",
        "old_value jsonb",
        "new_value jsonb",
        "trigger_reason varchar(100)",
        "performance_before jsonb",
        "performance_after jsonb",
        "improvement_metrics jsonb",
        "automated boolean",
        "approved_by varchar(50)",
        "approval_timestamp timestamptz",
        "can_rollback boolean",
        "rollback_timestamp timestamptz",
        "discord_notified boolean",
        "notification_message_id varchar(100)",
        "created_at timestamptz",
    ],
    "market_conditions_intraday": [
        "id bigint not null",
        "symbol varchar(10) not null",
        "timeframe varchar(5) not null",
        "timestamp timestamptz not null",
        "open numeric(18,8) not null",
        "high numeric(18,8) not null",
        "low numeric(18,8) not null",
        "close numeric(18,8) not null",
        "volume bigint not null",
        "vwap numeric(18,8)",
        "atr_14 numeric(18,8)",
        "rsi_14 numeric(5,2)",
        "ema_20 numeric(18,8)",
        "ema_50 numeric(18,8)",
        "bb_upper numeric(18,8)",
        "bb_middle numeric(18,8)",
        "bb_lower numeric(18,8)",
        "macd_line numeric(18,8)",
        "macd_signal numeric(18,8)",
        "macd_hist numeric(18,8)",
        "adx_14 numeric(5,2)",
        "plus_di_14 numeric(5,2)",
        "minus_di_14 numeric(5,2)",
        "volatility_20d numeric(10,6)",
        "vix numeric(8,4)",
        "detected_regime varchar(20)",
        "regime_confidence numeric(5,4)",
        "spy_correlation numeric(4,3)",
        "sector_correlation numeric(4,3)",
        "created_at timestamptz",
    ],
    "market_regime_history": [
        "id bigint not null",
        "symbol varchar(10) not null",
        "timeframe varchar(5) not null",
        "timestamp timestamptz not null",
        "regime varchar(20) not null",
        "confidence numeric(5,4)",
        "previous_regime varchar(20)",
        "previous_regime_since timestamptz",
        "close numeric(18,8)",
        "adx_14 numeric(5,2)",
        "plus_di_14 numeric(5,2)",
        "minus_di_14 numeric(5,2)",
        "ema_20 numeric(18,8)",
        "ema_50 numeric(18,8)",
        "atr_14 numeric(18,8)",
        "rsi_14 numeric(5,2)",
        "volatility_20d numeric(10,6)",
        "ema_slope_per_bar double precision",
        "volatility_percentile numeric(5,4)",
        "details jsonb",
        "created_at timestamptz",
    ],
    "model_performance": [
        "id bigint not null",
        "model_version varchar(20) not null",
        "model_type varchar(30) not null",
        "evaluation_date date not null",
        "training_samples integer",
        "testing_samples integer",
        "training_period_start date",
        "training_period_end date",
        "accuracy numeric(5,4)",
        "precision numeric(5,4)",
        "recall numeric(5,4)",
        "f1_score numeric(5,4)",
        "auc_roc numeric(5,4)",
        "brier_score numeric(6,5)",
        "expected_calibration_error numeric(6,5)",
        "trending_up_accuracy numeric(5,4)",
        "trending_down_accuracy numeric(5,4)",
        "ranging_accuracy numeric(5,4)",
        "volatile_accuracy numeric(5,4)",
        "feature_importance jsonb",
        "live_accuracy numeric(5,4)",
        "live_pnl_contribution numeric(18,4)",
        "status varchar(20)",
        "created_at timestamptz",
    ],
    "model_predictions": [
        "id bigint not null",
        "prediction_id uuid not null",
        "model_version varchar(20) not null",
        "model_type varchar(30) not null",
        "symbol varchar(10) not null",
        "predicted_at timestamptz not null",
        "prediction_horizon_minutes integer not null",
        "predicted_direction varchar(7)",
        "confidence_score numeric(5,4)",
        "predicted_volatility numeric(10,6)",
        "feature_vector jsonb not null",
        "feature_hash varchar(64)",
        "actual_direction varchar(7)",
        "actual_return numeric(18,8)",
        "prediction_accuracy boolean",
        "validated_at timestamptz",
        "expiry_reason varchar(100)",
        "created_at timestamptz",
    ],
    "mv_daily_trading_stats": [
        "symbol varchar(10)",
        "bucket timestamptz",
        "total_trades bigint",
        "open_trades bigint",
        "winning_trades bigint",
        "losing_trades bigint",
        "breakeven_trades bigint",
        "total_quantity bigint",
        "gross_pnl numeric",
        "net_pnl numeric",
        "total_commission numeric",
        "avg_net_pnl numeric",
        "best_net_pnl numeric",
        "worst_net_pnl numeric",
        "avg_duration_seconds numeric",
    ],
    "optimization_queue": [
        "id bigint not null",
        "task_type varchar(30) not null",
        "component_id varchar(50) not null",
        "frequency varchar(20) not null",
        "last_run_at timestamptz",
        "next_run_at timestamptz not null",
        "status varchar(20)",
        "priority integer",
        "last_result jsonb",
        "last_error text",
        "consecutive_failures integer",
        "config jsonb not null",
        "enabled boolean",
        "created_at timestamptz",
        "updated_at timestamptz",
    ],
    "regime_performance_stats": [
        "id bigint not null",
        "strategy_id varchar(50) not null",
        "regime varchar(20) not null",
        "timeframe varchar(5) not null",
        "total_trades integer",
        "winning_trades integer",
        "losing_trades integer",
        "breakeven_trades integer",
        "gross_profit numeric(18,4)",
        "gross_loss numeric(18,4)",
        "net_pnl numeric(18,4)",
        "win_rate numeric(5,4)",
        "wilson_lower_bound numeric(5,4)",
        "profit_factor numeric(8,4)",
        "expectancy numeric(18,4)",
        "avg_win numeric(18,4)",
        "avg_loss numeric(18,4)",
        "avg_trade numeric(18,4)",
        "max_drawdown numeric(8,4)",
        "sharpe_ratio numeric(8,4)",
        "first_trade_at timestamptz",
        "last_trade_at timestamptz",
        "created_at timestamptz",
        "updated_at timestamptz",
    ],
    "strategy_performance": [
        "id bigint not null",
        "strategy_id varchar(50) not null",
        "model_version varchar(20) not null",
        "period_type varchar(10) not null",
        "period_start date not null",
        "total_trades integer",
        "winning_trades integer",
        "losing_trades integer",
        "breakeven_trades integer",
        "gross_profit numeric(18,4)",
        "gross_loss numeric(18,4)",
        "net_pnl numeric(18,4)",
        "total_commission numeric(18,4)",
        "win_rate numeric(5,4)",
        "wilson_lower_bound numeric(5,4)",
        "profit_factor numeric(8,4)",
        "expectancy numeric(18,4)",
        "avg_win numeric(18,4)",
        "avg_loss numeric(18,4)",
        "avg_trade numeric(18,4)",
        "largest_win numeric(18,4)",
        "largest_loss numeric(18,4)",
        "max_drawdown numeric(8,4)",
        "max_drawdown_duration_days integer",
        "sharpe_ratio numeric(8,4)",
        "sortino_ratio numeric(8,4)",
        "calmar_ratio numeric(8,4)",
        "avg_slippage numeric(18,8)",
        "avg_fill_time_ms integer",
        "created_at timestamptz",
        "updated_at timestamptz",
    ],
    "trade_outcomes": [
        "id bigint not null",
        "trade_id uuid not null",
        "strategy_id varchar(50) not null",
        "model_version varchar(20) not null",
        "symbol varchar(10) not null",
        "direction varchar(5) not null",
        "entry_time timestamptz not null",
        "exit_time timestamptz",
        "entry_price numeric(18,8) not null",
        "exit_price numeric(18,8)",
        "quantity integer not null",
        "gross_pnl numeric(18,4)",
        "net_pnl numeric(18,4)",
        "commission numeric(18,4)",
        "slippage numeric(18,8)",
        "duration_seconds integer",
        "max_favorable_excursion numeric(18,4)",
        "max_adverse_excursion numeric(18,4)",
        "outcome_type varchar(20)",
        "created_at timestamptz",
        "updated_at timestamptz",
    ],
}

# The execution stream (0011); each history has its current-state table's columns.
COLUMNS |= {
    "orders": [
        "order_id varchar(64) not null",
        "portfolio_id varchar(50) not null",
        "strategy_id varchar(50) not null",
        "symbol varchar(10) not null",
        "side varchar(4) not null",
        "order_type varchar(10) not null",
        "time_in_force varchar(3) not null",
        "quantity bigint not null",
        "limit_price numeric(18,8)",
        "stop_price numeric(18,8)",
        "status varchar(16) not null",
        "filled_quantity bigint not null",
        "avg_fill_price numeric(18,8)",
        "fill_ratio double precision not null",
        "slippage numeric(18,8)",
        "placed_at timestamptz not null",
        "updated_at timestamptz not null",
        "first_fill_at timestamptz",
        "completed_at timestamptz",
        "time_to_fill_ms bigint",
        "reason varchar(200)",
        "version integer not null",
    ],
    "order_events": [
        "order_id varchar(64) not null",
        "version integer not null",
        "ts timestamptz not null",
        "event varchar(10) not null",
        "status varchar(16) not null",
        "portfolio_id varchar(50) not null",
        "symbol varchar(10) not null",
        "quantity bigint not null",
        "filled_quantity bigint not null",
        "fill_id varchar(64)",
        "fill_price numeric(18,8)",
        "fill_quantity bigint",
        "limit_price numeric(18,8)",
        "reason varchar(200)",
    ],
    "positions": [
        "portfolio_id varchar(50) not null",
        "symbol varchar(10) not null",
        "ts timestamptz not null",
        "cause varchar(4) not null",
        "quantity bigint not null",
        "avg_cost numeric(18,8)",
        "mark_price numeric(18,8) not null",
        "market_value numeric not null",
        "exposure numeric not null",
        "unrealized_pnl numeric not null",
        "realized_pnl numeric not null",
        "fees numeric not null",
        "cash_flow numeric not null",
        "day_pnl numeric not null",
        "sector varchar(50)",
        "opened_at timestamptz",
        "version integer not null",
    ],
    "portfolios": [
        "portfolio_id varchar(50) not null",
        "ts timestamptz not null",
        "cash numeric not null",
        "market_value numeric not null",
        "total_value numeric not null",
        "gross_exposure numeric not null",
        "net_exposure numeric not null",
        "realized_pnl numeric not null",
        "unrealized_pnl numeric not null",
        "day_pnl numeric not null",
        "positions_count integer not null",
        "largest_position_symbol varchar(10)",
        "largest_position_value numeric",
        "sector_exposure jsonb not null",
        "version bigint not null",
    ],
    "risk_events": [
        "portfolio_id varchar(50) not null",
        "ts timestamptz not null",
        "rule varchar(30) not null",
        "subject varchar(50) not null",
        "state varchar(7) not null",
        "observed numeric not null",
        "limit_value numeric not null",
    ],
    "execution_audit": [
        "source_topic varchar(249) not null",
        "source_partition integer not null",
        "source_offset bigint not null",
        "kind varchar(8) not null",
        "subject varchar(64) not null",
        "ts timestamptz not null",
        "portfolio_id varchar(50) not null",
        "symbol varchar(10) not null",
        "payload jsonb not null",
        "recorded_at timestamptz not null",
    ],
    "portfolio_realtime": [
        "portfolio_id varchar(50)",
        "as_of timestamptz",
        "cash numeric",
        "market_value numeric",
        "total_value numeric",
        "gross_exposure numeric",
        "net_exposure numeric",
        "realized_pnl numeric",
        "unrealized_pnl numeric",
        "day_pnl numeric",
        "day_return numeric",
        "positions_count integer",
        "largest_position_symbol varchar(10)",
        "largest_position_value numeric",
        "sector_exposure jsonb",
    ],
    "symbol_performance_summary": [
        "symbol varchar(10)",
        "day timestamptz",
        "open numeric",
        "high numeric",
        "low numeric",
        "close numeric",
        "volume numeric",
        "bar_count bigint",
        "day_return numeric",
        "total_trades bigint",
        "winning_trades bigint",
        "losing_trades bigint",
    ],
}
COLUMNS["portfolio_performance"] = [
    "portfolio_id varchar(50) not null",
    "period_type varchar(5) not null",
    "period_start date not null",
    "period_end date not null",
    "trading_days integer not null",
    "start_value numeric not null",
    "end_value numeric not null",
    "period_return double precision not null",
    "volatility double precision",
    "sharpe_ratio numeric(8,4)",
    "sortino_ratio numeric(8,4)",
    "max_drawdown double precision not null",
    "beta double precision",
    "benchmark_return double precision",
    "updated_at timestamptz not null",
]
COLUMNS["position_snapshots"] = COLUMNS["positions"]

# Sizing and exit decisions joined with their trades (0014).
_EXIT_DECISION = [
    "exit_id uuid not null",
    "trade_id uuid not null",
    "strategy_id varchar(50) not null",
    "symbol varchar(10) not null",
    "ts timestamptz not null",
    "reason varchar(20) not null",
    "price numeric(18,8) not null",
    "quantity integer not null",
]
COLUMNS |= {
    "position_sizing_history": [
        "decision_id uuid not null",
        "portfolio_id varchar(50) not null",
        "strategy_id varchar(50) not null",
        "symbol varchar(10) not null",
        "trade_id uuid",
        "ts timestamptz not null",
        "account_value numeric not null",
        "risk_per_trade double precision not null",
        "stop_distance numeric(18,8) not null",
        "volatility double precision",
        "correlation_adjustment double precision not null",
        "regime_adjustment double precision not null",
        "quantity integer not null",
        "config_id uuid",
        "planned_risk numeric not null",
        "trade_quantity integer",
        "trade_closed_at timestamptz",
        "max_adverse_excursion numeric",
        "realized_pnl numeric",
        "realized_loss numeric",
        "mae_to_planned double precision",
        "loss_to_planned double precision",
        "version integer not null",
    ],
    "position_sizing_config_history": [
        "config_id uuid not null",
        "portfolio_id varchar(50) not null",
        "strategy_id varchar(50) not null",
        "symbol varchar(10) not null",
        "ts timestamptz not null",
        "method varchar(20) not null",
        "risk_per_trade double precision not null",
        "max_position_fraction double precision",
        "volatility_target double precision",
        "correlation_scaling boolean not null",
        "regime_scaling boolean not null",
    ],
    "smart_exit_history": _EXIT_DECISION + [
        "partial boolean not null",
        "direction varchar(5)",
        "entry_price numeric(18,8)",
        "trade_closed_at timestamptz",
        "exit_pnl numeric",
        "trade_pnl numeric",
        "max_favorable_excursion numeric",
        "exit_efficiency double precision",
        "trade_efficiency double precision",
        "version integer not null",
    ],
    "partial_exit_history": _EXIT_DECISION + [
        "trade_closed_at timestamptz",
        "remaining_quantity integer",
        "remainder_exit_price double precision",
        "remainder_pnl numeric",
        "remainder_pnl_at_partial numeric",
        "remainder_gain numeric",
        "version integer not null",
    ],
}
COLUMNS["portfolio_snapshots"] = COLUMNS["portfolios"]

# Strategy scores and performance by regime (0012).
COLUMNS["trade_outcomes"].append("entry_regimes jsonb")
_UNBOUNDED = ("gross_profit", "gross_loss", "net_pnl", "expectancy", "avg_win", "avg_loss", "avg_trade")
COLUMNS["regime_performance_stats"] = [
    f"{c.split()[0]} numeric" if c.split()[0] in _UNBOUNDED else c for c in COLUMNS["regime_performance_stats"]
]
COLUMNS["strategy_scores"] = [
    "strategy_id varchar(50) not null",
    "model_version varchar(20) not null",
    "period_type varchar(10) not null",
    "period_start date not null",
    "scored_at timestamptz not null",
    "total_trades integer not null",
    "risk_adjusted_score double precision not null",
    "win_rate_score double precision not null",
    "drawdown_score double precision not null",
    "consistency_score double precision",
    "score double precision not null",
    "created_at timestamptz",
]
COLUMNS["strategy_latest_scores"] = [c.removesuffix(" not null") for c in COLUMNS["strategy_scores"]]

# Multi-timeframe analysis (0015).
COLUMNS["multi_timeframe_analysis"] = [
    "symbol varchar(10) not null",
    "timestamp timestamptz not null",
    "trigger_timeframe varchar(5) not null",
    "timeframes jsonb not null",
    "alignment_score double precision not null",
    "dominant_direction varchar(4) not null",
    "agreeing_timeframes integer not null",
    "timeframe_count integer not null",
    "created_at timestamptz",
]

# market_conditions is the view over the intraday and the daily table (0010): same columns.
COLUMNS["market_conditions_daily"] = COLUMNS["market_conditions_intraday"]
COLUMNS["market_conditions"] = [c.removesuffix(" not null") for c in COLUMNS["market_conditions_intraday"]]

TIME_TABLES = {  # time-partitioned table -> its time column (hypertable / range partition key)
    "market_conditions_intraday": "timestamp",
    "trade_outcomes": "entry_time",
    "model_predictions": "predicted_at",
    "market_regime_history": "timestamp",
    "correlation_matrix": "timestamp",
    "correlation_entries": "timestamp",
    "correlation_groups": "timestamp",
    "correlation_group_members": "timestamp",
    "correlation_conflicts": "timestamp",
    "historical_correlations": "timestamp",
    "correlation_thresholds": "timestamp",
    "correlation_analysis_results": "timestamp",
    "order_events": "ts",
    "position_snapshots": "ts",
    "portfolio_snapshots": "ts",
    "risk_events": "ts",
    "execution_audit": "ts",
    "multi_timeframe_analysis": "timestamp",
    "position_sizing_history": "ts",
    "smart_exit_history": "ts",
    "partial_exit_history": "ts",
}
# On TimescaleDB the daily bars' table too; on PostgreSQL it is not partitioned (0010).
HYPERTABLES = TIME_TABLES | {"market_conditions_daily": "timestamp"}
VIEWS = ("candles_1h", "candles_1d", "mv_daily_trading_stats")

# Every unique index of each table (the sinks' ON CONFLICT keys among them).
UNIQUE_KEYS = {
    "market_conditions_intraday": {("symbol", "timeframe", "timestamp")},
    "market_conditions_daily": {("symbol", "timeframe", "timestamp")},
    "trade_outcomes": {("trade_id", "entry_time")},
    "model_predictions": {("prediction_id", "predicted_at")},
    "strategy_performance": {("id",), ("strategy_id", "model_version", "period_type", "period_start")},
    "model_performance": {("id",), ("model_version", "model_type", "evaluation_date")},
    "regime_performance_stats": {("id",), ("strategy_id", "regime", "timeframe")},
    "strategy_scores": {("strategy_id", "model_version", "period_type", "period_start")},
    "multi_timeframe_analysis": {("symbol", "timestamp")},
    "improvement_events": {("id",)},
    "ab_tests": {("id",), ("test_id",)},
    "optimization_queue": {("id",)},
    "market_regime_history": {("symbol", "timeframe", "timestamp")},
    "correlation_matrix": {("timeframe", "window_bars", "timestamp")},
    "correlation_entries": {("timeframe", "window_bars", "timestamp", "symbol_a", "symbol_b")},
    "correlation_groups": {("timeframe", "window_bars", "timestamp", "group_no")},
    "correlation_group_members": {("timeframe", "window_bars", "timestamp", "symbol")},
    "correlation_conflicts": {("timeframe", "window_bars", "timestamp", "symbol_a", "symbol_b")},
    "historical_correlations": {("timeframe", "window_bars", "timestamp", "symbol_a", "symbol_b")},
    "correlation_thresholds": {("timeframe", "timestamp")},
    "correlation_analysis_results": {("timeframe", "window_bars", "timestamp")},
    "orders": {("order_id",)},
    "order_events": {("order_id", "version", "ts")},
    "positions": {("portfolio_id", "symbol")},
    "position_snapshots": {("portfolio_id", "symbol", "version", "ts")},
    "portfolios": {("portfolio_id",)},
    "portfolio_performance": {("portfolio_id", "period_type", "period_start")},
    "portfolio_snapshots": {("portfolio_id", "version", "ts")},
    "risk_events": {("portfolio_id", "rule", "subject", "ts", "state")},
    "execution_audit": {("source_topic", "source_partition", "source_offset", "kind", "subject", "ts")},
    "position_sizing_history": {("decision_id", "ts")},
    "position_sizing_config_history": {("config_id", "symbol", "ts")},
    "smart_exit_history": {("exit_id", "ts")},
    "partial_exit_history": {("exit_id", "ts")},
}

# The seeds' indexes: name -> (table, what follows USING btree in pg_get_indexdef).
SEED_INDEXES = {
    "idx_trade_outcomes_strategy": ("trade_outcomes", "(strategy_id, entry_time DESC)"),
    "idx_trade_outcomes_model": ("trade_outcomes", "(model_version, entry_time DESC)"),
    "idx_trade_outcomes_symbol": ("trade_outcomes", "(symbol, entry_time DESC)"),
    "idx_trade_outcomes_time": ("trade_outcomes", "(entry_time DESC)"),
    "idx_model_predictions_model": ("model_predictions", "(model_version, predicted_at DESC)"),
    "idx_model_predictions_symbol": ("model_predictions", "(symbol, predicted_at DESC)"),
    "idx_model_predictions_unvalidated": ("model_predictions", "(validated_at) WHERE (validated_at IS NULL)"),
    "idx_market_conditions_regime": ("market_conditions_intraday", '(detected_regime, "timestamp" DESC)'),
    "idx_strategy_performance_strategy": ("strategy_performance", "(strategy_id, period_start DESC)"),
    "idx_strategy_performance_model": ("strategy_performance", "(model_version, period_start DESC)"),
    "idx_model_performance_version": ("model_performance", "(model_version, evaluation_date DESC)"),
    "idx_model_performance_status": ("model_performance", "(status)"),
    "idx_improvement_events_type": ("improvement_events", "(event_type, event_timestamp DESC)"),
    "idx_improvement_events_component": ("improvement_events", "(component_type, component_id)"),
    "idx_ab_tests_status": ("ab_tests", "(status)"),
    "idx_ab_tests_running": ("ab_tests", "(status, started_at) WHERE ((status)::text = 'running'::text)"),
    "idx_optimization_queue_next_run": (
        "optimization_queue",
        "(next_run_at) WHERE ((enabled = true) AND ((status)::text = 'pending'::text))",
    ),
    "idx_optimization_queue_status": ("optimization_queue", "(status)"),
    "idx_market_regime_history_regime": ("market_regime_history", '(regime, "timestamp" DESC)'),
    "idx_correlation_entries_pair": ("correlation_entries", '(symbol_a, symbol_b, "timestamp" DESC)'),
    "idx_correlation_entries_symbol_b": ("correlation_entries", '(symbol_b, "timestamp" DESC)'),
    "idx_historical_correlations_pair": ("historical_correlations", "(symbol_a, symbol_b, day DESC)"),
}

# The seeds' defaults: (table, column) -> pg_get_expr of the default.
SEED_DEFAULTS = {
    ("trade_outcomes", "commission"): "0",
    ("trade_outcomes", "slippage"): "0",
    ("trade_outcomes", "created_at"): "now()",
    ("model_predictions", "created_at"): "now()",
    ("market_conditions_intraday", "created_at"): "now()",
    ("market_conditions_daily", "created_at"): "now()",
    ("market_conditions_daily", "id"): "nextval('market_conditions_id_seq'::regclass)",
    ("strategy_performance", "total_trades"): "0",
    ("strategy_performance", "net_pnl"): "0",
    ("model_performance", "status"): "'evaluating'::character varying",
    ("improvement_events", "event_timestamp"): "now()",
    ("improvement_events", "automated"): "true",
    ("improvement_events", "can_rollback"): "true",
    ("improvement_events", "discord_notified"): "false",
    ("ab_tests", "scheduled_duration_hours"): "48",
    ("ab_tests", "minimum_improvement_percent"): "5.0",
    ("ab_tests", "status"): "'running'::character varying",
    ("optimization_queue", "status"): "'pending'::character varying",
    ("optimization_queue", "priority"): "5",
    ("optimization_queue", "consecutive_failures"): "0",
    ("optimization_queue", "enabled"): "true",
}

# The seeds' CHECKs: table -> columns that must each be named by a CHECK constraint.
SEED_CHECKS = {
    "trade_outcomes": ("direction", "outcome_type"),
    "market_conditions_intraday": ("detected_regime", "timeframe"),
    "market_conditions_daily": ("detected_regime", "timeframe"),
    "strategy_performance": ("period_type",),
    "model_performance": ("status",),
    "ab_tests": ("test_type", "control_traffic_percent", "treatment_traffic_percent", "status"),
    "optimization_queue": ("status",),
    "market_regime_history": ("regime",),
    "correlation_entries": ("value", "symbol_a"),
    "historical_correlations": ("value", "symbol_a", "day"),
    "correlation_thresholds": ("regime", "threshold"),
    "correlation_analysis_results": ("regime", "threshold", "most_correlated_value"),
    "position_sizing_history": ("account_value", "risk_per_trade", "stop_distance", "quantity"),
    "position_sizing_config_history": ("method", "risk_per_trade"),
    "smart_exit_history": ("reason", "quantity", "direction"),
    "partial_exit_history": ("reason", "quantity"),
}

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)

# One valid row per table the streams fill, for the upsert checks.
SAMPLE_ROWS = {
    "market_conditions_intraday": dict(symbol="AAA", timeframe="1m", timestamp=T0, open=1, high=2, low=0.5, close=1.5, volume=10),
    "market_conditions_daily": dict(symbol="AAA", timeframe="1d", timestamp=T0, open=1, high=2, low=0.5, close=1.5, volume=10),
    "trade_outcomes": dict(trade_id=uuid.UUID(int=1), strategy_id="s1", model_version="v1", symbol="AAA", direction="SHORT",
                           entry_time=T0, entry_price=10, quantity=5, outcome_type="OPEN"),
    "model_predictions": dict(prediction_id=uuid.UUID(int=2), model_version="v1", model_type="direction", symbol="AAA",
                              predicted_at=T0, prediction_horizon_minutes=15, predicted_direction="NEUTRAL",
                              confidence_score=0.7, feature_vector=json.dumps({"rsi_14": 55.0})),
    "strategy_performance": dict(strategy_id="s1", model_version="v1", period_type="DAY", period_start=T0.date(), total_trades=3),
    "model_performance": dict(model_version="v1", model_type="direction", evaluation_date=T0.date(), accuracy=0.55),
    "regime_performance_stats": dict(strategy_id="s1", regime="ranging", timeframe="1h", total_trades=2),
    "strategy_scores": dict(strategy_id="s1", model_version="v1", period_type="WEEK", period_start=T0.date(), scored_at=T0,
                            total_trades=4, risk_adjusted_score=0.5, win_rate_score=0.2, drawdown_score=1.0, score=52.5),
    "multi_timeframe_analysis": dict(symbol="AAA", timestamp=T0, trigger_timeframe="1h", timeframes=json.dumps({"1h": {}}),
                                     alignment_score=0.5, dominant_direction="up", agreeing_timeframes=1, timeframe_count=2),
    "market_regime_history": dict(symbol="AAA", timeframe="1h", timestamp=T0, regime="trending_up", confidence=0.8,
                                  ema_slope_per_bar=0.0012),
    "correlation_matrix": dict(timeframe="1h", window_bars=60, timestamp=T0, symbol_count=3, pair_count=3, mean_correlation=0.25),
    "correlation_entries": dict(timeframe="1h", window_bars=60, timestamp=T0, symbol_a="AAA", symbol_b="BBB", value=-0.5, common_bars=60),
    "correlation_groups": dict(timeframe="1h", window_bars=60, timestamp=T0, group_no=0, threshold=0.7, member_count=2),
    "correlation_group_members": dict(timeframe="1h", window_bars=60, timestamp=T0, group_no=0, symbol="AAA"),
    "correlation_conflicts": dict(timeframe="1h", window_bars=60, timestamp=T0, symbol_a="AAA", symbol_b="BBB",
                                  crossing="above", threshold=0.7, value=0.75, previous_value=0.65),
    "historical_correlations": dict(timeframe="1h", window_bars=20, day=T0.date(), timestamp=T0 + timedelta(hours=23),
                                    symbol_a="AAA", symbol_b="BBB", value=0.5, common_bars=20),
    "correlation_thresholds": dict(timeframe="1h", timestamp=T0, regime="volatile", threshold=0.6, previous_threshold=0.7),
    "correlation_analysis_results": dict(timeframe="1h", window_bars=60, timestamp=T0, symbol_count=3, pair_count=3,
                                         group_count=1, threshold=0.6, regime="volatile", mean_correlation=0.25,
                                         stddev_correlation=0.1, most_correlated_a="AAA", most_correlated_b="BBB",
                                         most_correlated_value=0.9, least_correlated_a="AAA", least_correlated_b="CCC",
                                         least_correlated_value=-0.2),
    "position_sizing_history": dict(decision_id=uuid.UUID(int=3), portfolio_id="P1", strategy_id="s1", symbol="AAA", ts=T0,
                                    account_value=1e5, risk_per_trade=0.01, stop_distance=2.0, correlation_adjustment=1.0,
                                    regime_adjustment=1.0, quantity=500, planned_risk=1000.0, version=1),
    "position_sizing_config_history": dict(config_id=uuid.UUID(int=4), portfolio_id="P1", strategy_id="s1", symbol="AAA", ts=T0,
                                           method="kelly", risk_per_trade=0.02, correlation_scaling=True, regime_scaling=False),
    "smart_exit_history": dict(exit_id=uuid.UUID(int=5), trade_id=uuid.UUID(int=1), strategy_id="s1", symbol="AAA", ts=T0,
                               reason="trailing_stop", price=10.5, quantity=5, partial=False, version=1),
    "partial_exit_history": dict(exit_id=uuid.UUID(int=6), trade_id=uuid.UUID(int=1), strategy_id="s1", symbol="AAA", ts=T0,
                                 reason="target", price=10.5, quantity=2, version=1),
}
STREAM_KEYS = {t: sorted(k, key=len)[-1] for t, k in UNIQUE_KEYS.items() if t in SAMPLE_ROWS}


# --- databases ---------------------------------------------------------------------------


class Databases:
    """Fresh databases in the test cluster, dropped at teardown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names: list[str] = []

    async def create(self) -> Settings:
        name = "tw_mig_" + uuid.uuid4().hex[:10]
        admin = await asyncpg.connect(**self.settings.pg_options())
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.names.append(name)
        return Settings.from_env(pg_dsn=self.settings.pg_dsn.rsplit("/", 1)[0] + "/" + name)

    async def drop_all(self) -> None:
        admin = await asyncpg.connect(**self.settings.pg_options())
        try:
            for name in self.names:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="module")
async def databases(pg_settings):
    dbs = Databases(pg_settings)
    yield dbs
    await dbs.drop_all()


async def timescaledb_available(settings: Settings) -> bool:
    conn = await asyncpg.connect(**settings.pg_options())
    try:
        available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        preload = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    finally:
        await conn.close()
    return bool(available) and "timescaledb" in preload


@pytest.fixture(scope="module")
async def migrated_dbs(databases, pg_settings):
    """flavor -> Settings of a database migrated as that flavour (TimescaleDB only where possible)."""
    made = {}
    for flavor in ("postgres", "timescaledb"):
        if flavor == "timescaledb" and not await timescaledb_available(pg_settings):
            continue
        settings = await databases.create()
        conn = await asyncpg.connect(**settings.pg_options())
        try:
            applied = await migrate(conn, flavor=flavor)
            assert [m.version for m in applied] == [m.version for m in load_migrations()]
        finally:
            await conn.close()
        made[flavor] = settings
    return made


class FlavoredConnection(asyncpg.Connection):
    """A connection that knows which flavour its database was migrated as."""

    flavor: str = ""


@pytest.fixture(params=["postgres", "timescaledb"])
async def db(request, migrated_dbs):
    """A connection to the migrated database of each flavour."""
    if request.param not in migrated_dbs:
        pytest.skip(NO_TIMESCALEDB)
    conn = await asyncpg.connect(**migrated_dbs[request.param].pg_options(), connection_class=FlavoredConnection)
    conn.flavor = request.param
    try:
        yield conn
    finally:
        await conn.close()


def _short(type_name: str) -> str:
    return type_name.replace("character varying", "varchar").replace("timestamp with time zone", "timestamptz")


async def columns_of(conn, relation: str) -> list[str]:
    rows = await conn.fetch(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
             FROM pg_attribute a
            WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum""",
        relation,
    )
    return [f"{r['attname']} {_short(r['type'])}" + (" not null" if r["attnotnull"] else "") for r in rows]


async def unique_keys_of(conn, table: str) -> set[tuple[str, ...]]:
    rows = await conn.fetch(
        """SELECT array_agg(a.attname ORDER BY k.n) AS cols
             FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = $1::regclass AND i.indisunique
            GROUP BY i.indexrelid""",
        table,
    )
    return {tuple(r["cols"]) for r in rows}


async def catalog_snapshot(conn) -> list:
    """Relations, columns, indexes, constraints and partitions of the public schema."""
    return [
        tuple(r)
        for r in await conn.fetch(
            """SELECT c.relname, c.relkind::text,
                      (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
                         FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                      (SELECT string_agg(pg_get_constraintdef(k.oid), ';' ORDER BY k.conname)
                         FROM pg_constraint k WHERE k.conrelid = c.oid),
                      pg_get_expr(c.relpartbound, c.oid)
                 FROM pg_class c
                WHERE c.relnamespace = 'public'::regnamespace
                ORDER BY c.relname"""
        )
    ]


def _insert(table: str, row: dict, *, update: bool) -> tuple:
    cols = list(row)
    key = STREAM_KEYS[table]
    rest = [c for c in cols if c not in key]
    action = "DO UPDATE SET " + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in rest) if update and rest else "DO NOTHING"
    names = ", ".join(f'"{c}"' for c in cols)
    params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    conflict = ", ".join(f'"{c}"' for c in key)
    sql = f"INSERT INTO {table} ({names}) VALUES ({params}) ON CONFLICT ({conflict}) {action}"
    values = [Decimal(str(v)) if isinstance(v, float) else v for v in row.values()]
    return (sql, *values)


@pytest.fixture
async def pg_db(migrated_dbs):
    conn = await asyncpg.connect(**migrated_dbs["postgres"].pg_options())
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def ts_db(migrated_dbs):
    if "timescaledb" not in migrated_dbs:
        pytest.skip(NO_TIMESCALEDB)
    conn = await asyncpg.connect(**migrated_dbs["timescaledb"].pg_options())
    try:
        yield conn
    finally:
        await conn.close()


# --- both flavours --------------------------------------------------------------------------


async def test_every_migration_is_recorded_once_with_the_flavor(db):
    rows = await db.fetch("SELECT version, name, flavor FROM tickwire_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in load_migrations()]
    assert {r["flavor"] for r in rows} == {db.flavor}
    has_extension = await db.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    assert has_extension == (1 if db.flavor == "timescaledb" else 0)


async def test_tables_and_views_have_exactly_the_contract_columns(db):
    relations = await db.fetch(
        """SELECT relname FROM pg_class
            WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'm', 'v') AND NOT relispartition"""
    )
    # partitions aside (PostgreSQL), chunks and materialization tables elsewhere (TimescaleDB)
    assert {r["relname"] for r in relations} == set(COLUMNS) | {"tickwire_migrations"}
    for relation, expected in COLUMNS.items():
        assert await columns_of(db, relation) == expected, relation


async def test_unique_keys_are_the_natural_keys_and_hold_the_time_column(db):
    for table, expected in UNIQUE_KEYS.items():
        assert await unique_keys_of(db, table) == expected, table
    for table, time_column in TIME_TABLES.items():
        for key in UNIQUE_KEYS[table]:
            assert time_column in key, (table, key)


async def test_seed_indexes_exist_with_their_columns(db):
    rows = await db.fetch(
        """SELECT c.relname AS index, t.relname AS table, pg_get_indexdef(c.oid) AS def
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_class t ON t.oid = i.indrelid
            WHERE t.relnamespace = 'public'::regnamespace AND c.relname = ANY($1::text[])""",
        list(SEED_INDEXES),
    )
    found = {r["index"]: (r["table"], r["def"].split(" USING btree ", 1)[1]) for r in rows}
    assert found == SEED_INDEXES


async def test_seed_defaults_and_checks(db):
    for (table, column), expected in SEED_DEFAULTS.items():
        default = await db.fetchval(
            """SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                 JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                WHERE d.adrelid = $1::regclass AND a.attname = $2""",
            table,
            column,
        )
        assert default == expected, (table, column)
    for table, columns in SEED_CHECKS.items():
        checked = {
            r["attname"]
            for r in await db.fetch(
                """SELECT a.attname FROM pg_constraint k
                     JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)
                    WHERE k.conrelid = $1::regclass AND k.contype = 'c'""",
                table,
            )
        }
        assert set(columns) <= checked, table
    row = dict(SAMPLE_ROWS["trade_outcomes"], trade_id=uuid.uuid4(), direction="UP")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(*_insert("trade_outcomes", row, update=False))
    row = dict(SAMPLE_ROWS["correlation_entries"], symbol_a="BBB", symbol_b="AAA")  # pairs are stored a < b
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(*_insert("correlation_entries", row, update=False))
    row = dict(SAMPLE_ROWS["historical_correlations"], day=T0.date() + timedelta(days=1))  # a day is its close's UTC date
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(*_insert("historical_correlations", row, update=False))
    row = dict(SAMPLE_ROWS["correlation_thresholds"], regime="sideways")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(*_insert("correlation_thresholds", row, update=False))
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO ab_tests (test_id, test_name, control_version, treatment_version, test_type,"
            " control_traffic_percent, treatment_traffic_percent, started_at, success_metric)"
            " VALUES ($1, 't', 'a', 'b', 'model', 101, 0, now(), 'win_rate')",
            uuid.uuid4(),
        )


async def test_stream_tables_take_idempotent_upserts_on_their_natural_key(db):
    for table, row in SAMPLE_ROWS.items():
        for update in (False, True, True):
            await db.execute(*_insert(table, row, update=update))
        key = STREAM_KEYS[table]
        where = " AND ".join(f'"{c}" = ${i}' for i, c in enumerate(key, 1))
        count = await db.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *[row[c] for c in key])
        assert count == 1, table


async def test_migrate_again_changes_nothing(db):
    before = await catalog_snapshot(db)
    assert await migrate(db) == []
    assert await migrate(db, flavor=db.flavor) == []
    assert await catalog_snapshot(db) == before
    other = "postgres" if db.flavor == "timescaledb" else "timescaledb"
    with pytest.raises(RuntimeError, match="migrated as"):
        await migrate(db, flavor=other)


async def test_a_migration_changed_after_it_was_applied_is_refused(db):
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute("UPDATE tickwire_migrations SET checksum = 'edited' WHERE version = 2")
        with pytest.raises(RuntimeError, match="changed after it was applied"):
            await migrate(db)
    finally:
        await transaction.rollback()
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid::text::bigint = $1"
    assert await db.fetchval(held, LOCK_ID) == 0  # released after the failure


async def test_aggregates_roll_1m_bars_into_1h_and_1d_candles_and_trades_into_daily_stats(db):
    start = datetime(2026, 2, 10, 22, 30, tzinfo=timezone.utc)
    bars = []
    for s, symbol in enumerate(("AGG1", "AGG2")):
        for i in range(180):  # 22:30 .. 01:29 next day: 4 hours, 2 days
            ts = start + timedelta(minutes=i)
            o = Decimal(100 + s * 10 + i) / 4
            bars.append((symbol, "1m", ts, o, o + 2, o - 3, o + 1, 10 + i))
    # a 5m row must not count: the aggregates read the 1-minute base rows only
    bars.append(("AGG1", "5m", start, Decimal(1), Decimal(999), Decimal(0), Decimal(1), 10**6))
    await db.executemany(
        """INSERT INTO market_conditions_intraday (symbol, timeframe, "timestamp", open, high, low, close, volume)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        bars,
    )
    day = datetime(2026, 2, 11, tzinfo=timezone.utc)
    trades = [  # outcome, gross, net, commission, duration
        ("WIN", Decimal(120), Decimal(100), Decimal(2), 60),
        ("LOSS", Decimal(-40), Decimal(-50), Decimal(2), 120),
        ("BREAKEVEN", Decimal(1), Decimal(0), Decimal(1), 30),
        ("OPEN", None, None, Decimal(1), None),
    ]
    await db.executemany(
        """INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction, entry_time, entry_price,
                                       quantity, gross_pnl, net_pnl, commission, duration_seconds, outcome_type)
           VALUES ($1, 's', 'v', 'AGG1', 'LONG', $2, 10, 3, $3, $4, $5, $6, $7)""",
        [(uuid.uuid4(), day + timedelta(hours=i), g, n, c, d, o) for i, (o, g, n, c, d) in enumerate(trades)],
    )
    if db.flavor == "postgres":
        report = await maintain(db, retention=False)
        assert report["views_refreshed"] == list(VIEWS)
    else:
        for view in VIEWS:
            await db.execute(
                "CALL refresh_continuous_aggregate($1, $2::timestamptz, $3::timestamptz)",
                view, datetime(2026, 2, 1, tzinfo=timezone.utc), datetime(2026, 3, 1, tzinfo=timezone.utc),
            )

    def expected(width: timedelta) -> list[tuple]:
        out: dict[tuple, list] = {}
        for symbol, tf, ts, o, h, lo, c, v in bars:
            if tf != "1m":
                continue
            epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
            bucket = epoch + ((ts - epoch) // width) * width
            cur = out.get((symbol, bucket))
            if cur is None:
                out[(symbol, bucket)] = [o, h, lo, c, v, 1]
            else:
                cur[1], cur[2], cur[3], cur[4], cur[5] = max(cur[1], h), min(cur[2], lo), c, cur[4] + v, cur[5] + 1
        return [(s, b, *vals) for (s, b), vals in sorted(out.items())]

    for view, width, count in (("candles_1h", timedelta(hours=1), 8), ("candles_1d", timedelta(days=1), 4)):
        rows = await db.fetch(
            f"""SELECT symbol, bucket, open, high, low, close, volume, bar_count FROM {view}
                 WHERE symbol IN ('AGG1', 'AGG2') ORDER BY symbol, bucket"""
        )
        assert [tuple(r) for r in rows] == expected(width), view
        assert len(rows) == count
    stats = await db.fetchrow("SELECT * FROM mv_daily_trading_stats WHERE symbol = 'AGG1'")
    assert stats["bucket"] == day
    assert (stats["total_trades"], stats["open_trades"], stats["winning_trades"], stats["losing_trades"],
            stats["breakeven_trades"], stats["total_quantity"]) == (4, 1, 1, 1, 1, 12)
    assert (stats["gross_pnl"], stats["net_pnl"], stats["total_commission"]) == (81, 50, 6)
    assert (stats["best_net_pnl"], stats["worst_net_pnl"], stats["avg_duration_seconds"]) == (100, -50, 70)
    assert round(stats["avg_net_pnl"], 4) == Decimal("16.6667")


@pytest.mark.parametrize("flavor", ["postgres", "timescaledb"])
async def test_concurrent_migrate_runs_apply_each_migration_once(flavor, databases, pg_settings):
    available = await timescaledb_available(pg_settings)
    if flavor == "timescaledb" and not available:
        pytest.skip(NO_TIMESCALEDB)
    settings = await databases.create()
    conns = [await asyncpg.connect(**settings.pg_options()) for _ in range(3)]
    try:
        # flavour detection (no flavor=) picks TimescaleDB exactly when it is available
        results = await asyncio.gather(*(migrate(c, flavor="postgres" if flavor == "postgres" else None) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]
        rows = await conns[0].fetch("SELECT version, flavor FROM tickwire_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in load_migrations()]
        assert {r["flavor"] for r in rows} == {flavor}
    finally:
        for c in conns:
            await c.close()


# --- plain PostgreSQL -------------------------------------------------------------------------


def _months(first: datetime, count: int) -> list[datetime]:
    out, year, month = [], first.year, first.month
    for _ in range(count):
        out.append(datetime(year, month, 1, tzinfo=timezone.utc))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


async def test_postgres_time_tables_are_partitioned_by_utc_month_with_a_default(pg_db):
    now = datetime.now(timezone.utc)
    for table, time_column in TIME_TABLES.items():
        strategy, key = await pg_db.fetchrow(
            """SELECT p.partstrat::text, a.attname FROM pg_partitioned_table p
                 JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
                WHERE p.partrelid = $1::regclass AND p.partnatts = 1""",
            table,
        )
        assert (strategy, key) == ("r", time_column), table
        parts = {
            r["name"]: r["bound"]
            for r in await pg_db.fetch(
                """SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass""",
                table,
            )
        }
        assert parts.pop(f"{table}_default") == "DEFAULT"
        for month in _months(now - timedelta(days=now.day - 1), 4):  # this month and 3 ahead
            nxt = _months(month, 2)[1]
            assert parts[f"{table}_p{month:%Y%m}"] == (
                f"FOR VALUES FROM ('{month:%Y-%m-%d} 00:00:00+00') TO ('{nxt:%Y-%m-%d} 00:00:00+00')"
            ), table
        assert all(name.startswith(f"{table}_p") for name in parts)
    assert await pg_db.fetchval("SELECT to_regclass('market_conditions_intraday_p202001')")  # 0001: since 2020, renamed by 0010


async def test_postgres_aggregates_are_materialized_views_refreshable_concurrently(pg_db):
    for view in VIEWS:
        assert await pg_db.fetchval("SELECT relkind::text FROM pg_class WHERE oid = $1::regclass", view) == "m"
        assert await unique_keys_of(pg_db, view) == {("symbol", "bucket")}
        await pg_db.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")


# --- TimescaleDB ----------------------------------------------------------------------------

CHUNK_INTERVALS = {
    "market_conditions_intraday": timedelta(days=1),
    "market_conditions_daily": timedelta(days=365),
    "trade_outcomes": timedelta(weeks=1),
    "model_predictions": timedelta(weeks=1),
    "market_regime_history": timedelta(days=30),
    "correlation_matrix": timedelta(days=30),
    "correlation_entries": timedelta(days=1),
    "correlation_groups": timedelta(weeks=1),
    "correlation_group_members": timedelta(weeks=1),
    "correlation_conflicts": timedelta(days=30),
    "historical_correlations": timedelta(days=30),
    "correlation_thresholds": timedelta(days=365),
    "correlation_analysis_results": timedelta(days=30),
    "order_events": timedelta(weeks=1),
    "position_snapshots": timedelta(days=1),
    "portfolio_snapshots": timedelta(days=1),
    "risk_events": timedelta(weeks=1),
    "execution_audit": timedelta(weeks=1),
    "multi_timeframe_analysis": timedelta(days=1),
    "position_sizing_history": timedelta(weeks=1),
    "smart_exit_history": timedelta(weeks=1),
    "partial_exit_history": timedelta(weeks=1),
}
RETENTION = {
    "market_conditions_intraday": "2 years", "trade_outcomes": "5 years", "model_predictions": "3 years",
    "position_snapshots": "1 year", "portfolio_snapshots": "5 years", "multi_timeframe_analysis": "1 year",
    "position_sizing_history": "5 years", "smart_exit_history": "5 years", "partial_exit_history": "5 years",
}
SEGMENT_BY = {
    "market_conditions_intraday": "symbol, timeframe",
    "market_conditions_daily": "symbol, timeframe",
    "trade_outcomes": "symbol",
    "model_predictions": "symbol",
    "market_regime_history": "symbol, timeframe",
    "correlation_matrix": "timeframe, window_bars",
    "correlation_entries": "symbol_a, timeframe, window_bars",
    "correlation_groups": "timeframe, window_bars",
    "correlation_group_members": "symbol, timeframe, window_bars",
    "correlation_conflicts": "symbol_a, timeframe, window_bars",
    "historical_correlations": "symbol_a, timeframe, window_bars",
    "correlation_thresholds": "timeframe",
    "correlation_analysis_results": "timeframe, window_bars",
    "order_events": "portfolio_id",
    "position_snapshots": "portfolio_id, symbol",
    "portfolio_snapshots": "portfolio_id",
    "risk_events": "portfolio_id",
    "execution_audit": "portfolio_id",
    "multi_timeframe_analysis": "symbol",
    "position_sizing_history": "strategy_id",
    "smart_exit_history": "strategy_id",
    "partial_exit_history": "strategy_id",
}


async def test_timescaledb_hypertables_chunks_and_compression(ts_db):
    dims = {
        r["hypertable_name"]: (r["column_name"], r["time_interval"])
        for r in await ts_db.fetch(
            "SELECT hypertable_name, column_name, time_interval FROM timescaledb_information.dimensions"
        )
    }
    ours = {t: d for t, d in dims.items() if not t.startswith("_materialized_hypertable_")}
    assert ours == {t: (HYPERTABLES[t], CHUNK_INTERVALS[t]) for t in HYPERTABLES}
    settings = {
        r["hypertable"]: (r["segmentby"], r["orderby"])
        for r in await ts_db.fetch(
            "SELECT hypertable::text, segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
        )
    }
    for table, time_column in HYPERTABLES.items():
        segmentby, orderby = settings[table]
        assert segmentby.replace(" ", "") == SEGMENT_BY[table].replace(" ", ""), table
        assert orderby.replace('"', "").startswith(f"{time_column} DESC"), table
        # every unique-key column is a segment-by or order-by column (upserts into
        # compressed chunks then decompress only the batches that can conflict)
        compressed_columns = set(segmentby.replace('"', "").split(",")) | {
            c.strip().split(" ")[0] for c in orderby.replace('"', "").split(",")
        }
        for key in UNIQUE_KEYS[table]:
            assert set(key) <= compressed_columns, (table, key)


async def test_timescaledb_policies_and_continuous_aggregates(ts_db):
    jobs = await ts_db.fetch(
        """SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs WHERE job_id >= 1000"""
    )
    by_kind: dict[str, dict[str, dict]] = {}
    for j in jobs:
        by_kind.setdefault(j["proc_name"], {})[j["hypertable_name"]] = json.loads(j["config"])
    assert set(by_kind["policy_compression"]) == set(HYPERTABLES)
    retention = {t: c["drop_after"] for t, c in by_kind["policy_retention"].items()}
    assert set(retention) == set(RETENTION)
    for table, interval in RETENTION.items():
        assert await ts_db.fetchval("SELECT $1::text::interval = $2::text::interval", retention[table], interval), table
    caggs = {
        r["view_name"]: (r["hypertable_name"], r["materialized_only"], r["materialization_hypertable_name"])
        for r in await ts_db.fetch(
            """SELECT view_name, hypertable_name, materialized_only, materialization_hypertable_name
                 FROM timescaledb_information.continuous_aggregates"""
        )
    }
    assert {v: c[:2] for v, c in caggs.items()} == {
        "candles_1h": ("market_conditions_intraday", False),
        "candles_1d": ("market_conditions_intraday", False),
        "mv_daily_trading_stats": ("trade_outcomes", False),
    }
    assert set(by_kind["policy_refresh_continuous_aggregate"]) == set(VIEWS)


async def test_timescaledb_background_jobs_run_without_errors(ts_db):
    """Each policy, run by the background scheduler (not in this session: see DESIGN's
    pitfall about jobs that fail only there), succeeds. One at a time, so that the
    cluster's max_worker_processes is not what is measured."""
    job_ids = [r["job_id"] for r in await ts_db.fetch("SELECT job_id FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY 1")]
    assert len(job_ids) == len(HYPERTABLES) + len(RETENTION) + len(VIEWS)
    loop = asyncio.get_running_loop()
    outcome = {}
    stats_sql = "SELECT total_successes, last_run_status FROM timescaledb_information.job_stats WHERE job_id = $1"
    for job_id in job_ids:
        before = await ts_db.fetchrow(stats_sql, job_id)
        successes = before["total_successes"] if before else 0
        await ts_db.execute("SELECT alter_job($1, next_start => now())", job_id)
        deadline = loop.time() + 60
        while True:
            stats = await ts_db.fetchrow(stats_sql, job_id)
            if (stats and stats["total_successes"] > successes) or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        outcome[job_id] = stats["last_run_status"] if stats else None
    errors = await ts_db.fetch(
        "SELECT job_id, proc_name, err_message FROM timescaledb_information.job_errors WHERE job_id = ANY($1::int[])", job_ids
    )
    # A job the scheduler could not launch (no free worker slot: max_worker_processes is
    # the cluster's business) is retried; any error of a job that ran is a failure here.
    assert [dict(e) for e in errors if not e["err_message"].endswith("failed to start")] == []
    assert outcome == {j: "Success" for j in job_ids}


async def test_timescaledb_upserts_into_compressed_chunks_stay_idempotent(ts_db):
    ts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=20)
    row = dict(symbol="CMP", timeframe="1m", timestamp=ts, open=1, high=2, low=0.5, close=1.5, volume=10)
    await ts_db.execute(*_insert("market_conditions_intraday", row, update=False))
    chunks = await ts_db.fetch(
        "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('market_conditions_intraday', older_than => now() - INTERVAL '7 days') c"
    )
    assert chunks
    assert await ts_db.fetchval(
        """SELECT is_compressed FROM timescaledb_information.chunks
            WHERE hypertable_name = 'market_conditions_intraday' AND range_start <= $1 AND range_end > $1""",
        ts,
    )
    await ts_db.execute(*_insert("market_conditions_intraday", row, update=False))
    await ts_db.execute(*_insert("market_conditions_intraday", dict(row, close=1.75), update=True))
    rows = await ts_db.fetch("SELECT close FROM market_conditions WHERE symbol = 'CMP'")
    assert [r["close"] for r in rows] == [Decimal("1.75")]


@pytest.mark.parametrize("flavor", ["postgres", "timescaledb"])
async def test_upgrade_from_0006_widens_trade_direction_even_over_compressed_chunks(flavor, databases, pg_settings):
    if flavor == "timescaledb" and not await timescaledb_available(pg_settings):
        pytest.skip(NO_TIMESCALEDB)
    settings = await databases.create()
    conn = await asyncpg.connect(**settings.pg_options())
    try:
        assert [m.version for m in await migrate(conn, flavor=flavor, until=6)] == [1, 2, 3, 4, 5, 6]
        old = datetime.now(timezone.utc) - timedelta(days=60)
        row = dict(SAMPLE_ROWS["trade_outcomes"], trade_id=uuid.uuid4(), entry_time=old, direction="LONG")
        await conn.execute(*_insert("trade_outcomes", row, update=False))
        short = dict(row, trade_id=uuid.uuid4(), direction="SHORT")
        with pytest.raises(asyncpg.StringDataRightTruncationError):  # the seed's VARCHAR(4)
            await conn.execute(*_insert("trade_outcomes", short, update=False))
        if flavor == "timescaledb":
            assert await conn.fetchval(
                "SELECT count(compress_chunk(c)) FROM show_chunks('trade_outcomes', older_than => now() - INTERVAL '30 days') c"
            ) == 1
        applied = await migrate(conn)
        assert [m.version for m in applied] == [m.version for m in load_migrations() if m.version > 6]
        await conn.execute(*_insert("trade_outcomes", short, update=False))
        rows = await conn.fetch("SELECT direction FROM trade_outcomes ORDER BY direction")
        assert [r["direction"] for r in rows] == ["LONG", "SHORT"]
    finally:
        await conn.close()


@pytest.mark.parametrize("flavor", ["postgres", "timescaledb"])
async def test_upgrade_to_0010_moves_day_bars_to_their_table_even_from_compressed_chunks(flavor, databases, pg_settings):
    if flavor == "timescaledb" and not await timescaledb_available(pg_settings):
        pytest.skip(NO_TIMESCALEDB)
    settings = await databases.create()
    conn = await asyncpg.connect(**settings.pg_options())
    try:
        await migrate(conn, flavor=flavor, until=9)
        old = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=60)
        bars = [("OLD", timeframe, old + timedelta(days=i)) for timeframe in ("1m", "1h", "1d", "5d") for i in range(3)]
        await conn.executemany(
            """INSERT INTO market_conditions (symbol, timeframe, "timestamp", open, high, low, close, volume)
               VALUES ($1, $2, $3, 1, 2, 0.5, 1.5, 10)""",
            bars,
        )
        before = {(r["timeframe"], r["timestamp"]): r["id"] for r in await conn.fetch("SELECT * FROM market_conditions")}
        if flavor == "timescaledb":
            assert await conn.fetchval(
                "SELECT count(compress_chunk(c)) FROM show_chunks('market_conditions', older_than => now() - INTERVAL '30 days') c"
            ) == 3
        assert [m.version for m in await migrate(conn)][0] == 10
        intraday = await conn.fetch("SELECT DISTINCT timeframe FROM market_conditions_intraday ORDER BY 1")
        daily = await conn.fetch("SELECT DISTINCT timeframe FROM market_conditions_daily ORDER BY 1")
        assert ([r[0] for r in intraday], [r[0] for r in daily]) == (["1h", "1m"], ["1d", "5d"])
        after = {(r["timeframe"], r["timestamp"]): r["id"] for r in await conn.fetch("SELECT * FROM market_conditions")}
        assert after == before  # every row, with its id, readable where it was
        fresh = await conn.fetchval(
            """INSERT INTO market_conditions_daily (symbol, timeframe, "timestamp", open, high, low, close, volume)
               VALUES ('NEW', '1d', now(), 1, 1, 1, 1, 1) RETURNING id"""
        )
        assert fresh > max(before.values())  # one sequence for both tables
    finally:
        await conn.close()


async def test_market_conditions_reads_a_day_timeframe_from_the_daily_table_only(db):
    """A query on the view for daily bars must not open a year of one-day intraday chunks."""
    for table in ("market_conditions_intraday", "market_conditions_daily"):
        row = dict(SAMPLE_ROWS[table], symbol="PLN", timestamp=datetime(2020, 6, 1, tzinfo=timezone.utc))
        await db.execute(*_insert(table, row, update=False))
    chunk_prefix = {}  # TimescaleDB names chunks after their hypertable's id
    if db.flavor == "timescaledb":
        rows = await db.fetch("SELECT id, table_name FROM _timescaledb_catalog.hypertable")
        chunk_prefix = {r["table_name"]: f"_hyper_{r['id']}_" for r in rows}

    async def reads(timeframe: str) -> set[str]:
        # the literal in the text: a parameter would get a generic plan, which cannot exclude
        plan = "\n".join(r[0] for r in await db.fetch(
            f"""EXPLAIN (COSTS OFF) SELECT * FROM market_conditions WHERE symbol = 'PLN' AND timeframe = '{timeframe}'
                AND "timestamp" >= '2020-01-01' AND "timestamp" < '2021-01-01'"""
        ))
        return {t for t in ("market_conditions_intraday", "market_conditions_daily")
                if t in plan or (t in chunk_prefix and chunk_prefix[t] in plan)}

    assert await reads("1d") == {"market_conditions_daily"}
    assert "market_conditions_intraday" in await reads("1m")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(*_insert("market_conditions_intraday", SAMPLE_ROWS["market_conditions_daily"], update=False))
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(*_insert("market_conditions_daily", SAMPLE_ROWS["market_conditions_intraday"], update=False))
