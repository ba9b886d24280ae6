"""Prediction outcomes into model performance, trade outcomes into strategy performance.

Both cores are idempotent by construction: a re-sent outcome replaces itself in its day's
or period's samples, so a redelivery changes nothing (no offsets kept, see
``worker.stage.redelivered``).
"""

from __future__ import annotations

import faust
import msgspec

from tickwire.schemas.signals import PredictionOutcome, TradeOutcomeRow
from tickwire.schemas.topics import MODEL_PERFORMANCE, OUTCOMES, STRATEGY_PERFORMANCE, TRADE_OUTCOMES
from tickwire.streams.performance import ModelPerformance, ModelPerformanceState, StrategyPerformance, StrategyPerformanceState
from tickwire.streams.worker.outbox import Message
from tickwire.streams.worker.stage import Stage, StageContext, StateTable, decode
from tickwire.streams.worker.state import KeyedStates, StateCodec


class ModelStatistics(Stage):
    """Per model version: each day's accuracy and calibration, recomputed on every outcome."""

    name = "model_statistics"
    inputs = (OUTCOMES,)
    table = StateTable("model-performance", OUTCOMES, StateCodec(ModelPerformanceState, ModelPerformanceState))
    _outcome = msgspec.json.Decoder(PredictionOutcome)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        self.core = ModelPerformance(retention_days=context.settings.model_performance_days)
        self.topic = context.names[MODEL_PERFORMANCE]

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        outcome = decode(self._outcome, event.value)
        key = event.message.key
        row = self.core.add(self.states.get(key), outcome)
        if row is not None:
            self.states.changed(key, event.message.partition)
            out.append((self.topic, key, self.context.encode(row), []))


class StrategyStatistics(Stage):
    """Per strategy: DAY, WEEK and MONTH performance, recomputed on every closed trade."""

    name = "strategy_statistics"
    inputs = (TRADE_OUTCOMES,)
    table = StateTable("strategy-performance", TRADE_OUTCOMES, StateCodec(StrategyPerformanceState, StrategyPerformanceState))
    _trade = msgspec.json.Decoder(TradeOutcomeRow)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        settings = context.settings
        self.core = StrategyPerformance(capital=settings.performance_capital, retention_days=settings.strategy_performance_days)
        self.topic = context.names[STRATEGY_PERFORMANCE]

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        trade = decode(self._trade, event.value)
        key = event.message.key
        rows = self.core.add(self.states.get(key), trade)
        if rows:
            self.states.changed(key, event.message.partition)
        for row in rows:
            out.append((self.topic, key, self.context.encode(row), []))
