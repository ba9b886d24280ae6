"""The faust app: agents that only move data between topics and the pure cores.

State per symbol lives in a faust Table (changelog-backed, so it survives restarts and
rebalances). A bar whose event time equals the last one seen for its (symbol,
timeframe) is a redelivery: its stored output is sent again, which the idempotent
sinks absorb. An older one is out of order and goes to the DLQ.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import faust
import msgspec

from schemas.codec import Codec, dlq_record
from schemas.errors import InvalidMessage
from schemas.market import Bar, Condition
from schemas.metrics import Metrics
from schemas.settings import Settings
from schemas.topics import BARS, CONDITIONS, DLQ
from streams.indicators import IndicatorState, Indicators

log = logging.getLogger("tickwire.worker")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


class FrameState(msgspec.Struct, array_like=True):
    """One (symbol, timeframe): where it is in event time, its indicators, its last output."""

    last_ts_us: int
    indicators: IndicatorState
    last_output: bytes


class SymbolState(msgspec.Struct, array_like=True):
    frames: dict[str, FrameState] = {}


_state_codec = msgspec.msgpack.Decoder(SymbolState)
_state_encoder = msgspec.msgpack.Encoder()


class BarProcessor:
    """Bar in, condition out, for one symbol's state; no faust in here so it can be tested alone."""

    def __init__(self) -> None:
        self._conditions = msgspec.json.Encoder()

    def process(self, state: SymbolState, bar: Bar) -> tuple[bytes | None, bool]:
        """Return (condition JSON or None, is_redelivery); raise InvalidMessage if out of order."""
        ts_us = (bar.ts - _EPOCH) // _US
        frame = state.frames.get(bar.timeframe)
        if frame is not None:
            if ts_us == frame.last_ts_us:
                return frame.last_output, True
            if ts_us < frame.last_ts_us:
                raise InvalidMessage("out_of_order", f"bar at {bar.ts.isoformat()} is older than the last one seen")
        indicators = Indicators(frame.indicators if frame else None)
        values = indicators.update(bar)
        condition = Condition(
            symbol=bar.symbol,
            timeframe=bar.timeframe,
            timestamp=bar.ts,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            **values,
        )
        output = self._conditions.encode(condition)
        state.frames[bar.timeframe] = FrameState(ts_us, indicators.state, output)
        return output, False





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
    bars_topic = app.topic(settings.topic(BARS.name), partitions=BARS.partitions, **raw)
    conditions_topic = app.topic(settings.topic(CONDITIONS.name), partitions=CONDITIONS.partitions, **raw)
    dlq_topic = app.topic(settings.topic(DLQ.name), partitions=DLQ.partitions, **raw)
    states = app.Table("symbol-state", default=bytes, partitions=BARS.partitions, key_type=bytes, value_type=bytes)
    codec = Codec(Bar, max_message_bytes=settings.max_message_bytes, max_future_skew_s=settings.max_future_skew_s)
    processor = BarProcessor()
    bars_name, conditions_name, dlq_name = bars_topic.get_topic_name(), conditions_topic.get_topic_name(), dlq_topic.get_topic_name()

    @app.on_rebalance_complete.connect
    async def on_assigned(sender: object, **kwargs: object) -> None:
        metrics.set_ready(True)

    @app.agent(bars_topic)
    async def indicators(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            metrics.consumed.labels(bars_name).inc()
            try:
                bar = codec.decode(event.value, headers=message.headers or ())
                key = bar.symbol.encode()
                if message.key != key:
                    # State is partitioned by key: a bar keyed otherwise would split a symbol's history.
                    raise InvalidMessage("invalid_value", f"record key {message.key!r} is not the symbol {bar.symbol!r}")
                stored = states[key]
                state = _state_codec.decode(stored) if stored else SymbolState()
                output, redelivered = processor.process(state, bar)
            except InvalidMessage as exc:
                metrics.dlq.labels(bars_name, exc.reason).inc()
                log.warning(
                    "rejected: %s",
                    exc,
                    extra={"topic": message.topic, "partition": message.partition, "offset": message.offset, "reason": exc.reason},
                )
                dead = dlq_record(
                    key=message.key,
                    value=event.value,
                    reason=exc.reason,
                    detail=exc.detail,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                )
                await dlq_topic.send(key=dead.key, value=dead.value, headers=dead.headers)
                metrics.produced.labels(dlq_name).inc()
                continue
            if not redelivered:
                states[key] = _state_encoder.encode(state)
            await conditions_topic.send(key=key, value=output)
            metrics.produced.labels(conditions_name).inc()

    return app
