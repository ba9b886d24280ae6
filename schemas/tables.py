"""Table contracts: which Struct fills which table, its natural key and its conflict rule.

The columns a sink writes are the Struct's fields, in order; their staging types are
derived from the field types so the message and the row cannot drift apart.
"""

from __future__ import annotations

import types
import uuid
from datetime import date, datetime
from typing import Literal, NamedTuple, Union, get_args, get_origin

import msgspec

from tickwire.schemas.correlations import (
    CorrelationAnalysis, CorrelationConflict, CorrelationEntry, CorrelationGroup, CorrelationGroupMember, CorrelationHistory,
    CorrelationMatrix, CorrelationRecord, CorrelationThreshold,
)
from tickwire.schemas.decisions import DecisionRecord, PartialExitRow, PositionSizingRow, SizingConfigRow, SmartExitRow
from tickwire.schemas.execution import (
    AuditRow, OrderEventRow, OrderRow, PortfolioPerformanceRow, PortfolioRow, PositionRow, RiskEvent,
)
from tickwire.schemas.market import Condition, CorrelationContext, MultiTimeframeAnalysis, RegimeChange
from tickwire.schemas.signals import (
    ModelPerformanceRow, ModelPredictionRow, RegimePerformanceRow, StrategyPerformanceRow, StrategyScoreRow, TradeOutcomeRow,
)
from tickwire.schemas.topics import (
    AUDIT, CONDITIONS, CORRELATIONS, CORRELATION_CONTEXT, DECISION_HISTORY, MODEL_PERFORMANCE, MTF, ORDER_UPDATES,
    OUTCOMES, PORTFOLIOS, PORTFOLIO_PERFORMANCE, POSITIONS, REGIMES, REGIME_PERFORMANCE, RISK_EVENTS,
    STRATEGY_PERFORMANCE, STRATEGY_SCORES, TRADE_OUTCOMES, Topic, Topic,
)

_STAGING_TYPES = {float: "float8", int: "int8", str: "text", bool: "bool", datetime: "timestamptz", date: "date", dict: "jsonb", uuid.UUID: "uuid"}


class Table(NamedTuple):
    name: str
    record: type[msgspec.Struct]
    key: tuple[str, ...]
    on_conflict: Literal["nothing", "update"]
    time_column: str | None = None  # the event time, for the latency metric
    update_where: str | None = None  # DO UPDATE only where this holds (a constant SQL condition)
    update_columns: tuple[str, ...] | None = None  # DO UPDATE sets these (default: every non-key column)
    # The topic's message type when it carries a tagged union: records of other types are skipped.
    message: object = None
    # A column a stored row keeps: a row of the same key with another value in it is refused
    # (DLQ ``conflicting_id``), never merged over it.
    owner: str | None = None
    # Where the rows are stored when ``name`` is a view over several tables: (table, the SQL
    # condition on a row that sends it there), the conditions disjoint and covering every row.
    stored_in: tuple[tuple[str, str], ...] = ()

    @property
    def targets(self) -> tuple[tuple[str, str | None], ...]:
        return self.stored_in or ((self.name, None),)

    @property
    def updated(self) -> tuple[str, ...]:
        return self.update_columns or tuple(c for c in self.columns if c not in self.key)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in msgspec.structs.fields(self.record))

    @property
    def staging_types(self) -> tuple[str, ...]:
        return tuple(_staging_type(f.type) for f in msgspec.structs.fields(self.record))


def _staging_type(annotation: object) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    base = get_origin(annotation) or annotation
    return _STAGING_TYPES[base]


# Two writers fill market_conditions, in either order: the worker's conditions (every column
# but the correlations) and the correlation stage's context (the correlations; its insert
# carries the bar so a row it creates first is complete once the condition lands).
# market_conditions is a view (migration 0010): bars of day timeframes are stored apart,
# in chunks of a year and without retention.
_CONTEXT = ("spy_correlation", "sector_correlation")
_BY_TIMEFRAME = (("market_conditions_intraday", "timeframe NOT LIKE '%d'"), ("market_conditions_daily", "timeframe LIKE '%d'"))
MARKET_CONDITIONS = Table(
    "market_conditions", Condition, ("symbol", "timeframe", "timestamp"), "update", "timestamp",
    update_columns=tuple(f.name for f in msgspec.structs.fields(Condition) if f.name not in ("symbol", "timeframe", "timestamp", *_CONTEXT)),
    stored_in=_BY_TIMEFRAME,
)
MARKET_CONTEXT = Table(
    "market_conditions", CorrelationContext, ("symbol", "timeframe", "timestamp"), "update", "timestamp", update_columns=_CONTEXT,
    stored_in=_BY_TIMEFRAME,
)

