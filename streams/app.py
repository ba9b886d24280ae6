"""The faust app: agents that only move data between topics and the pure cores.

Every agent takes its stream a batch at a time (``take_events``) and follows the same
steps for each message: decode and validate, run the core on the key's state, queue
the outputs; a message the core refuses goes to the DLQ with its reason and source
offset. After the batch its outputs are delivered (``Outbox``) and only then is each
state the batch changed written once (``KeyedStates``): so a crash leaves either the
old state, and the batch is redone to the same outputs, or outputs and state both.
State per key lives in faust Tables (changelog-backed, so it survives restarts and
rebalances), as msgpack of the cores' own state Structs, and stays decoded in memory
while this worker owns the key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from datetime import timedelta
from typing import Any, Callable

import faust
import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from tickwire.schemas.codec import Codec, dlq_record
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import EPOCH, Bar, Condition, CorrelationContext, timeframe_seconds
from tickwire.schemas.metrics import Metrics, watch_broker
from tickwire.schemas.settings import Settings
from tickwire.schemas.signals import Fill, Prediction, PredictionOutcome, TradeOutcomeRow
from tickwire.schemas.topics import ALL as ALL_TOPICS
from tickwire.schemas.topics import (
    BARS, CONDITIONS, CONDITIONS_BY_TIMEFRAME, CORRELATION_CONTEXT, CORRELATIONS, DLQ, EXPIRY_TICKS, FILLS,
    MODEL_PERFORMANCE, OUTCOMES, PREDICTIONS, REGIMES, STRATEGY_PERFORMANCE, TRADE_OUTCOMES, TRADES, Topic,
)
from tickwire.schemas.trades import Trade
from tickwire.streams.candles import TradeAggregator, TradeAggregatorState
from tickwire.streams.correlations import CorrelationConfig, Correlations, CorrelationState, load_sectors
from tickwire.streams.fills import TradeBook, TradeBuilder, TradeConfig
from tickwire.streams.performance import ModelPerformance, ModelPerformanceState, StrategyPerformance, StrategyPerformanceState
from tickwire.streams.predictions import PredictionState, PredictionValidator, ValidatorConfig
from tickwire.streams.regimes import REGIMES as REGIME_NAMES
from tickwire.streams.regimes import RegimeConfig
from tickwire.streams.symbol import SymbolProcessor, SymbolState

log = logging.getLogger("tickwire.worker")

# (topic, key, value, headers): one output message.
Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


class SymbolRecord(msgspec.Struct, array_like=True):
    """Everything the symbols agent keeps for one symbol, in one table record.

    One write changes all of it, so a crash never leaves the bars ahead of the
    predictions; ``offsets`` tells a message the record already holds (redelivered
    after a crash: its outputs went out before the record was written) from a new one.
    """

    bars: SymbolState = msgspec.field(default_factory=SymbolState)
    predictions: PredictionState = msgspec.field(default_factory=PredictionState)
    book: TradeBook = msgspec.field(default_factory=TradeBook)
    offsets: dict[str, int] = {}  # source topic -> offset of the last message applied


class TradeState(msgspec.Struct, array_like=True):
    """One symbol's open trade periods, and the bars its last trade closed (for redeliveries)."""

    aggregator: TradeAggregatorState
    last_trade_id: str = ""
    outputs: list[bytes] = []


_record_decoder = msgspec.msgpack.Decoder(SymbolRecord)
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
_packed_decoder = msgspec.msgpack.Decoder(list[bytes])
# A packed message stays well under the broker's default 1 MiB record-batch limit.
_PACK_BYTES = 256 * 1024
_correlation_state_decoder = msgspec.msgpack.Decoder(CorrelationState)
_open_bars_decoder = msgspec.msgpack.Decoder(dict[str, tuple[float, float, float, float, int]])
_latest_decoder = msgspec.msgpack.Decoder(dict[str, int])
_GONE = object()  # a deleted key, until the batch's writes


