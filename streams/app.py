"""The faust app: agents that only move data between topics and the pure cores.

State per symbol lives in faust Tables (changelog-backed, so it survives restarts and
rebalances), as msgpack of the cores' own state Structs. Every agent follows the same
steps: decode and validate, run the core on the key's state, store the state, send the
outputs; a message the core refuses goes to the DLQ with its reason and source offset.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Awaitable, Callable

import faust
import msgspec
from aiokafka.errors import KafkaError

from schemas.codec import Codec, dlq_record
from schemas.errors import InvalidMessage
from schemas.market import EPOCH, Bar, Condition, CorrelationContext, timeframe_seconds
from schemas.metrics import Metrics, watch_broker
from schemas.settings import Settings
from schemas.signals import Fill, Prediction, PredictionOutcome, TradeOutcomeRow
from schemas.topics import ALL as ALL_TOPICS
from schemas.topics import (
    BARS, CONDITIONS, CONDITIONS_BY_TIMEFRAME, CORRELATION_CONTEXT, CORRELATIONS, DLQ, EXPIRY_TICKS, FILLS,
    MODEL_PERFORMANCE, OUTCOMES, PREDICTIONS, REGIMES, STRATEGY_PERFORMANCE, TRADE_OUTCOMES, TRADES, Topic,
)
from schemas.trades import Trade
from streams.candles import TradeAggregator, TradeAggregatorState
from streams.correlations import CorrelationConfig, Correlations, CorrelationState, load_sectors
from streams.fills import TradeBook, TradeBuilder, TradeConfig
from streams.fills import decode_state as decode_book
from streams.fills import encode_state as encode_book
from streams.performance import ModelPerformance, ModelPerformanceState, StrategyPerformance, StrategyPerformanceState
from streams.predictions import PredictionState, PredictionValidator, ValidatorConfig
from streams.predictions import decode_state as decode_predictions
from streams.predictions import encode_state as encode_predictions
from streams.regimes import REGIMES as REGIME_NAMES
from streams.regimes import RegimeConfig
from streams.symbol import SymbolProcessor, SymbolState, state_decoder, state_encoder

log = logging.getLogger("tickwire.worker")


class TradeState(msgspec.Struct, array_like=True):
    """One symbol's open trade periods, and the bars its last trade closed (for redeliveries)."""

    aggregator: TradeAggregatorState
    last_trade_id: str = ""
    outputs: list[bytes] = []


_trades_decoder = msgspec.msgpack.Decoder(TradeState)
_outcome_decoder = msgspec.json.Decoder(PredictionOutcome)
_trade_decoder = msgspec.json.Decoder(TradeOutcomeRow)
_model_state_decoder = msgspec.msgpack.Decoder(ModelPerformanceState)
_strategy_state_decoder = msgspec.msgpack.Decoder(StrategyPerformanceState)
_US = timedelta(microseconds=1)


class _Timeframe(msgspec.Struct):
    timeframe: str


_timeframe_of = msgspec.json.Decoder(_Timeframe)
_condition_decoder = msgspec.json.Decoder(Condition)
_correlation_state_decoder = msgspec.msgpack.Decoder(CorrelationState)
_open_bars_decoder = msgspec.msgpack.Decoder(dict[str, tuple[float, float, float, float, int]])
_latest_decoder = msgspec.msgpack.Decoder(dict[str, int])


class _CorrelationWindow:
    """A timeframe's core plus the bars waiting for the watermark, as stored in the table."""

    def __init__(self, timeframe: str, core: Correlations, open_bars: dict[int, dict[str, tuple]], latest: dict[str, int]) -> None:
        self.timeframe, self.core, self.open, self.latest = timeframe, core, open_bars, latest

    def key(self, part: int | str) -> bytes:
        return f"{self.timeframe}/{part}".encode()

    def closable(self, quiet_us: int) -> list[int]:
        """Open timestamps every active symbol has moved past, oldest first."""
        newest = max(self.latest.values())
        watermark = min(t for t in self.latest.values() if t >= newest - quiet_us)
        return sorted(ts for ts in self.open if ts < watermark)


