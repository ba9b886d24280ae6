"""Trades into base-timeframe bars, published onto the bars topic like any feed's."""

from __future__ import annotations

import faust
import msgspec

from tickwire.schemas.codec import Codec
from tickwire.schemas.topics import BARS, TRADES
from tickwire.schemas.trades import Trade
from tickwire.streams.candles import TradeAggregator, TradeAggregatorState
from tickwire.streams.worker.outbox import Message
from tickwire.streams.worker.stage import Stage, StageContext, StateTable, applied, keyed, redelivered
from tickwire.streams.worker.state import KeyedStates, StateCodec


class TradeState(msgspec.Struct, array_like=True):
    """One symbol's open trade periods, and the offsets that recognise a redelivery."""

    aggregator: TradeAggregatorState = msgspec.field(default_factory=TradeAggregatorState)
    offsets: dict[str, int] = {}  # source topic -> offset of the last trade applied


class _TradeStateV1(msgspec.Struct, array_like=True):
    """Layout 1 recognised a redelivery by the last trade's id and kept the bars it closed."""

    aggregator: TradeAggregatorState
    last_trade_id: str = ""
    outputs: list[bytes] = []


def _from_v1(old: _TradeStateV1) -> TradeState:
    return TradeState(old.aggregator)


class Candles(Stage):
    name = "candles"
    inputs = (TRADES,)
    table = StateTable("trade-state", TRADES, StateCodec(TradeState, TradeState, version=2, upgrades={1: (_TradeStateV1, _from_v1)}))

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        settings = context.settings
        self.codec = Codec(Trade, max_message_bytes=settings.max_message_bytes, max_future_skew_s=settings.max_future_skew_s)
        self.timeframe = settings.base_timeframe
        self.bars_topic = context.names[BARS]

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        message = event.message
        trade = self.codec.decode(event.value, headers=message.headers or ())
        key = keyed(message, trade.symbol)
        state = self.states.get(key)
        duplicates = self.context.metrics.duplicates.labels(message.topic)
        if redelivered(state.offsets, message):
            duplicates.inc()
            return
        aggregator = TradeAggregator(state.aggregator, timeframe=self.timeframe)
        dropped = aggregator.state.duplicates
        for bar in aggregator.update(trade):
            out.append((self.bars_topic, key, self.context.encode(bar), []))
        if aggregator.state.duplicates > dropped:  # the same trade id sent twice by the feed
            duplicates.inc()
        applied(state.offsets, message)
        self.states.changed(key, message.partition)