MARKET_REGIME_HISTORY = Table(
    "market_regime_history", RegimeChange, ("symbol", "timeframe", "timestamp"), "nothing", "timestamp"
)
MULTI_TIMEFRAME_ANALYSIS = Table(
    "multi_timeframe_analysis", MultiTimeframeAnalysis, ("symbol", "timestamp"), "nothing", "timestamp"
)

MODEL_PREDICTIONS = Table(
    "model_predictions", ModelPredictionRow, ("prediction_id", "predicted_at"), "update", "predicted_at",
    # A final row (validated or expired) is never overwritten by a replayed pending one.
    update_where="model_predictions.validated_at IS NULL AND model_predictions.expiry_reason IS NULL",
    # The worker keeps predictions and trades per symbol: the same id from another symbol
    # is another producer's mistake, not an update of the stored row.
    owner="symbol",
)
TRADE_OUTCOMES_TABLE = Table("trade_outcomes", TradeOutcomeRow, ("trade_id", "entry_time"), "update", "entry_time", owner="symbol")
MODEL_PERFORMANCE_TABLE = Table(
    "model_performance", ModelPerformanceRow, ("model_version", "model_type", "evaluation_date"), "update"
)
STRATEGY_PERFORMANCE_TABLE = Table(
    "strategy_performance", StrategyPerformanceRow, ("strategy_id", "model_version", "period_type", "period_start"), "update"
)
STRATEGY_SCORES_TABLE = Table(
    "strategy_scores", StrategyScoreRow, ("strategy_id", "model_version", "period_type", "period_start"), "update", "scored_at"
)
REGIME_PERFORMANCE_STATS = Table(
    "regime_performance_stats", RegimePerformanceRow, ("strategy_id", "regime", "timeframe"), "update", "last_trade_at"
)

_SNAPSHOT = ("timeframe", "window_bars", "timestamp")
CORRELATION_TABLES = tuple(
    Table(name, record, key, "nothing", "timestamp", message=CorrelationRecord)
    for name, record, key in (
        ("correlation_matrix", CorrelationMatrix, _SNAPSHOT),
        ("correlation_entries", CorrelationEntry, (*_SNAPSHOT, "symbol_a", "symbol_b")),
        ("correlation_groups", CorrelationGroup, (*_SNAPSHOT, "group_no")),
        ("correlation_group_members", CorrelationGroupMember, (*_SNAPSHOT, "symbol")),
        ("correlation_conflicts", CorrelationConflict, (*_SNAPSHOT, "symbol_a", "symbol_b")),
        # migration 0013: the daily history, the thresholds in force, each snapshot's summary
        ("historical_correlations", CorrelationHistory, (*_SNAPSHOT, "symbol_a", "symbol_b")),
        ("correlation_thresholds", CorrelationThreshold, ("timeframe", "timestamp")),
        ("correlation_analysis_results", CorrelationAnalysis, _SNAPSHOT),
    )
)

# The execution stream (migration 0011): each current-state table takes a row only over an
# older version of it (a redelivered row never goes back in time); each history appends.
ORDERS_TABLE = Table(
    "orders", OrderRow, ("order_id",), "update", "updated_at", update_where="orders.version < EXCLUDED.version", owner="symbol"
)
ORDER_EVENTS = Table("order_events", OrderEventRow, ("order_id", "version", "ts"), "nothing", "ts")
POSITIONS_TABLE = Table(
    "positions", PositionRow, ("portfolio_id", "symbol"), "update", "ts", update_where="positions.version < EXCLUDED.version"
)
POSITION_SNAPSHOTS = Table("position_snapshots", PositionRow, ("portfolio_id", "symbol", "version", "ts"), "nothing", "ts")
PORTFOLIOS_TABLE = Table(
    "portfolios", PortfolioRow, ("portfolio_id",), "update", "ts", update_where="portfolios.version < EXCLUDED.version"
)
PORTFOLIO_SNAPSHOTS = Table("portfolio_snapshots", PortfolioRow, ("portfolio_id", "version", "ts"), "nothing", "ts")
PORTFOLIO_PERFORMANCE_TABLE = Table(
    "portfolio_performance", PortfolioPerformanceRow, ("portfolio_id", "period_type", "period_start"), "update"
)
RISK_EVENTS_TABLE = Table("risk_events", RiskEvent, ("portfolio_id", "rule", "subject", "ts", "state"), "nothing", "ts")
EXECUTION_AUDIT = Table(
    "execution_audit", AuditRow, ("source_topic", "source_partition", "source_offset", "kind", "subject", "ts"), "nothing", "ts"
)
EXECUTION_TABLES = (
    ORDERS_TABLE, ORDER_EVENTS, POSITIONS_TABLE, POSITION_SNAPSHOTS, PORTFOLIOS_TABLE, PORTFOLIO_SNAPSHOTS,
    PORTFOLIO_PERFORMANCE_TABLE, RISK_EVENTS_TABLE, EXECUTION_AUDIT,
)

