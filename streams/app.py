"""The faust app: agents that only move data between topics and the pure cores.

State per symbol lives in faust Tables (changelog-backed, so it survives restarts and
rebalances), as msgpack of the cores' own state Structs. Every agent follows the same
steps: decode and validate, run the core on the key's state, store the state, send the
outputs; a message the core refuses goes to the DLQ with its reason and source offset.
"""

from __future__ import annotations

import logging
from typing import Callable

import faust
import msgspec

from schemas.codec import Codec, dlq_record
from schemas.errors import InvalidMessage
from schemas.market import Bar
from schemas.metrics import Metrics, watch_broker
from schemas.settings import Settings
from schemas.topics import BARS, CONDITIONS, DLQ, REGIMES, TRADES
from schemas.trades import Trade
from streams.candles import TradeAggregator, TradeAggregatorState
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

    def topic(name: str, partitions: int) -> faust.TopicT:
        return app.topic(settings.topic(name), partitions=partitions, **raw)

    bars_topic, trades_topic = topic(BARS.name, BARS.partitions), topic(TRADES.name, TRADES.partitions)
    outputs = {"condition": topic(CONDITIONS.name, CONDITIONS.partitions), "regime": topic(REGIMES.name, REGIMES.partitions)}
    dlq_topic = topic(DLQ.name, DLQ.partitions)
    symbol_states = app.Table("symbol-state", default=bytes, partitions=BARS.partitions, key_type=bytes, value_type=bytes)
    trade_states = app.Table("trade-state", default=bytes, partitions=TRADES.partitions, key_type=bytes, value_type=bytes)
    limits = {"max_message_bytes": settings.max_message_bytes, "max_future_skew_s": settings.max_future_skew_s}
    bar_codec, trade_codec = Codec(Bar, **limits), Codec(Trade, **limits)
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
    state_sizes: dict[str, dict[bytes, int]] = {"symbol-state": {}, "trade-state": {}}

    def store(table: faust.Table, key: bytes, value: bytes) -> None:
        table[key] = value
        sizes = state_sizes[table.name]
        sizes[key] = len(value)
        metrics.state_bytes.labels(table.name).set(sum(sizes.values()))

    async def reject(event: faust.EventT, exc: InvalidMessage) -> None:
        message = event.message
        metrics.dlq.labels(message.topic, exc.reason).inc()
        log.warning(
            "rejected: %s", exc,
            extra={"topic": message.topic, "partition": message.partition, "offset": message.offset, "reason": exc.reason},
        )
        dead = dlq_record(
            key=message.key, value=event.value, reason=exc.reason, detail=exc.detail,
            topic=message.topic, partition=message.partition, offset=message.offset,
        )
        await dlq_topic.send(key=dead.key, value=dead.value, headers=dead.headers)
        metrics.produced.labels(dlq_topic.get_topic_name()).inc()

    def keyed(message: faust.types.Message, symbol: str) -> bytes:
        key = symbol.encode()
        if message.key != key:
            # State is partitioned by key: a record keyed otherwise would split a symbol's history.
            raise InvalidMessage("invalid_value", f"record key {message.key!r} is not the symbol {symbol!r}")
        return key

    def show_regime(bar: Bar, regime: str | None, timeframe: str) -> None:
        if regime is not None:
            for name in REGIME_NAMES:
                metrics.regime.labels(bar.symbol, timeframe, name).set(1 if name == regime else 0)

    @app.on_rebalance_complete.connect
    async def on_assigned(sender: object, **kwargs: object) -> None:
        metrics.rebalances.inc()
        metrics.set_ready(True)

    @app.task
    async def broker_health() -> None:
        await watch_broker(metrics, settings.kafka_bootstrap)

    @app.agent(bars_topic)
    async def indicators(stream: faust.StreamT) -> None:
        async for event in stream.events():
            metrics.consumed.labels(event.message.topic).inc()
            try:
                bar = bar_codec.decode(event.value, headers=event.message.headers or ())
                key = keyed(event.message, bar.symbol)
                stored = symbol_states[key]
                state = state_decoder.decode(stored) if stored else SymbolState()
                produced, redelivered = processor.process(state, bar)
            except InvalidMessage as exc:
                await reject(event, exc)
                continue
            if not redelivered:
                store(symbol_states, key, state_encoder.encode(state))
                for timeframe, frame in state.frames.items():
                    show_regime(bar, frame.regime.regime, timeframe)
            for kind, value in produced:
                await outputs[kind].send(key=key, value=value)
                metrics.produced.labels(outputs[kind].get_topic_name()).inc()

    @app.agent(trades_topic)
    async def candles(stream: faust.StreamT) -> None:
        bars_name = bars_topic.get_topic_name()
        encode: Callable[[Bar], bytes] = msgspec.json.Encoder().encode
        async for event in stream.events():
            metrics.consumed.labels(event.message.topic).inc()
            try:
                trade = trade_codec.decode(event.value, headers=event.message.headers or ())
                key = keyed(event.message, trade.symbol)
                stored = trade_states[key]
                state = _trades_decoder.decode(stored) if stored else TradeState(TradeAggregatorState())
                aggregator = TradeAggregator(state.aggregator, timeframe=settings.base_timeframe)
                duplicates = aggregator.state.duplicates
                closed = [encode(bar) for bar in aggregator.update(trade)]
            except InvalidMessage as exc:
                await reject(event, exc)
                continue
            if aggregator.state.duplicates > duplicates:
                metrics.duplicates.labels(event.message.topic).inc()
                if trade.trade_id != state.last_trade_id:
                    continue
                closed = state.outputs  # a redelivery: send again what it produced
            else:
                state.last_trade_id, state.outputs = trade.trade_id, closed
                store(trade_states, key, msgspec.msgpack.encode(state))
            for value in closed:
                await bars_topic.send(key=key, value=value)
                metrics.produced.labels(bars_name).inc()

    return app
