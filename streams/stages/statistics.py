"""Prediction outcomes into model performance, trade outcomes into strategy performance.

Both cores are idempotent by construction: a re-sent outcome replaces itself in its day's
or period's samples, so a redelivery changes nothing (no offsets kept, see
``worker.stage.redelivered``).
"""

from __future__ import annotations

import faust
import msgspec

from tickwire.schemas.signals import PredictionOutcome, RegimePerformanceRow, StrategyScoreRow, TradeOutcomeRow
from tickwire.schemas.topics import MODEL_PERFORMANCE, OUTCOMES, REGIME_PERFORMANCE, STRATEGY_PERFORMANCE, STRATEGY_SCORES, TRADE_OUTCOMES
from tickwire.streams.performance import ModelPerformance, ModelPerformanceState, StrategyPerformance, StrategyPerformanceState
from tickwire.streams.worker.outbox import Message
from tickwire.streams.worker.stage import Stage, StageContext, StateTable, decode
from tickwire.streams.worker.state import KeyedStates, StateCodec


class _Statistics(Stage):
    """An input record into its key's statistics; the rows the core recomputed are published."""

    _decoder: msgspec.json.Decoder
    topic: str
    topics: dict[type, str] = {}  # rows of these types go to their own topic, not ``topic``

    def rows(self, state, record) -> list:
        raise NotImplementedError

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        record = decode(self._decoder, event.value)
        key = event.message.key
        rows = self.rows(self.states.get(key), record)
        if rows:
            self.states.changed(key, event.message.partition)
        for row in rows:
            out.append((self.topics.get(type(row), self.topic), key, self.context.encode(row), []))


class ModelStatistics(_Statistics):
    """Per model version: each day's accuracy and calibration, recomputed on every outcome."""

    name = "model_statistics"
    inputs = (OUTCOMES,)
    table = StateTable("model-performance", OUTCOMES, StateCodec(ModelPerformanceState, ModelPerformanceState))
    _decoder = msgspec.json.Decoder(PredictionOutcome)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        self.core = ModelPerformance(retention_days=context.settings.model_performance_days)
        self.topic = context.names[MODEL_PERFORMANCE]

    def rows(self, state: ModelPerformanceState, outcome: PredictionOutcome) -> list:
        row = self.core.add(state, outcome)
        return [] if row is None else [row]


class StrategyStatistics(_Statistics):
    """Per strategy: DAY, WEEK and MONTH performance, recomputed on every closed trade; the
    scores of the periods it closes; the strategy's figures by regime."""

    name = "strategy_statistics"
    inputs = (TRADE_OUTCOMES,)
    table = StateTable("strategy-performance", TRADE_OUTCOMES, StateCodec(StrategyPerformanceState, StrategyPerformanceState))
    _decoder = msgspec.json.Decoder(TradeOutcomeRow)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        settings = context.settings
        self.core = StrategyPerformance(
            capital=settings.performance_capital, retention_days=settings.strategy_performance_days, timeframe=settings.base_timeframe
        )
        self.topic = context.names[STRATEGY_PERFORMANCE]
        self.topics = {StrategyScoreRow: context.names[STRATEGY_SCORES], RegimePerformanceRow: context.names[REGIME_PERFORMANCE]}

    def rows(self, state: StrategyPerformanceState, trade: TradeOutcomeRow) -> list:
        return self.core.add(state, trade)