class KeyedStates:
    """One faust table's values, decoded once and kept while this worker owns the keys.

    Agents change the live objects and mark them (``changed``); ``write`` encodes each
    marked key once and writes it to the table and its changelog partition (the
    source message's, as faust does), so a batch of a symbol's bars costs one state
    write, not one per bar. ``forget`` drops live objects (a failed message, a
    rebalance): they are decoded again from the last written value.
    """

    def __init__(self, table: faust.Table, decode: Callable[[bytes], Any], encode: Callable[[Any], bytes],
                 default: Callable[[], Any], metrics: Metrics) -> None:
        self.table, self._decode, self._encode, self._default = table, decode, encode, default
        self._live: dict[bytes, Any] = {}
        self._changed: dict[bytes, int] = {}  # key -> changelog partition
        self._sizes: dict[bytes, int] = {}
        self._gauge = metrics.state_bytes.labels(table.name)
        self._resets = metrics.state_resets.labels(table.name)

    def get(self, key: bytes) -> Any:
        value = self._live.get(key, _GONE)
        if value is _GONE:
            stored = self.table.data.get(key)
            value = self._live[key] = self.decoded(key, stored, self._decode, self._default) if stored else self._default()
        return value

    def decoded(self, key: bytes, stored: bytes, decode: Callable[[bytes], Any], default: Callable[[], Any]) -> Any:
        """``stored`` decoded; ``default()`` if it cannot be (written by a worker of another
        state format, or damaged): logged and counted, so the key starts afresh instead of
        failing, and sending to the DLQ, every message it receives."""
        try:
            return decode(stored)
        except (msgspec.DecodeError, ValueError) as exc:
            log.error("state of %s key %r cannot be decoded (%s): starting it afresh", self.table.name, key, exc)
            self._resets.inc()
            return default()

    def changed(self, key: bytes, partition: int, value: Any = _GONE) -> None:
        """Mark ``key`` for the next ``write``; with a ``value``, that becomes its live object."""
        if value is not _GONE:
            self._live[key] = value
        self._changed[key] = partition

    def delete(self, key: bytes, partition: int) -> None:
        self._live[key] = _GONE
        self._changed[key] = partition

    def stored_items(self) -> list[tuple[bytes, bytes]]:
        """The last written values (what a rebuild after ``forget`` starts from)."""
        return [(key, value) for key, value in self.table.data.items() if value]

    def forget(self, match: Callable[[bytes], bool]) -> None:
        for key in [key for key in self._live if match(key)]:
            del self._live[key]
            self._changed.pop(key, None)

    def release(self) -> None:
        """Drop every live object not waiting to be written (after a rebalance)."""
        self.forget(lambda key: key not in self._changed)

    def write(self) -> None:
        data, sizes = self.table.data, self._sizes
        for key, partition in self._changed.items():
            value = self._live.get(key, _GONE)
            if value is _GONE:
                self._live.pop(key, None)
                data.pop(key, None)
                self.table.send_changelog(partition, key, None, value_serializer="raw")
                self._gauge.dec(sizes.pop(key, 0))
            else:
                encoded = data[key] = self._encode(value)
                self.table.send_changelog(partition, key, encoded)
                self._gauge.inc(len(encoded) - sizes.get(key, 0))
                sizes[key] = len(encoded)
        self._changed.clear()


