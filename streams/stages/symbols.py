"""Everything keyed by symbol: bars into conditions, regimes and multi-timeframe analyses, predictions validated
against the bars that follow, fills into trade outcomes, orders into their lifecycles,
fills and bars into positions, sizing and exit decisions joined with their trades, and
the expiry clock.

Bars, predictions, fills, orders, decisions and expiry ticks are all keyed by symbol with
the same partition count, so this one stage sees a symbol's every input, and keeps all of
it in one record, except what can no longer change (settled trades, ended orders, the
decisions joined with settled trades): each of those sits under a key of its own beside
the record (``worker.archive``) until it expires, so a symbol trading every few minutes
does not write a week of trades, orders and decisions again with every bar.
"""

from __future__ import annotations

from typing import Any

import faust
import msgspec

from tickwire.schemas.codec import Codec
from tickwire.schemas.decisions import ExitDecision, PositionSizingRow, SizingConfig, SizingMessage, SmartExitRow
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.execution import AuditRow, BenchmarkClose, Order
from tickwire.schemas.market import Bar, closing_day, epoch_us, from_epoch_us, timeframe_seconds
from tickwire.schemas.signals import Fill, Prediction, TradeOutcomeRow
from tickwire.schemas.topics import (
    AUDIT, BARS, CONDITIONS, CONDITIONS_BY_TIMEFRAME, DECISION_HISTORY, EXITS, EXPIRY_TICKS, FILLS, MTF, ORDERS,
    ORDER_UPDATES, OUTCOMES, PORTFOLIO_CONTEXT, POSITIONS, PREDICTIONS, REGIMES, SIZING, TRADE_OUTCOMES,
)
from tickwire.streams.correlations import load_sectors
from tickwire.streams.decisions import DecisionBook, DecisionJoiner, Joined
from tickwire.streams.fills import TradeBook, TradeBuilder, TradeConfig, TradeState
from tickwire.streams.orders import OrderBook, OrderConfig, OrderState, OrderTracker
from tickwire.streams.portfolios import load_portfolios
from tickwire.streams.positions import PositionBook, PositionKeeper
from tickwire.streams.predictions import PredictionState, PredictionValidator, ValidatorConfig
from tickwire.streams.regimes import RegimeConfig
from tickwire.streams.symbol import SymbolProcessor, SymbolState, SymbolStateV1
from tickwire.streams.stages.portfolios import CONTEXT_KEYS
from tickwire.streams.worker.archive import Archive
from tickwire.streams.worker.outbox import Message, pack
from tickwire.streams.worker.stage import Stage, StageContext, StateTable, applied, keyed, redelivered
from tickwire.streams.worker.state import KeyedStates, StateCodec


class SymbolRecord(msgspec.Struct, array_like=True):
    """Everything this stage keeps for one symbol, in one table record.

    One write changes all of it, so a crash never leaves the bars ahead of the
    predictions; ``offsets`` recognises a redelivered message (``stage.redelivered``).
    """

    bars: SymbolState = msgspec.field(default_factory=SymbolState)
    predictions: PredictionState = msgspec.field(default_factory=PredictionState)
    book: TradeBook = msgspec.field(default_factory=TradeBook)
    offsets: dict[str, int] = {}  # source topic -> offset of the last message applied
    # Fields added at the end with defaults read from records stored before them as they are.
    orders: OrderBook = msgspec.field(default_factory=OrderBook)
    positions: PositionBook = msgspec.field(default_factory=PositionBook)
    last_close: tuple[int, float] | None = None  # the benchmark's only: (close µs, close) of its latest base bar
    decisions: DecisionBook = msgspec.field(default_factory=DecisionBook)


class _SymbolRecordV1(msgspec.Struct, array_like=True):
    bars: SymbolStateV1 = msgspec.field(default_factory=SymbolStateV1)
    predictions: PredictionState = msgspec.field(default_factory=PredictionState)
    book: TradeBook = msgspec.field(default_factory=TradeBook)
    offsets: dict[str, int] = {}


def _from_v1(old: _SymbolRecordV1) -> SymbolRecord:
    return SymbolRecord(old.bars.upgraded(), old.predictions, old.book, old.offsets)


class _Timeframe(msgspec.Struct):
    timeframe: str


_timeframe_of = msgspec.json.Decoder(_Timeframe)


