"""Prediction outcomes into model performance, trade outcomes into strategy performance.

A batch takes every record into its key's statistics first and makes the rows they changed
at its end (``finish``): a row is made once per batch, not once per record, whatever the
rate. Both cores are idempotent by construction: a re-sent outcome or trade is counted
once, by its id, so a redelivery changes nothing (no
offsets kept, see ``worker.stage.redelivered``). The ids a key counted (a model's
predictions, a strategy's trades, once their regimes are counted too) sit under keys of
their own beside its record (``worker.archive``), not in it: a model validating a
prediction a minute for each of 500 symbols, or a strategy closing thousands of trades
a day, would write them all with every batch.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import faust
import msgspec

from tickwire.schemas.signals import PredictionOutcome, RegimePerformanceRow, StrategyScoreRow, TradeOutcomeRow
from tickwire.schemas.topics import MODEL_PERFORMANCE, OUTCOMES, REGIME_PERFORMANCE, STRATEGY_PERFORMANCE, STRATEGY_SCORES, TRADE_OUTCOMES
from tickwire.schemas.market import from_epoch_us
from tickwire.streams.performance import (
    DayTotals, ModelPerformance, ModelPerformanceState, PredictionSample, StrategyPerformance, StrategyPerformanceState, Totals,
    TradeSample,
)
from tickwire.streams.worker.archive import Archive
from tickwire.streams.worker.outbox import Message
from tickwire.streams.worker.stage import Stage, StageContext, StateTable, decode
from tickwire.streams.worker.state import KeyedStates, StateCodec

log = logging.getLogger("tickwire.worker")


class _Statistics(Stage):
    """An input record into its key's statistics (``core.apply``); the rows the batch
    changed made once at its end (``core.rows``) and published. The ids the core counted
    and settled move to the archive at the batch's end, and come back when a record of
    one arrives again."""

    _decoder: msgspec.json.Decoder
    core: Any
    counted: Archive
    topic: str
    topics: dict[type, str] = {}  # rows of these types go to their own topic, not ``topic``

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        self.due: dict[bytes, dict] = {}  # key -> what its records changed
        self.touched: dict[bytes, int] = {}  # key -> partition, of the batch's records

    @staticmethod
    def id_of(record: Any) -> str:
        raise NotImplementedError

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        record = decode(self._decoder, event.value)
        message = event.message
        due = self.due.setdefault(message.key, {})
        state = self.states.get(message.key)
        self.counted.restore(message.key, state.counted, self.id_of(record))  # counted already, if archived
        self.publish(message.key, self.core.apply(state, record, due), out)
        self.touched[message.key] = message.partition
        if due:
            self.states.changed(message.key, message.partition)

    def assigned(self) -> None:
        super().assigned()
        self.counted.reset()

    def tidy(self, key: bytes, partition: int, state: Any) -> bool:
        """The settled ids out of ``state`` (once the archive has them); whether it changed."""
        before = len(state.counted)
        self.counted.tidy(key, partition, state.counted, self.core.settled(state), state.latest_day)
        return len(state.counted) != before

    def finish(self, out: list[Message]) -> list[Message]:
        touched, self.touched = self.touched, {}
        for key, partition in touched.items():
            if self.tidy(key, partition, self.states.get(key)):
                self.states.changed(key, partition)
        due, self.due = self.due, {}
        for key, changed in due.items():
            try:
                self.publish(key, self.core.rows(self.states.get(key), changed), out)
            except Exception:  # a bug must cost rows, never the stream: the key's next record makes them again
                log.exception("internal error making the rows of %s key %r", self.name, key)
        return out

    def publish(self, key: bytes, rows: list, out: list[Message]) -> None:
        for row in rows:
            out.append((self.topics.get(type(row), self.topic), key, self.context.encode(row), []))


class _ModelPerformanceStateV1(msgspec.Struct):
    """Layout 1 kept every validated prediction of a day, and recomputed its row from all of them."""

    groups: dict[str, dict[str, PredictionSample]] = {}
    latest_day: int = 0


def _model_from_v1(old: _ModelPerformanceStateV1) -> ModelPerformanceState:
    state = ModelPerformanceState(latest_day=old.latest_day)
    for key, samples in old.groups.items():
        totals = state.groups[key] = DayTotals()
        day = date.fromisoformat(key.rsplit("\x1f", 1)[1]).toordinal()
        for prediction_id, sample in samples.items():
            totals.add(sample)
            state.counted[prediction_id] = day
    return state


class ModelStatistics(_Statistics):
    """Per model version: each day's accuracy and calibration."""

    name = "model_statistics"
    inputs = (OUTCOMES,)
    table = StateTable("model-performance", OUTCOMES, StateCodec(
        ModelPerformanceState, ModelPerformanceState, version=2, upgrades={1: (_ModelPerformanceStateV1, _model_from_v1)},
    ))
    _decoder = msgspec.json.Decoder(PredictionOutcome)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        self.core = ModelPerformance(retention_days=context.settings.model_performance_days)
        self.counted = Archive(states, StateCodec(int, int), "counted", self.core.expires)
        self.topic = context.names[MODEL_PERFORMANCE]

    @staticmethod
    def id_of(outcome: PredictionOutcome) -> str:
        return str(outcome.prediction_id)