def _restore_window(states: faust.Table, settings: Settings, timeframe: str, sectors: dict[str, str]) -> _CorrelationWindow:
    prefix = f"{timeframe}/".encode()
    stored_core = states[prefix + b"core"]
    core = Correlations(
        _correlation_config(settings, timeframe),
        _correlation_state_decoder.decode(stored_core) if stored_core else None,
        sectors=sectors,
    )
    stored_latest = states[prefix + b"latest"]
    latest = _latest_decoder.decode(stored_latest) if stored_latest else {}
    open_bars = {
        int(key[len(prefix):]): _open_bars_decoder.decode(value)
        for key, value in states.items()
        if key.startswith(prefix) and key[len(prefix):].isdigit() and value
    }
    return _CorrelationWindow(timeframe, core, open_bars, latest)


def _correlation_config(settings: Settings, timeframe: str) -> CorrelationConfig:
    return CorrelationConfig(
        timeframe=timeframe,
        windows=settings.correlation_window_bars,
        min_common=settings.correlation_min_common,
        benchmark=settings.correlation_benchmark,
        threshold=settings.correlation_threshold,
        snapshot_every=settings.correlation_snapshot_every,
        max_open_timestamps=1,  # unused: the worker closes timestamps itself (``step``)
    )


def _where(message: faust.types.Message) -> dict[str, object]:
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


def _decode(decoder: msgspec.json.Decoder, value: bytes | None) -> Any:
    """Our own topics carry our own records; anything else a producer put there is refused."""
    try:
        return decoder.decode(value or b"")
    except msgspec.DecodeError as exc:
        raise InvalidMessage("schema", str(exc)) from None


# The worker's state tables and the topic each is partitioned like (its changelog's partitions).
TABLES = (
    ("symbol-state", BARS),
    ("prediction-state", BARS),
    ("trade-book", BARS),
    ("trade-state", TRADES),
    ("model-performance", OUTCOMES),
    ("strategy-performance", TRADE_OUTCOMES),
    ("correlation-state", CONDITIONS_BY_TIMEFRAME),
)


def changelog_topics(settings: Settings) -> list[tuple[str, int]]:
    """faust's changelog topic names and partitions for ``TABLES``.

    Created with the registry's topics before a worker starts: a changelog faust creates
    itself during the first rebalance may be missing from that rebalance's metadata,
    and its table then cannot be written until the next one.
    """
    app_id = settings.topic_prefix + settings.processor_group
    return [(f"{app_id}-{name}-changelog", source.partitions) for name, source in TABLES]