class Symbols(Stage):
    name = "symbols"
    inputs = (BARS, PREDICTIONS, FILLS, ORDERS, SIZING, EXITS, EXPIRY_TICKS)
    table = StateTable("symbol-record", BARS, StateCodec(SymbolRecord, SymbolRecord, version=2, upgrades={1: (_SymbolRecordV1, _from_v1)}))

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        settings, names = context.settings, context.names
        limits = {"max_message_bytes": settings.max_message_bytes, "max_future_skew_s": settings.max_future_skew_s}
        self.bar_codec, self.prediction_codec, self.fill_codec = Codec(Bar, **limits), Codec(Prediction, **limits), Codec(Fill, **limits)
        self.order_codec = Codec(Order, **limits)
        self.sizing_codec, self.exit_codec = Codec(SizingMessage, **limits), Codec(ExitDecision, **limits)
        self.processor = SymbolProcessor(
            base_timeframe=settings.base_timeframe,
            resample_to=settings.resample_to,
            regime=RegimeConfig(
                trend_adx=settings.regime_trend_adx,
                volatile_percentile=settings.regime_volatile_percentile,
                confirm_bars=settings.regime_confirm_bars,
            ),
            vwap_anchor_s=settings.vwap_anchor_s,
        )
        self.validator = PredictionValidator(
            ValidatorConfig(
                timeframe=settings.base_timeframe,
                neutral_band=settings.prediction_neutral_band,
                max_history_bars=settings.prediction_history_bars,
                expire_after_s=settings.prediction_expire_after_s,
            )
        )
        self.builder = TradeBuilder(TradeConfig(timeframe=settings.base_timeframe, breakeven_band=settings.trade_breakeven_band))
        self.decisions = DecisionJoiner(self.builder)
        self.orders = OrderTracker(OrderConfig(required=settings.orders_required))
        self.trades = Archive(states, StateCodec(TradeState, lambda: None), "trade", self.builder.expires_us)
        self.ended_orders = Archive(states, StateCodec(OrderState, lambda: None), "order", self.orders.expires_us)
        self.sized = Archive(states, StateCodec(PositionSizingRow, lambda: None), "sizing", self.decisions.expires_us)
        self.exited = Archive(states, StateCodec(SmartExitRow, lambda: None), "exit", self.decisions.expires_us)
        self.archives = (self.trades, self.ended_orders, self.sized, self.exited)
        self.positions = PositionKeeper(load_sectors(settings.correlation_sectors_file))
        self.portfolios = load_portfolios(settings.portfolios_file, settings.performance_capital, settings.correlation_threshold)
        self.base_timeframe = settings.base_timeframe
        self.base_period_us = timeframe_seconds(settings.base_timeframe) * 1_000_000
        self.correlated = set(settings.correlated)
        self.conditions_topic, self.regimes_topic, self.mtf_topic = names[CONDITIONS], names[REGIMES], names[MTF]
        self.by_timeframe_topic = names[CONDITIONS_BY_TIMEFRAME]
        self.outcomes_topic, self.trade_outcomes_topic = names[OUTCOMES], names[TRADE_OUTCOMES]
        self.order_updates_topic, self.positions_topic, self.audit_topic = names[ORDER_UPDATES], names[POSITIONS], names[AUDIT]
        self.decision_history_topic = names[DECISION_HISTORY]
        # The benchmark's closes go to every partition of the portfolios' stage, for their beta.
        self.benchmark, self.context_topic = settings.correlation_benchmark, names[PORTFOLIO_CONTEXT]
        self.handlers = {names[BARS]: self.on_bar, names[PREDICTIONS]: self.on_prediction, names[FILLS]: self.on_fill,
                         names[ORDERS]: self.on_order, names[SIZING]: self.on_sizing, names[EXITS]: self.on_exit,
                         names[EXPIRY_TICKS]: self.on_tick}
        self.ticks = context.topic(EXPIRY_TICKS)
        # The expiry clock: per bars partition, the latest bar close seen; the clock is the slowest
        # partition's (of those with bars), so a partition that is behind (a replay, a restart)
        # never expires the predictions of symbols whose bars are merely still on their way.
        self.latest_close_us: dict[int, int] = {}
        self.waiting: set[bytes] = set()  # symbols with pending predictions
        self.rescan = False  # the partitions changed: find the pending predictions they hold
        self.shown_regimes: dict[tuple[str, str], str] = {}
        self.touched: dict[bytes, int] = {}  # key -> partition, of the batch's records

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        self.handlers[event.message.topic](event, out)

    def finish(self, out: list[Message]) -> list[Message]:
        """What the batch's records settled moved to the archive, once per record; the
        correlation stage's input packed per timeframe: one message where a batch had hundreds."""
        touched, self.touched = self.touched, {}
        for key, partition in touched.items():
            self.tidy(key, partition, self.states.get(key))
        return pack(out, self.by_timeframe_topic) if self.correlated else out

    def tidy(self, key: bytes, partition: int, record: SymbolRecord) -> None:
        book, orders, decisions = record.book, record.orders, record.decisions
        self.trades.tidy(key, partition, book.trades, [t.trade_id for t in self.builder.settled(book)], book.clock_us)
        self.ended_orders.tidy(key, partition, orders.orders, [o.order_id for o in self.orders.ended(orders)], orders.clock_us)
        sized, exited = self.decisions.settled(decisions, book)
        self.sized.tidy(key, partition, decisions.sizing, [str(row.decision_id) for row in sized], decisions.clock_us)
        self.exited.tidy(key, partition, decisions.exits, [str(row.exit_id) for row in exited], decisions.clock_us)

    def assigned(self) -> None:
        super().assigned()
        for archive in self.archives:
            archive.reset()
        self.rescan = True
        self.latest_close_us.clear()
        self.shown_regimes.clear()  # counted again from each symbol's next bar on this worker
        self.context.metrics.symbols_by_regime.clear()

    def timers(self):
        return [(10.0, self.expiry_clock)]

    def record(self, key: bytes, message: faust.types.Message) -> SymbolRecord | None:
        """``key``'s record, or None for a message it already holds."""
        record = self.states.get(key)
        if redelivered(record.offsets, message):
            self.context.metrics.duplicates.labels(message.topic).inc()
            return None
        return record

    def opened(self, event: faust.EventT, codec: Codec) -> tuple[bytes, SymbolRecord, Any] | None:
        """(key, record, the decoded message), or None for a message the record already holds."""
        message = event.message
        decoded = codec.decode(event.value, headers=message.headers or ())
        key = keyed(message, decoded.symbol)
        record = self.record(key, message)
        return None if record is None else (key, record, decoded)

    def done(self, key: bytes, record: SymbolRecord, message: faust.types.Message) -> None:
        applied(record.offsets, message)
        self.touched[key] = message.partition
        self.states.changed(key, message.partition)

    def restore_trade(self, key: bytes, record: SymbolRecord, trade_id: Any) -> None:
        """The settled trade a fill or a decision names, back in the book."""
        self.trades.restore(key, record.book.trades, None if trade_id is None else str(trade_id))

    def on_bar(self, event: faust.EventT, out: list[Message]) -> None:
        message, opened = event.message, self.opened(event, self.bar_codec)
        if opened is None:
            return
        key, record, bar = opened
        outputs, duplicate = self.processor.process(record.bars, bar)
        if duplicate:  # the same bar twice from the feed: nothing to do, nothing to send
            self.context.metrics.duplicates.labels(message.topic).inc()
            self.done(key, record, message)
            return
        self.show_regimes(bar.symbol, record.bars)
        for kind, value in outputs:
            if kind != "condition":
                out.append((self.regimes_topic if kind == "regime" else self.mtf_topic, key, value, []))
                continue
            out.append((self.conditions_topic, key, value, []))
            if self.correlated:
                timeframe = _timeframe_of.decode(value).timeframe
                if timeframe in self.correlated:
                    out.append((self.by_timeframe_topic, timeframe.encode(), value, []))
        if bar.timeframe == self.base_timeframe:
            close_us = epoch_us(bar.ts) + self.base_period_us
            partition = message.partition
            self.latest_close_us[partition] = max(self.latest_close_us.get(partition, 0), close_us)
            regime = record.bars.frames[bar.timeframe].regime.regime
            self.queue_outcomes(key, record.predictions, self.validator.on_close(record.predictions, close_us, bar.close, regime), out)
            if record.book.trades:
                changed = self.builder.on_bar(record.book, bar) + self.builder.place_regimes(record.book, record.bars.regimes.at)
                for row in self.send_trades(changed, out):
                    self.send_decisions(self.decisions.on_trade(record.decisions, record.book, row.trade_id), out)
            if record.positions.positions:
                for position in self.positions.on_close(record.positions, bar.symbol, bar.close, close_us):
                    out.append((self.positions_topic, position.portfolio_id.encode(), self.context.encode(position), []))
            if bar.symbol == self.benchmark:
                self.close_benchmark_day(record, close_us, bar.close, out)
        self.done(key, record, message)

    def close_benchmark_day(self, record: SymbolRecord, close_us: int, close: float, out: list[Message]) -> None:
        """The benchmark's first bar of a UTC day sends the day before's last close to every
        partition of the portfolios' stage (their beta): 6 messages a day, not 6 a bar."""
        last = record.last_close
        if last is not None and close_us <= last[0]:
            return
        if last is not None and closing_day(last[0]) != closing_day(close_us):
            day_close = msgspec.msgpack.encode(BenchmarkClose(*last))
            out += [(self.context_topic, partition_key, day_close, []) for partition_key in CONTEXT_KEYS]
        record.last_close = (close_us, close)

    def show_regimes(self, symbol: str, state: SymbolState) -> None:
        """Move the symbol between the regime counts of each timeframe whose regime changed."""
        counts = self.context.metrics.symbols_by_regime
        for timeframe, frame in state.frames.items():
            regime = frame.regime.regime
            shown = self.shown_regimes.get((symbol, timeframe))
            if regime is not None and shown != regime:
                self.shown_regimes[symbol, timeframe] = regime
                if shown is not None:
                    counts.labels(timeframe, shown).dec()
                counts.labels(timeframe, regime).inc()

    def queue_outcomes(self, key: bytes, state: PredictionState, outcomes: list, out: list[Message]) -> None:
        (self.waiting.add if state.pending else self.waiting.discard)(key)
        for outcome in outcomes:
            out.append((self.outcomes_topic, outcome.model_version.encode(), self.context.encode(outcome), []))

    def on_prediction(self, event: faust.EventT, out: list[Message]) -> None:
        message, opened = event.message, self.opened(event, self.prediction_codec)
        if opened is None:
            return
        key, record, prediction = opened
        result = self.validator.on_prediction(record.predictions, prediction)
        if result.duplicate:
            self.context.metrics.duplicates.labels(message.topic).inc()
        self.queue_outcomes(key, record.predictions, result.outputs, out)
        self.done(key, record, message)

    def on_fill(self, event: faust.EventT, out: list[Message]) -> None:
        """The fill into its trade, its order and its position: each checked before any
        changes, so a refused fill changes none of them."""
        message, opened = event.message, self.opened(event, self.fill_codec)
        if opened is None:
            return
        key, record, fill = opened
        self.restore_trade(key, record, fill.trade_id)
        self.ended_orders.restore(key, record.orders.orders, fill.order_id)
        duplicate = self.builder.known(record.book, fill)
        if not duplicate:
            self.check_portfolio(fill.portfolio_id)
            self.orders.check_fill(record.orders, fill)
            self.positions.check_fill(record.positions, fill)
        result = self.builder.on_fill(record.book, fill)
        if result.duplicate:
            self.context.metrics.duplicates.labels(message.topic).inc()
        else:
            order = self.orders.apply_fill(record.orders, fill)
            if order is not None:
                out.append((self.order_updates_topic, order.portfolio_id.encode(), self.context.encode(order), []))
            position = self.positions.apply_fill(record.positions, fill)
            out.append((self.positions_topic, position.portfolio_id.encode(), self.context.encode(position), []))
            self.audit(out, message, "FILL", fill.fill_id, fill)
            self.audit(out, message, "POSITION", fill.portfolio_id, position)
            self.send_decisions(self.decisions.on_trade(record.decisions, record.book, result.row.trade_id), out)
        self.send_trades([result.row, *self.builder.place_regimes(record.book, record.bars.regimes.at)], out)
        self.done(key, record, message)

    def send_trades(self, rows: list[TradeOutcomeRow], out: list[Message]) -> list[TradeOutcomeRow]:
        """Each trade's last row of ``rows``, once (a later row holds an earlier one's changes);
        the rows sent."""
        latest = {row.trade_id: row for row in rows}
        for row in latest.values():
            out.append((self.trade_outcomes_topic, row.strategy_id.encode(), self.context.encode(row), []))
        return list(latest.values())

    def on_sizing(self, event: faust.EventT, out: list[Message]) -> None:
        """A sizing decision or configuration change, joined with its trade when that has closed."""
        message, opened = event.message, self.opened(event, self.sizing_codec)
        if opened is None:
            return
        key, record, decided = opened
        self.check_portfolio(decided.portfolio_id)
        if isinstance(decided, SizingConfig):
            joined = self.decisions.on_config(record.decisions, record.book, decided)
        else:
            self.restore_trade(key, record, decided.trade_id)
            self.sized.restore(key, record.decisions.sizing, str(decided.decision_id))
            joined = self.decisions.on_sizing(record.decisions, record.book, decided)
        self.send_decisions(joined, out, message.topic)
        self.done(key, record, message)

    def on_exit(self, event: faust.EventT, out: list[Message]) -> None:
        message, opened = event.message, self.opened(event, self.exit_codec)
        if opened is None:
            return
        key, record, decided = opened
        self.restore_trade(key, record, decided.trade_id)
        self.exited.restore(key, record.decisions.exits, str(decided.exit_id))
        self.send_decisions(self.decisions.on_exit(record.decisions, record.book, decided), out, message.topic)
        self.done(key, record, message)

    def send_decisions(self, joined: Joined, out: list[Message], topic: str | None = None) -> None:
        """The decision rows out, keyed by strategy; a duplicate decision only counted (as from
        ``topic``), and so are the decisions aged out without their trade."""
        if joined.duplicate:
            self.context.metrics.duplicates.labels(topic).inc()
        for kind, count in joined.unjoined.items():
            self.context.metrics.unjoined_decisions.labels(kind).inc(count)
        for row in joined.rows:
            out.append((self.decision_history_topic, row.strategy_id.encode(), self.context.encode(row), []))

    def on_order(self, event: faust.EventT, out: list[Message]) -> None:
        message, opened = event.message, self.opened(event, self.order_codec)
        if opened is None:
            return
        key, record, order = opened
        self.check_portfolio(order.portfolio_id)
        self.ended_orders.restore(key, record.orders.orders, order.order_id)
        updates = self.orders.on_order(record.orders, order)
        if not updates:
            self.context.metrics.duplicates.labels(message.topic).inc()
        else:
            for update in updates:
                out.append((self.order_updates_topic, update.portfolio_id.encode(), self.context.encode(update), []))
            self.audit(out, message, "ORDER", order.order_id, order)
        self.done(key, record, message)

    def audit(self, out: list[Message], message: faust.types.Message, kind: str, subject: str, what: Any) -> None:
        """One ``execution_audit`` row: what changed, and the message that changed it."""
        row = AuditRow(
            source_topic=message.topic, source_partition=message.partition, source_offset=message.offset, kind=kind,
            subject=subject, ts=what.ts, portfolio_id=what.portfolio_id, symbol=what.symbol, payload=msgspec.to_builtins(what),
        )
        out.append((self.audit_topic, what.portfolio_id.encode(), self.context.encode(row), []))

    def check_portfolio(self, portfolio_id: str) -> None:
        if self.portfolios.limits(portfolio_id) is None:
            raise InvalidMessage("unknown_portfolio", f"portfolio {portfolio_id!r} is not in TICKWIRE_PORTFOLIOS_FILE")

    def on_tick(self, event: faust.EventT, out: list[Message]) -> None:
        message = event.message
        try:
            watermark = from_epoch_us(int(event.value))
        except (TypeError, ValueError, OverflowError):
            raise InvalidMessage("schema", "an expiry tick is a decimal epoch-microseconds watermark") from None
        record = self.record(message.key, message)
        if record is None:
            return
        self.queue_outcomes(message.key, record.predictions, self.validator.expire(record.predictions, watermark), out)
        self.done(message.key, record, message)

    async def expiry_clock(self) -> None:
        """Symbols that stopped trading still see time pass: a tick through their own partition."""
        if self.rescan:
            self.rescan = False
            self.waiting.clear()
            self.waiting.update(key for key, _ in self.states.stored_items()
                                if not any(archive.owns(key) for archive in self.archives)
                                and self.states.get(key).predictions.pending)
        if not self.waiting or not self.latest_close_us:
            return
        watermark = min(self.latest_close_us.values())
        for key in list(self.waiting):
            await self.ticks.send(key=key, value=str(watermark).encode())