# Sizing and exit decisions (migration 0014), one tagged topic: a decision's row is replaced
# only by a later version of it (its trade closed, or a closed trade's figures changed).
DECISION_TABLES = (
    Table(
        "position_sizing_history", PositionSizingRow, ("decision_id", "ts"), "update", "ts",
        update_where="position_sizing_history.version < EXCLUDED.version", message=DecisionRecord, owner="symbol",
    ),
    Table("position_sizing_config_history", SizingConfigRow, ("config_id", "symbol", "ts"), "nothing", "ts", message=DecisionRecord),
    Table(
        "smart_exit_history", SmartExitRow, ("exit_id", "ts"), "update", "ts",
        update_where="smart_exit_history.version < EXCLUDED.version", message=DecisionRecord, owner="symbol",
    ),
    Table(
        "partial_exit_history", PartialExitRow, ("exit_id", "ts"), "update", "ts",
        update_where="partial_exit_history.version < EXCLUDED.version", message=DecisionRecord, owner="symbol",
    ),
)

ALL = (
    MARKET_CONDITIONS, MARKET_CONTEXT, MARKET_REGIME_HISTORY, MULTI_TIMEFRAME_ANALYSIS, MODEL_PREDICTIONS, TRADE_OUTCOMES_TABLE,
    MODEL_PERFORMANCE_TABLE, STRATEGY_PERFORMANCE_TABLE, STRATEGY_SCORES_TABLE, REGIME_PERFORMANCE_STATS, *CORRELATION_TABLES,
    *EXECUTION_TABLES, *DECISION_TABLES,
)

# Which topic fills which table: one sink pipeline (and consumer group, ``sink_group_name``) per pair.
SINKS = (
    (CONDITIONS, MARKET_CONDITIONS),
    (CORRELATION_CONTEXT, MARKET_CONTEXT),
    *((CORRELATIONS, table) for table in CORRELATION_TABLES),
    (REGIMES, MARKET_REGIME_HISTORY),
    (MTF, MULTI_TIMEFRAME_ANALYSIS),
    (OUTCOMES, MODEL_PREDICTIONS),
    (TRADE_OUTCOMES, TRADE_OUTCOMES_TABLE),
    (MODEL_PERFORMANCE, MODEL_PERFORMANCE_TABLE),
    (STRATEGY_PERFORMANCE, STRATEGY_PERFORMANCE_TABLE),
    (STRATEGY_SCORES, STRATEGY_SCORES_TABLE),
    (REGIME_PERFORMANCE, REGIME_PERFORMANCE_STATS),
    (ORDER_UPDATES, ORDERS_TABLE),
    (ORDER_UPDATES, ORDER_EVENTS),
    (POSITIONS, POSITIONS_TABLE),
    (POSITIONS, POSITION_SNAPSHOTS),
    (PORTFOLIOS, PORTFOLIOS_TABLE),
    (PORTFOLIOS, PORTFOLIO_SNAPSHOTS),
    (PORTFOLIO_PERFORMANCE, PORTFOLIO_PERFORMANCE_TABLE),
    (RISK_EVENTS, RISK_EVENTS_TABLE),
    (AUDIT, EXECUTION_AUDIT),
    *((DECISION_HISTORY, table) for table in DECISION_TABLES),
)


def sink_group_name(topic: Topic, table: Table) -> str:
    """A pair's consumer group, under the sinks' group prefix: the table's name for the first
    topic that fills it, then the table's and the topic's. Two pipelines in one group would
    rebalance each other on every join and leave, each subscription changing the group's."""
    first = next(t for t, tb in SINKS if tb.name == table.name)
    return table.name if topic == first else f"{table.name}.{topic.name}"