class Outbox:
    """Delivers a batch's outputs through one aiokafka producer, and waits for the broker.

    Messages are appended to per-partition record batches (partitioned like the
    client's default, murmur2 of the key), which skips the client's per-message
    futures; the wait means the outputs are on the broker before the state the
    batch changed is written and before faust may commit the batch's offsets.
    """

    def __init__(self, settings: Settings) -> None:
        self._options = settings.kafka_options()
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._hashes: dict[bytes, int] = {}
        self._deliveries = 0  # messages without a key go to one partition per delivery, in turn

    async def deliver(self, messages: list[Message]) -> None:
        if not messages:
            return
        producer = self._producer or await self._start()
        self._deliveries += 1
        batches: dict[tuple[str, int], Any] = {}
        sent = []
        for topic, key, value, headers in messages:
            partition = await self._partition(topic, key)
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[topic, partition] = producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                sent.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[topic, partition] = producer.create_batch()
                if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                    raise ValueError(f"a {len(value)}-byte message does not fit a producer batch")
        for (topic, partition), batch in batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)

    async def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        if key is None:
            return partitions[self._deliveries % len(partitions)]
        digest = self._hashes.get(key)
        if digest is None:
            if len(self._hashes) > 100_000:  # keys of hostile producers: keep the cache bounded
                self._hashes.clear()
            digest = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[digest % len(partitions)]

    async def _start(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**self._options, acks="all", max_batch_size=512 * 1024, linger_ms=0)
        await producer.start()
        self._producer = producer
        return producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


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


def _restore_window(states: KeyedStates, settings: Settings, timeframe: str, sectors: dict[str, str]) -> _CorrelationWindow:
    prefix = f"{timeframe}/".encode()
    stored = {key[len(prefix):]: value for key, value in states.stored_items() if key.startswith(prefix)}

    def decoded(name: bytes, decoder: msgspec.msgpack.Decoder, default: Callable[[], Any]) -> Any:
        return states.decoded(prefix + name, stored[name], decoder.decode, default) if name in stored else default()

    core = Correlations(
        _correlation_config(settings, timeframe), decoded(b"core", _correlation_state_decoder, lambda: None), sectors=sectors
    )
    latest = decoded(b"latest", _latest_decoder, dict)
    open_bars = {int(ts): decoded(ts, _open_bars_decoder, dict) for ts in stored if ts.isdigit()}
    return _CorrelationWindow(timeframe, core, {ts: bars for ts, bars in open_bars.items() if bars}, latest)


def _encode_correlation_state(value: Any) -> bytes:
    """A timeframe's core is encoded from its snapshot, taken when it is written."""
    return msgspec.msgpack.encode(value.snapshot_state() if isinstance(value, Correlations) else value)


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


def _decode(decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder, value: bytes | None) -> Any:
    """Our own topics carry our own records; anything else a producer put there is refused."""
    try:
        return decoder.decode(value or b"")
    except msgspec.DecodeError as exc:
        raise InvalidMessage("schema", str(exc)) from None