def create_app(settings: Settings, metrics: Metrics) -> faust.App:
    """Build the processors' faust app for ``settings``."""
    credentials = None
    if settings.kafka_security_protocol.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=settings.kafka_ssl_context(),
        )
    elif settings.kafka_security_protocol == "SSL":
        credentials = faust.SSLCredentials(settings.kafka_ssl_context())
    app = faust.App(
        settings.topic_prefix + settings.processor_group,
        broker=["kafka://" + host for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=credentials,
        store="memory://",
        web_enabled=False,
        processing_guarantee="at_least_once",
        topic_partitions=BARS.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        key_serializer="raw",
        value_serializer="raw",
        producer_linger_ms=5,
        # A worker killed without leaving holds its partitions until the session expires:
        # keep that short so a restarted worker resumes within seconds, not a minute.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}

    def topic(spec: Topic) -> faust.TopicT:
        return app.topic(settings.topic(spec.name), partitions=spec.partitions, **raw)

    def table(name: str, spec: Topic) -> faust.Table:
        return app.Table(name, default=bytes, partitions=spec.partitions, key_type=bytes, value_type=bytes)

    # One agent per key space. Bars, predictions, fills and expiry ticks are all keyed by
    # symbol with the same partition count, so one agent sees a symbol's every input.
    symbol_inputs = app.topic(
        *(settings.topic(t.name) for t in (BARS, PREDICTIONS, FILLS, EXPIRY_TICKS)), partitions=BARS.partitions, **raw
    )
    names = {spec: settings.topic(spec.name) for spec in ALL_TOPICS}
    bars_topic, trades_topic, ticks_topic = topic(BARS), topic(TRADES), topic(EXPIRY_TICKS)
    out = {spec: topic(spec) for spec in (CONDITIONS, REGIMES, CORRELATIONS, CORRELATION_CONTEXT, OUTCOMES, TRADE_OUTCOMES, MODEL_PERFORMANCE, STRATEGY_PERFORMANCE, DLQ)}
    symbol_states, prediction_states, trade_books, trade_states, model_states, strategy_states, correlation_states = (
        table(name, source) for name, source in TABLES
    )
    by_timeframe = topic(CONDITIONS_BY_TIMEFRAME)
    correlated = set(settings.correlated)
    sectors = load_sectors(settings.correlation_sectors_file) if settings.correlation_sectors_file else {}
    correlation_windows: dict[str, _CorrelationWindow] = {}  # live per timeframe; rebuilt from the table after a rebalance
    correlation_quiet_us = {tf: settings.correlation_quiet_bars * timeframe_seconds(tf) * 1_000_000 for tf in correlated}

    limits = {"max_message_bytes": settings.max_message_bytes, "max_future_skew_s": settings.max_future_skew_s}
    bar_codec, trade_codec = Codec(Bar, **limits), Codec(Trade, **limits)
    prediction_codec, fill_codec = Codec(Prediction, **limits), Codec(Fill, **limits)
    processor = SymbolProcessor(
        base_timeframe=settings.base_timeframe,
        resample_to=settings.resample_to,
        regime=RegimeConfig(
            trend_adx=settings.regime_trend_adx,
            volatile_percentile=settings.regime_volatile_percentile,
            confirm_bars=settings.regime_confirm_bars,
        ),
        vwap_anchor_s=settings.vwap_anchor_s,
    )
    validator = PredictionValidator(
        ValidatorConfig(
            timeframe=settings.base_timeframe,
            neutral_band=settings.prediction_neutral_band,
            max_history_bars=settings.prediction_history_bars,
            expire_after_s=settings.prediction_expire_after_s,
        )
    )
    builder = TradeBuilder(TradeConfig(timeframe=settings.base_timeframe, breakeven_band=settings.trade_breakeven_band))
    model_performance = ModelPerformance(retention_days=2)
    strategy_performance = StrategyPerformance(capital=settings.performance_capital)
    encode = msgspec.json.Encoder().encode
    base_period_us = timeframe_seconds(settings.base_timeframe) * 1_000_000
    state_sizes: dict[str, dict[bytes, int]] = {}
    # The expiry clock: per bars partition, the latest bar close seen; the clock is the slowest
    # partition's (of those with bars), so a partition that is behind (a replay, a restart)
    # never expires the predictions of symbols whose bars are merely still on their way.
    latest_close_us: dict[int, int] = {}
    waiting: set[bytes] = set()
    rescan = [False]

    def store(states: faust.Table, key: bytes, value: bytes) -> None:
        states[key] = value
        sizes = state_sizes.setdefault(states.name, {})
        metrics.state_bytes.labels(states.name).inc(len(value) - sizes.get(key, 0))
        sizes[key] = len(value)

    def forget(states: faust.Table, key: bytes) -> None:
        del states[key]
        metrics.state_bytes.labels(states.name).dec(state_sizes.get(states.name, {}).pop(key, 0))

    async def send(spec: Topic, key: bytes, value: bytes, headers: list | None = None) -> None:
        await out[spec].send(key=key, value=value, headers=headers)
        metrics.produced.labels(names[spec]).inc()

    async def reject(event: faust.EventT, exc: InvalidMessage) -> None:
        message = event.message
        metrics.dlq.labels(message.topic, exc.reason).inc()
        log.warning("rejected: %s", exc, extra={**_where(message), "reason": exc.reason})
        dead = dlq_record(
            key=message.key, value=event.value, reason=exc.reason, detail=exc.detail,
            topic=message.topic, partition=message.partition, offset=message.offset,
        )
        await send(DLQ, dead.key, dead.value, dead.headers)

    async def guarded(event: faust.EventT, handler: Callable[[faust.EventT], Awaitable[None]]) -> None:
        """Run one message through its handler; whatever it refuses, or fails on, goes to the DLQ.

        A failure of the broker is not the message's fault: it propagates, and faust's
        supervisor restarts the agent from the last committed offset."""
        metrics.consumed.labels(event.message.topic).inc()
        try:
            await handler(event)
        except InvalidMessage as exc:
            await reject(event, exc)
        except KafkaError:
            raise
        except Exception as exc:  # a bug must cost one message, never the stream
            log.exception("internal error on a message; it goes to the DLQ", extra=_where(event.message))
            await reject(event, InvalidMessage("internal", f"{type(exc).__name__}: {str(exc)[:500]}"))

    def keyed(message: faust.types.Message, symbol: str) -> bytes:
        key = symbol.encode()
        if message.key != key:
            # State is partitioned by key: a record keyed otherwise would split a symbol's history.
            raise InvalidMessage("invalid_value", f"record key {message.key!r} is not the symbol {symbol!r}")
        return key

    def load(states: faust.Table, key: bytes, decode: Callable[[bytes], Any], default: Callable[[], Any]) -> Any:
        stored = states[key]
        return decode(stored) if stored else default()

    async def on_bar(event: faust.EventT) -> None:
        bar = bar_codec.decode(event.value, headers=event.message.headers or ())
        key = keyed(event.message, bar.symbol)
        state = load(symbol_states, key, state_decoder.decode, SymbolState)
        produced, redelivered = processor.process(state, bar)
        if not redelivered:
            store(symbol_states, key, state_encoder.encode(state))
            for timeframe, frame in state.frames.items():
                if frame.regime.regime is not None:
                    for name in REGIME_NAMES:
                        metrics.regime.labels(bar.symbol, timeframe, name).set(1 if name == frame.regime.regime else 0)
        for kind, value in produced:
            await send(CONDITIONS if kind == "condition" else REGIMES, key, value)
            if kind == "condition" and correlated:
                timeframe = _timeframe_of.decode(value).timeframe
                if timeframe in correlated:
                    await by_timeframe.send(key=timeframe.encode(), value=value)
        if bar.timeframe != settings.base_timeframe:
            return
        close_us = (bar.ts - EPOCH) // _US + base_period_us
        partition = event.message.partition
        latest_close_us[partition] = max(latest_close_us.get(partition, 0), close_us)
        predictions = load(prediction_states, key, decode_predictions, PredictionState)
        outcomes = validator.on_close(predictions, close_us, bar.close, state.frames[bar.timeframe].regime.regime)
        store(prediction_states, key, encode_predictions(predictions))
        await send_outcomes(key, predictions, outcomes)
        book = load(trade_books, key, decode_book, TradeBook)
        if book.trades:
            rows = builder.on_bar(book, bar)
            store(trade_books, key, encode_book(book))
            for row in rows:
                await send(TRADE_OUTCOMES, row.strategy_id.encode(), encode(row))

    async def send_outcomes(key: bytes, state: PredictionState, outcomes: list) -> None:
        (waiting.add if state.pending else waiting.discard)(key)
        for outcome in outcomes:
            await send(OUTCOMES, outcome.model_version.encode(), encode(outcome))

    async def on_prediction(event: faust.EventT) -> None:
        prediction = prediction_codec.decode(event.value, headers=event.message.headers or ())
        key = keyed(event.message, prediction.symbol)
        state = load(prediction_states, key, decode_predictions, PredictionState)
        result = validator.on_prediction(state, prediction)
        if result.duplicate:
            metrics.duplicates.labels(event.message.topic).inc()
        else:
            store(prediction_states, key, encode_predictions(state))
        await send_outcomes(key, state, result.outputs)

    async def on_fill(event: faust.EventT) -> None:
        fill = fill_codec.decode(event.value, headers=event.message.headers or ())
        key = keyed(event.message, fill.symbol)
        book = load(trade_books, key, decode_book, TradeBook)
        result = builder.on_fill(book, fill)
        if result.duplicate:
            metrics.duplicates.labels(event.message.topic).inc()
        else:
            store(trade_books, key, encode_book(book))
        await send(TRADE_OUTCOMES, result.row.strategy_id.encode(), encode(result.row))

    async def on_tick(event: faust.EventT) -> None:
        key = event.message.key
        try:
            watermark = EPOCH + int(event.value) * _US
        except (TypeError, ValueError, OverflowError):
            raise InvalidMessage("schema", "an expiry tick is a decimal epoch-microseconds watermark") from None
        state = load(prediction_states, key, decode_predictions, PredictionState)
        outcomes = validator.expire(state, watermark)
        if outcomes:
            store(prediction_states, key, encode_predictions(state))
        await send_outcomes(key, state, outcomes)

    handlers = {names[BARS]: on_bar, names[PREDICTIONS]: on_prediction, names[FILLS]: on_fill, names[EXPIRY_TICKS]: on_tick}

    @app.on_rebalance_complete.connect
    async def on_assigned(sender: object, **kwargs: object) -> None:
        metrics.rebalances.inc()
        metrics.set_ready(True)
        rescan[0] = True
        latest_close_us.clear()
        correlation_windows.clear()

    @app.agent(by_timeframe)
    async def correlations(stream: faust.StreamT) -> None:
        """One core per timeframe, fed a timestamp once every active symbol has moved past it.

        Symbols arrive from different partitions at different paces, so bars wait per
        timestamp (one table key each, so an event writes O(symbols), not the backlog)
        until the watermark, the oldest latest-bar time of the symbols heard from within
        ``correlation_quiet_bars``, passes them. The core itself is stored once per step."""
        async for event in stream.events():
            await guarded(event, on_condition)

    async def on_condition(event: faust.EventT) -> None:
        condition = _decode(_condition_decoder, event.value)
        timeframe = condition.timeframe
        if timeframe not in correlated:
            return
        window = correlation_windows.get(timeframe)
        if window is None:
            window = correlation_windows[timeframe] = _restore_window(correlation_states, settings, timeframe, sectors)
        try:
            await advance(window, condition, event)
        except Exception:
            correlation_windows.pop(timeframe, None)  # rebuilt from the table, not from a half-applied step
            raise

    async def advance(window: _CorrelationWindow, condition: Condition, event: faust.EventT) -> None:
        timeframe = condition.timeframe
        ts_us = (condition.timestamp - EPOCH) // _US
        if window.core.state.timestamps and ts_us <= window.core.state.timestamps[-1]:
            metrics.late_bars.labels(event.message.topic).inc()
            return
        bars = window.open.setdefault(ts_us, {})
        bars[condition.symbol] = (condition.open, condition.high, condition.low, condition.close, condition.volume)
        store(correlation_states, window.key(ts_us), msgspec.msgpack.encode(bars))
        latest = window.latest
        if latest.get(condition.symbol, -1) < ts_us:
            latest[condition.symbol] = ts_us
            store(correlation_states, window.key("latest"), msgspec.msgpack.encode(latest))
        for stepped in window.closable(correlation_quiet_us[timeframe]):
            bars = window.open.pop(stepped)
            for record in window.core.step(stepped, {symbol: bar[3] for symbol, bar in bars.items()}):
                await send(CORRELATIONS, timeframe.encode(), encode(record))
            for symbol, (spy, sector) in window.core.context(min(window.core.config.windows)).items():
                o, h, low, c, v = bars[symbol]
                context = CorrelationContext(
                    symbol=symbol, timeframe=timeframe, timestamp=EPOCH + stepped * _US,
                    open=o, high=h, low=low, close=c, volume=v, spy_correlation=spy, sector_correlation=sector,
                )
                await send(CORRELATION_CONTEXT, symbol.encode(), encode(context))
            forget(correlation_states, window.key(stepped))
            store(correlation_states, window.key("core"), msgspec.msgpack.encode(window.core.snapshot_state()))

    @app.task
    async def broker_health() -> None:
        await watch_broker(metrics, settings.kafka_bootstrap)

    @app.timer(interval=10.0)
    async def expiry_clock() -> None:
        """Symbols that stopped trading still see time pass: a tick through their own partition."""
        if rescan[0]:  # the partitions changed: find the pending predictions they hold
            rescan[0] = False
            waiting.clear()
            waiting.update(key for key, value in prediction_states.items() if value and decode_predictions(value).pending)
        if not waiting or not latest_close_us:
            return
        watermark = min(latest_close_us.values())
        for key in list(waiting):
            await ticks_topic.send(key=key, value=str(watermark).encode())

    @app.agent(symbol_inputs)
    async def symbols(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await guarded(event, handlers[event.message.topic])

    @app.agent(trades_topic)
    async def candles(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await guarded(event, on_trade)

    async def on_trade(event: faust.EventT) -> None:
        trade = trade_codec.decode(event.value, headers=event.message.headers or ())
        key = keyed(event.message, trade.symbol)
        state = load(trade_states, key, _trades_decoder.decode, lambda: TradeState(TradeAggregatorState()))
        aggregator = TradeAggregator(state.aggregator, timeframe=settings.base_timeframe)
        duplicates = aggregator.state.duplicates
        closed = [encode(bar) for bar in aggregator.update(trade)]
        if aggregator.state.duplicates > duplicates:
            metrics.duplicates.labels(event.message.topic).inc()
            if trade.trade_id != state.last_trade_id:
                return
            closed = state.outputs  # a redelivery: send again what it produced
        else:
            state.last_trade_id, state.outputs = trade.trade_id, closed
            store(trade_states, key, msgspec.msgpack.encode(state))
        for value in closed:
            await bars_topic.send(key=key, value=value)
            metrics.produced.labels(names[BARS]).inc()

    @app.agent(out[OUTCOMES])
    async def model_statistics(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await guarded(event, on_outcome)

    async def on_outcome(event: faust.EventT) -> None:
        outcome = _decode(_outcome_decoder, event.value)
        state = load(model_states, event.message.key, _model_state_decoder.decode, ModelPerformanceState)
        row = model_performance.add(state, outcome)
        if row is not None:
            store(model_states, event.message.key, msgspec.msgpack.encode(state))
            await send(MODEL_PERFORMANCE, event.message.key, encode(row))

    @app.agent(out[TRADE_OUTCOMES])
    async def strategy_statistics(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await guarded(event, on_trade_outcome)

    async def on_trade_outcome(event: faust.EventT) -> None:
        trade = _decode(_trade_decoder, event.value)
        state = load(strategy_states, event.message.key, _strategy_state_decoder.decode, StrategyPerformanceState)
        rows = strategy_performance.add(state, trade)
        if rows:
            store(strategy_states, event.message.key, msgspec.msgpack.encode(state))
        for row in rows:
            await send(STRATEGY_PERFORMANCE, event.message.key, encode(row))

    return app