class _RegimeTotalsV1(msgspec.Struct, array_like=True):
    n: int = 0
    wins: int = 0
    losses: int = 0
    breakevens: int = 0
    gross_profit: float = 0.0
    gross_loss: float = 0.0
    win_sum: float = 0.0
    loss_sum: float = 0.0
    mean_r: float = 0.0
    m2_r: float = 0.0
    cum_pnl: float = 0.0
    peak_pnl: float = 0.0
    max_drawdown: float = 0.0
    first_us: int = 0
    last_us: int = 0


class _RegimeGroupV1(msgspec.Struct, array_like=True):
    settled: _RegimeTotalsV1 = msgspec.field(default_factory=_RegimeTotalsV1)
    recent: dict[str, TradeSample] = {}


class _StrategyPerformanceStateV1(msgspec.Struct):
    """Layout 1 kept every trade of a period, and recomputed its rows from all of them."""

    groups: dict[str, dict[str, TradeSample]] = {}
    latest_day: int = 0
    regimes: dict[str, _RegimeGroupV1] = {}


def _totals_of(trades: list[TradeSample], start: Totals, capital: float, reorder: int) -> Totals:
    for trade in sorted(trades, key=lambda t: (t.exit_us, t.trade_id)):
        start.add(trade, capital, reorder)
    return start


def _strategy_from_v1(old: _StrategyPerformanceStateV1, core: StrategyPerformance) -> StrategyPerformanceState:
    """Layout 1's trades taken into running totals, and their ids counted."""
    capital, reorder = core.capital, core.reorder
    state = StrategyPerformanceState(latest_day=old.latest_day)
    for key, trades in old.groups.items():
        state.groups[key] = _totals_of(list(trades.values()), Totals(), capital, reorder)
        for trade in trades.values():
            day = from_epoch_us(trade.exit_us).toordinal()
            state.counted[trade.trade_id] = max(state.counted.get(trade.trade_id, 0), day * 2 + (trade.regime is not None))
    for key, group in old.regimes.items():
        settled = group.settled
        totals = Totals(
            n=settled.n, wins=settled.wins, losses=settled.losses, breakevens=settled.breakevens,
            gross_profit=settled.gross_profit, gross_loss=settled.gross_loss, win_sum=settled.win_sum, loss_sum=settled.loss_sum,
            net_pnl=settled.cum_pnl, mean_r=settled.mean_r, m2_r=settled.m2_r, first_us=settled.first_us, last_us=settled.last_us,
        )
        totals.path.cum_pnl, totals.path.peak_pnl, totals.path.max_drawdown = settled.cum_pnl, settled.peak_pnl, settled.max_drawdown
        state.regimes[key] = _totals_of(list(group.recent.values()), totals, capital, reorder)
        for trade_id in group.recent:
            state.counted[trade_id] = state.counted.get(trade_id, 0) | 1
    return state


def _strategy_codec(core: StrategyPerformance) -> StateCodec:
    return StateCodec(
        StrategyPerformanceState, StrategyPerformanceState, version=2,
        upgrades={1: (_StrategyPerformanceStateV1, lambda old: _strategy_from_v1(old, core))},
    )


class StrategyStatistics(_Statistics):
    """Per strategy: DAY, WEEK and MONTH performance, the scores of the periods it closes,
    and the strategy's figures by regime."""

    name = "strategy_statistics"
    inputs = (TRADE_OUTCOMES,)
    table = StateTable("strategy-performance", TRADE_OUTCOMES, _strategy_codec(StrategyPerformance()))
    _decoder = msgspec.json.Decoder(TradeOutcomeRow)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        settings = context.settings
        self.core = StrategyPerformance(
            capital=settings.performance_capital, late_days=settings.strategy_performance_days, timeframe=settings.base_timeframe
        )
        # Layout 1 kept trades, not totals: taking them in needs this worker's capital.
        states.codec = _strategy_codec(self.core)
        self.counted = Archive(states, StateCodec(int, int), "counted", self.core.expires)
        self.topic = context.names[STRATEGY_PERFORMANCE]
        self.topics = {StrategyScoreRow: context.names[STRATEGY_SCORES], RegimePerformanceRow: context.names[REGIME_PERFORMANCE]}

    @staticmethod
    def id_of(trade: TradeOutcomeRow) -> str:
        return str(trade.trade_id)
