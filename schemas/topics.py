"""The topic registry: every topic Tickwire reads or writes, with its key and retention."""

from __future__ import annotations

from typing import Literal, NamedTuple

DAY_MS = 86_400_000


class Topic(NamedTuple):
    name: str
    key: str  # the message field the record key holds
    partitions: int
    cleanup_policy: Literal["delete", "compact"]
    retention_ms: int


BARS = Topic("md.bars.v1", "symbol", 6, "delete", 7 * DAY_MS)
TRADES = Topic("md.trades.v1", "symbol", 6, "delete", 3 * DAY_MS)
PREDICTIONS = Topic("signals.predictions.v1", "symbol", 6, "delete", 30 * DAY_MS)
FILLS = Topic("exec.fills.v1", "symbol", 6, "delete", 30 * DAY_MS)
ORDERS = Topic("exec.orders.v1", "symbol", 6, "delete", 30 * DAY_MS)
# The trading system's sizing decisions and configurations (one tagged union) and exit decisions.
SIZING = Topic("exec.sizing.v1", "symbol", 6, "delete", 30 * DAY_MS)
EXITS = Topic("exec.exits.v1", "symbol", 6, "delete", 30 * DAY_MS)
CONDITIONS = Topic("md.conditions.v1", "symbol", 6, "delete", 7 * DAY_MS)
REGIMES = Topic("md.regimes.v1", "symbol", 6, "delete", 30 * DAY_MS)
MTF = Topic("md.mtf.v1", "symbol", 6, "delete", 7 * DAY_MS)
CORRELATIONS = Topic("md.correlations.v1", "timeframe", 1, "delete", 7 * DAY_MS)
CORRELATION_CONTEXT = Topic("md.correlation_context.v1", "symbol", 6, "delete", 7 * DAY_MS)
# Internal: conditions re-keyed by timeframe, so one partition sees every symbol of a timeframe;
# a message is a msgpack array of Condition JSON documents (a worker batch's, packed).
CONDITIONS_BY_TIMEFRAME = Topic("tickwire.conditions_by_timeframe.v2", "timeframe", 6, "delete", DAY_MS)
# Keyed by what their performance statistics group by, so one partition holds a model's
# (a strategy's) every outcome, in order.
OUTCOMES = Topic("signals.outcomes.v1", "model_version", 6, "delete", 30 * DAY_MS)
TRADE_OUTCOMES = Topic("exec.trades.v1", "strategy_id", 6, "delete", 30 * DAY_MS)
MODEL_PERFORMANCE = Topic("signals.model_performance.v1", "model_version", 6, "delete", 30 * DAY_MS)
STRATEGY_PERFORMANCE = Topic("exec.strategy_performance.v1", "strategy_id", 6, "delete", 30 * DAY_MS)
STRATEGY_SCORES = Topic("exec.strategy_scores.v1", "strategy_id", 6, "delete", 30 * DAY_MS)
REGIME_PERFORMANCE = Topic("exec.regime_performance.v1", "strategy_id", 6, "delete", 30 * DAY_MS)
# Keyed by portfolio: one partition holds a portfolio's every position update, in order.
ORDER_UPDATES = Topic("exec.order_updates.v1", "portfolio_id", 6, "delete", 30 * DAY_MS)
POSITIONS = Topic("exec.positions.v1", "portfolio_id", 6, "delete", 7 * DAY_MS)
PORTFOLIOS = Topic("exec.portfolios.v1", "portfolio_id", 6, "delete", 7 * DAY_MS)
RISK_EVENTS = Topic("exec.risk_events.v1", "portfolio_id", 6, "delete", 30 * DAY_MS)
AUDIT = Topic("exec.audit.v1", "portfolio_id", 6, "delete", 30 * DAY_MS)
PORTFOLIO_PERFORMANCE = Topic("exec.portfolio_performance.v1", "portfolio_id", 6, "delete", 30 * DAY_MS)
# The decisions joined with their trades: four row types, tagged (``record``), one per table.
DECISION_HISTORY = Topic("exec.decision_history.v1", "strategy_id", 6, "delete", 30 * DAY_MS)
# Internal: the benchmark's closes and the correlated pairs, one copy per partition of the
# portfolios' stage (partitioned like exec.positions.v1); msgpack.
PORTFOLIO_CONTEXT = Topic("tickwire.portfolio_context.v1", "partition", 6, "delete", DAY_MS)
# Internal: the worker's expiry clock, delivered to each symbol's own partition.
EXPIRY_TICKS = Topic("tickwire.expiry_ticks.v1", "symbol", 6, "delete", DAY_MS)
DLQ = Topic("tickwire.dlq.v1", "source key", 3, "delete", 30 * DAY_MS)

ALL = (
    BARS, TRADES, PREDICTIONS, FILLS, ORDERS, SIZING, EXITS, CONDITIONS, REGIMES, MTF, CORRELATIONS, CORRELATION_CONTEXT,
    OUTCOMES, TRADE_OUTCOMES, MODEL_PERFORMANCE, STRATEGY_PERFORMANCE, STRATEGY_SCORES, REGIME_PERFORMANCE, ORDER_UPDATES,
    POSITIONS, PORTFOLIOS, RISK_EVENTS, AUDIT, PORTFOLIO_PERFORMANCE, DECISION_HISTORY, CONDITIONS_BY_TIMEFRAME, EXPIRY_TICKS,
    PORTFOLIO_CONTEXT, DLQ,
)