# The worker's state tables and the topic each is partitioned like (its changelog's partitions).
TABLES = (
    ("symbol-record", BARS),
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


def _pack(messages: list[Message], topic: str) -> list[Message]:
    """``topic``'s messages packed per key, in order, into msgpack arrays of at most
    ``_PACK_BYTES``: one message where a batch had hundreds."""
    kept: list[Message] = []
    packs: dict[bytes | None, list[list[bytes]]] = {}
    sizes: dict[bytes | None, int] = {}
    for message in messages:
        if message[0] != topic:
            kept.append(message)
            continue
        key, value = message[1], message[2]
        chunks = packs.setdefault(key, [[]])
        if chunks[-1] and sizes[key] + len(value) > _PACK_BYTES:
            chunks.append([])
            sizes[key] = 0
        chunks[-1].append(value)
        sizes[key] = sizes.get(key, 0) + len(value)
    for key, chunks in packs.items():
        kept += [(topic, key, msgspec.msgpack.encode(chunk), []) for chunk in chunks]
    return kept


class _Labelled(dict):
    """A metric's children by label value, each looked up once."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, label: str) -> Any:
        child = self[label] = self.metric.labels(label)
        return child


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
        # State lives in changelog topics ("memory://"); faust still makes its data
        # directory, which would otherwise land in the working directory.
        datadir=os.path.join(tempfile.gettempdir(), "{conf.id}-data"),
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

    # One agent per key space. Bars, predictions, fills and expiry ticks are all keyed by
    # symbol with the same partition count, so one agent sees a symbol's every input.
    symbol_inputs = app.topic(
        *(settings.topic(t.name) for t in (BARS, PREDICTIONS, FILLS, EXPIRY_TICKS)), partitions=BARS.partitions, **raw
    )
    names = {spec: settings.topic(spec.name) for spec in ALL_TOPICS}
    ticks_topic = topic(EXPIRY_TICKS)
    tables = [app.Table(name, default=bytes, partitions=source.partitions, key_type=bytes, value_type=bytes) for name, source in TABLES]
    pack = msgspec.msgpack.encode
    symbol_records = KeyedStates(tables[0], _record_decoder.decode, pack, SymbolRecord, metrics)
    trade_states = KeyedStates(tables[1], _trades_decoder.decode, pack, lambda: TradeState(TradeAggregatorState()), metrics)
    model_states = KeyedStates(tables[2], _model_state_decoder.decode, pack, ModelPerformanceState, metrics)
    strategy_states = KeyedStates(tables[3], _strategy_state_decoder.decode, pack, StrategyPerformanceState, metrics)
    correlation_states = KeyedStates(tables[4], bytes, _encode_correlation_state, bytes, metrics)
    every_state = (symbol_records, trade_states, model_states, strategy_states, correlation_states)
    outbox = Outbox(settings)
    consumed, produced = _Labelled(metrics.consumed), _Labelled(metrics.produced)
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
    # The expiry clock: per bars partition, the latest bar close seen; the clock is the slowest
    # partition's (of those with bars), so a partition that is behind (a replay, a restart)
    # never expires the predictions of symbols whose bars are merely still on their way.
    latest_close_us: dict[int, int] = {}
    waiting: set[bytes] = set()
    rescan = [False]
    shown_regimes: dict[tuple[str, str], str] = {}

    def reject(event: faust.EventT, exc: InvalidMessage) -> Message:
        message = event.message
        metrics.dlq.labels(message.topic, exc.reason).inc()
        log.warning("rejected: %s", exc, extra={**_where(message), "reason": exc.reason})
        dead = dlq_record(
            key=message.key, value=event.value, reason=exc.reason, detail=exc.detail,
            topic=message.topic, partition=message.partition, offset=message.offset,
        )
        return names[DLQ], dead.key, dead.value, dead.headers

    async def run_batch(
        events: list[faust.EventT],
        handler: Callable[[faust.EventT, list[Message]], None],
        states: tuple[KeyedStates, ...],
        forget: Callable[[bytes | None], None] | None = None,
    ) -> None:
        """Each message through its handler, then the outputs delivered, then the states written.

        Whatever a handler refuses, or fails on, goes to the DLQ. A failure may have
        left its key's state half-changed: the key is forgotten (back to its last
        written state: by default the message key in each of ``states``; ``forget``
        when the states are keyed otherwise) and the batch's earlier messages of that
        key are applied again, their outputs (already queued) discarded. A failure of
        the broker is not the messages' fault: it propagates, and faust's supervisor
        restarts the agent from the last committed offset."""
        out: list[Message] = []
        applied: dict[bytes | None, list[faust.EventT]] = {}
        for event in events:
            message = event.message
            consumed[message.topic].inc()
            mark = len(out)
            try:
                handler(event, out)
            except InvalidMessage as exc:
                del out[mark:]
                out.append(reject(event, exc))
                continue
            except Exception as exc:  # a bug must cost one message, never the stream
                log.exception("internal error on a message; it goes to the DLQ", extra=_where(message))
                del out[mark:]
                if forget is not None:
                    forget(message.key)
                else:
                    for each in states:
                        each.forget(lambda key: key == message.key)
                for earlier in applied.get(message.key, ()):
                    handler(earlier, [])
                out.append(reject(event, InvalidMessage("internal", f"{type(exc).__name__}: {str(exc)[:500]}")))
                continue
            applied.setdefault(message.key, []).append(event)
        if correlated:
            out = _pack(out, by_timeframe_topic)
        await outbox.deliver(out)
        for topic_name, _, _, _ in out:
            produced[topic_name].inc()
        for each in states:
            each.write()

    def batches(stream: faust.StreamT) -> Any:
        return stream.take_events(settings.worker_batch_events, within=settings.worker_batch_within_s)

    def keyed(message: faust.types.Message, symbol: str) -> bytes:
        key = symbol.encode()
        if message.key != key:
            # State is partitioned by key: a record keyed otherwise would split a symbol's history.
            raise InvalidMessage("invalid_value", f"record key {message.key!r} is not the symbol {symbol!r}")
        return key

    def show_regimes(symbol: str, state: SymbolState) -> None:
        """The regime gauge of each timeframe whose regime this worker has not shown yet."""
        for timeframe, frame in state.frames.items():
            regime = frame.regime.regime
            if regime is not None and shown_regimes.get((symbol, timeframe)) != regime:
                shown_regimes[symbol, timeframe] = regime
                for name in REGIME_NAMES:
                    metrics.regime.labels(symbol, timeframe, name).set(1 if name == regime else 0)

    conditions_topic, regimes_topic, by_timeframe_topic = names[CONDITIONS], names[REGIMES], names[CONDITIONS_BY_TIMEFRAME]

    def fresh(record: SymbolRecord, message: faust.types.Message) -> bool:
        """False for a message the record already holds (redelivered after a crash)."""
        if record.offsets.get(message.topic, -1) >= message.offset:
            metrics.duplicates.labels(message.topic).inc()
            return False
        return True

    def applied(key: bytes, record: SymbolRecord, message: faust.types.Message) -> None:
        record.offsets[message.topic] = message.offset
        symbol_records.changed(key, message.partition)

    def on_bar(event: faust.EventT, out: list[Message]) -> None:
        message = event.message
        bar = bar_codec.decode(event.value, headers=message.headers or ())
        key = keyed(message, bar.symbol)
        record = symbol_records.get(key)
        if not fresh(record, message):
            return
        outputs, redelivered = processor.process(record.bars, bar)
        if not redelivered:
            show_regimes(bar.symbol, record.bars)
        for kind, value in outputs:
            if kind == "regime":
                out.append((regimes_topic, key, value, []))
                continue
            out.append((conditions_topic, key, value, []))
            if correlated:
                timeframe = _timeframe_of.decode(value).timeframe
                if timeframe in correlated:
                    out.append((by_timeframe_topic, timeframe.encode(), value, []))
        if bar.timeframe == settings.base_timeframe:
            close_us = (bar.ts - EPOCH) // _US + base_period_us
            partition = message.partition
            latest_close_us[partition] = max(latest_close_us.get(partition, 0), close_us)
            regime = record.bars.frames[bar.timeframe].regime.regime
            queue_outcomes(key, record.predictions, validator.on_close(record.predictions, close_us, bar.close, regime), out)
            if record.book.trades:
                for row in builder.on_bar(record.book, bar):
                    out.append((names[TRADE_OUTCOMES], row.strategy_id.encode(), encode(row), []))
        applied(key, record, message)

    def queue_outcomes(key: bytes, state: PredictionState, outcomes: list, out: list[Message]) -> None:
        (waiting.add if state.pending else waiting.discard)(key)
        for outcome in outcomes:
            out.append((names[OUTCOMES], outcome.model_version.encode(), encode(outcome), []))

    def on_prediction(event: faust.EventT, out: list[Message]) -> None:
        prediction = prediction_codec.decode(event.value, headers=event.message.headers or ())
        key = keyed(event.message, prediction.symbol)
        record = symbol_records.get(key)
        if not fresh(record, event.message):
            return
        result = validator.on_prediction(record.predictions, prediction)
        if result.duplicate:
            metrics.duplicates.labels(event.message.topic).inc()
        queue_outcomes(key, record.predictions, result.outputs, out)
        applied(key, record, event.message)

    def on_fill(event: faust.EventT, out: list[Message]) -> None:
        fill = fill_codec.decode(event.value, headers=event.message.headers or ())
        key = keyed(event.message, fill.symbol)
        record = symbol_records.get(key)
        if not fresh(record, event.message):
            return
        result = builder.on_fill(record.book, fill)
        if result.duplicate:
            metrics.duplicates.labels(event.message.topic).inc()
        out.append((names[TRADE_OUTCOMES], result.row.strategy_id.encode(), encode(result.row), []))
        applied(key, record, event.message)

    def on_tick(event: faust.EventT, out: list[Message]) -> None:
        key = event.message.key
        try:
            watermark = EPOCH + int(event.value) * _US
        except (TypeError, ValueError, OverflowError):
            raise InvalidMessage("schema", "an expiry tick is a decimal epoch-microseconds watermark") from None
        record = symbol_records.get(key)
        if not fresh(record, event.message):
            return
        queue_outcomes(key, record.predictions, validator.expire(record.predictions, watermark), out)
        applied(key, record, event.message)

    handlers = {names[BARS]: on_bar, names[PREDICTIONS]: on_prediction, names[FILLS]: on_fill, names[EXPIRY_TICKS]: on_tick}

    def on_symbol_input(event: faust.EventT, out: list[Message]) -> None:
        handlers[event.message.topic](event, out)

    @app.on_rebalance_complete.connect
    async def on_assigned(sender: object, **kwargs: object) -> None:
        metrics.rebalances.inc()
        metrics.set_ready(True)
        rescan[0] = True
        latest_close_us.clear()
        correlation_windows.clear()
        for states in every_state:  # another worker may have changed them meanwhile
            states.release()

    @app.on_before_shutdown.connect
    async def close_outbox(sender: object, **kwargs: object) -> None:
        await outbox.stop()

    @app.agent(topic(CONDITIONS_BY_TIMEFRAME))
    async def correlations(stream: faust.StreamT) -> None:
        """One core per timeframe, fed a timestamp once every active symbol has moved past it.

        Symbols arrive from different partitions at different paces, so bars wait per
        timestamp (one table key each, so a batch writes what it touched, not the
        backlog) until the watermark, the oldest latest-bar time of the symbols heard
        from within ``correlation_quiet_bars``, passes them."""
        async for events in batches(stream):
            await run_batch(events, on_conditions, (correlation_states,), forget_correlations)

    def forget_correlations(key: bytes | None) -> None:
        """Rebuilt from the table, not from a half-applied step."""
        prefix = (key or b"") + b"/"
        correlation_windows.pop((key or b"").decode("utf-8", "replace"), None)
        correlation_states.forget(lambda k: k.startswith(prefix))

    def on_conditions(event: faust.EventT, out: list[Message]) -> None:
        """A pack's bars join their open timestamps; then the timestamps every active symbol
        has moved past are closed (once per pack: each symbol's bars arrive in order, so
        no bar of the pack could still join a timestamp that closes)."""
        # All decoded first: a refused message must leave the state untouched.
        conditions = [_decode(_condition_decoder, value) for value in _decode(_packed_decoder, event.value)]
        partition = event.message.partition
        touched: dict[str, _CorrelationWindow] = {}
        for condition in conditions:
            timeframe = condition.timeframe
            if timeframe not in correlated:
                continue
            window = correlation_windows.get(timeframe)
            if window is None:
                window = correlation_windows[timeframe] = _restore_window(correlation_states, settings, timeframe, sectors)
            ts_us = (condition.timestamp - EPOCH) // _US
            if window.core.state.timestamps and ts_us <= window.core.state.timestamps[-1]:
                metrics.late_bars.labels(event.message.topic).inc()
                continue
            bars = window.open.setdefault(ts_us, {})
            bars[condition.symbol] = (condition.open, condition.high, condition.low, condition.close, condition.volume)
            correlation_states.changed(window.key(ts_us), partition, bars)
            if window.latest.get(condition.symbol, -1) < ts_us:
                window.latest[condition.symbol] = ts_us
                correlation_states.changed(window.key("latest"), partition, window.latest)
            touched[timeframe] = window
        for timeframe, window in touched.items():
            for stepped in window.closable(correlation_quiet_us[timeframe]):
                close_timestamp(window, stepped, partition, out)

    def close_timestamp(window: _CorrelationWindow, stepped: int, partition: int, out: list[Message]) -> None:
        timeframe = window.timeframe
        bars = window.open.pop(stepped)
        for record in window.core.step(stepped, {symbol: bar[3] for symbol, bar in bars.items()}):
            out.append((names[CORRELATIONS], timeframe.encode(), encode(record), []))
        for symbol, (spy, sector) in window.core.context(min(window.core.config.windows)).items():
            o, h, low, c, v = bars[symbol]
            context = CorrelationContext(
                symbol=symbol, timeframe=timeframe, timestamp=EPOCH + stepped * _US,
                open=o, high=h, low=low, close=c, volume=v, spy_correlation=spy, sector_correlation=sector,
            )
            out.append((names[CORRELATION_CONTEXT], symbol.encode(), encode(context), []))
        correlation_states.delete(window.key(stepped), partition)
        correlation_states.changed(window.key("core"), partition, window.core)

    @app.task
    async def broker_health() -> None:
        await watch_broker(metrics, settings.kafka_bootstrap)

    @app.timer(interval=10.0)
    async def expiry_clock() -> None:
        """Symbols that stopped trading still see time pass: a tick through their own partition."""
        if rescan[0]:  # the partitions changed: find the pending predictions they hold
            rescan[0] = False
            waiting.clear()
            waiting.update(key for key, _ in symbol_records.stored_items() if symbol_records.get(key).predictions.pending)
        if not waiting or not latest_close_us:
            return
        watermark = min(latest_close_us.values())
        for key in list(waiting):
            await ticks_topic.send(key=key, value=str(watermark).encode())

    @app.agent(symbol_inputs)
    async def symbols(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            await run_batch(events, on_symbol_input, (symbol_records,))

    @app.agent(topic(TRADES))
    async def candles(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            await run_batch(events, on_trade, (trade_states,))

    def on_trade(event: faust.EventT, out: list[Message]) -> None:
        trade = trade_codec.decode(event.value, headers=event.message.headers or ())
        key = keyed(event.message, trade.symbol)
        state = trade_states.get(key)
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
            trade_states.changed(key, event.message.partition)
        for value in closed:
            out.append((names[BARS], key, value, []))

    @app.agent(topic(OUTCOMES))
    async def model_statistics(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            await run_batch(events, on_outcome, (model_states,))

    def on_outcome(event: faust.EventT, out: list[Message]) -> None:
        outcome = _decode(_outcome_decoder, event.value)
        key = event.message.key
        state = model_states.get(key)
        row = model_performance.add(state, outcome)
        if row is not None:
            model_states.changed(key, event.message.partition)
            out.append((names[MODEL_PERFORMANCE], key, encode(row), []))

    @app.agent(topic(TRADE_OUTCOMES))
    async def strategy_statistics(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            await run_batch(events, on_trade_outcome, (strategy_states,))

    def on_trade_outcome(event: faust.EventT, out: list[Message]) -> None:
        trade = _decode(_trade_decoder, event.value)
        key = event.message.key
        state = strategy_states.get(key)
        rows = strategy_performance.add(state, trade)
        if rows:
            strategy_states.changed(key, event.message.partition)
        for row in rows:
            out.append((names[STRATEGY_PERFORMANCE], key, encode(row), []))

    return app
