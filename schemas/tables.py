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

from schemas.market import Condition, RegimeChange
from schemas.signals import ModelPerformanceRow, ModelPredictionRow, StrategyPerformanceRow, TradeOutcomeRow
from schemas.topics import CONDITIONS, MODEL_PERFORMANCE, OUTCOMES, REGIMES, STRATEGY_PERFORMANCE, TRADE_OUTCOMES

_STAGING_TYPES = {float: "float8", int: "int8", str: "text", bool: "bool", datetime: "timestamptz", date: "date", dict: "jsonb", uuid.UUID: "uuid"}


class Table(NamedTuple):
    name: str
    record: type[msgspec.Struct]
    key: tuple[str, ...]
    on_conflict: Literal["nothing", "update"]
    time_column: str | None = None  # the event time, for the latency metric
    update_where: str | None = None  # DO UPDATE only where this holds (a constant SQL condition)

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


MARKET_CONDITIONS = Table("market_conditions", Condition, ("symbol", "timeframe", "timestamp"), "nothing", "timestamp")

MARKET_REGIME_HISTORY = Table(
    "market_regime_history", RegimeChange, ("symbol", "timeframe", "timestamp"), "nothing", "timestamp"
)

MODEL_PREDICTIONS = Table(
    "model_predictions", ModelPredictionRow, ("prediction_id", "predicted_at"), "update", "predicted_at",
    # A final row (validated or expired) is never overwritten by a replayed pending one.
    update_where="model_predictions.validated_at IS NULL AND model_predictions.expiry_reason IS NULL",
)
TRADE_OUTCOMES_TABLE = Table("trade_outcomes", TradeOutcomeRow, ("trade_id", "entry_time"), "update", "entry_time")
MODEL_PERFORMANCE_TABLE = Table(
    "model_performance", ModelPerformanceRow, ("model_version", "model_type", "evaluation_date"), "update"
)
STRATEGY_PERFORMANCE_TABLE = Table(
    "strategy_performance", StrategyPerformanceRow, ("strategy_id", "model_version", "period_type", "period_start"), "update"
)

ALL = (
    MARKET_CONDITIONS, MARKET_REGIME_HISTORY, MODEL_PREDICTIONS, TRADE_OUTCOMES_TABLE,
    MODEL_PERFORMANCE_TABLE, STRATEGY_PERFORMANCE_TABLE,
)

# Which topic fills which table: one sink pipeline (and consumer group) per pair.
SINKS = (
    (CONDITIONS, MARKET_CONDITIONS),
    (REGIMES, MARKET_REGIME_HISTORY),
    (OUTCOMES, MODEL_PREDICTIONS),
    (TRADE_OUTCOMES, TRADE_OUTCOMES_TABLE),
    (MODEL_PERFORMANCE, MODEL_PERFORMANCE_TABLE),
    (STRATEGY_PERFORMANCE, STRATEGY_PERFORMANCE_TABLE),
)
