"""Bars -> faust worker -> md.conditions.v1 -> sink -> market_conditions, on the real broker and database."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import datetime, timezone

import asyncpg
import msgspec
import numpy as np
import pytest
import talib
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from tickwire.schemas.market import MultiTimeframeAnalysis
from tickwire.schemas.settings import Settings
from tickwire.schemas.topics import BARS, CONDITIONS, DLQ
from tickwire.streams.topics import ensure_topics
from tickwire.streams.simulator import MarketSimulator
from tickwire.streams.symbol import SymbolProcessor, SymbolState
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)
SYMBOLS = [f"T{i:02d}" for i in range(20)]
encode = msgspec.json.Encoder().encode


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def publish(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(settings.topic(BARS.name), key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
async def pipeline(isolated: Settings, processes):
    await ensure_topics(isolated)
    _, worker_port = processes.start("worker")
    _, sink_port = processes.start("sink")
    conn = await asyncpg.connect(**isolated.pg_options())
    yield isolated, processes, conn, worker_port, sink_port
    await conn.close()


async def row_count(conn, symbols) -> int:
    return await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = ANY($1) AND timeframe = '1m'", symbols)


async def test_10000_bars_become_10000_rows_with_talib_ema_and_replay_changes_nothing(pipeline):
    settings, processes, conn, worker_port, sink_port = pipeline
    bars = list(MarketSimulator(SYMBOLS, seed=11, start=START).bars(500))
    assert len(bars) == 10_000
    messages = [(b.symbol.encode(), encode(b)) for b in bars]
    await publish(settings, messages)

    async def all_written():
        return await row_count(conn, SYMBOLS) >= 10_000

    assert await wait_for(all_written, timeout_s=240, check=processes.check_alive)
    assert await row_count(conn, SYMBOLS) == 10_000

    for symbol in SYMBOLS:
        rows = await conn.fetch(
            "SELECT close::float8 AS close, ema_20::float8 AS ema FROM market_conditions "
            "WHERE symbol = $1 AND timeframe = '1m' ORDER BY timestamp",
            symbol,
        )
        closes = np.array([r["close"] for r in rows])
        ours = np.array([np.nan if r["ema"] is None else r["ema"] for r in rows])
        expected = talib.EMA(closes, timeperiod=20)
        assert np.array_equal(np.isnan(ours), np.isnan(expected)), symbol
        valid = ~np.isnan(expected)
        # DECIMAL(18, 8) keeps 8 decimals: the stored EMA is TA-Lib's to within half a unit of the 8th.
        assert np.max(np.abs(ours[valid] - expected[valid])) <= 0.5e-8 + 1e-12, symbol

    # Each symbol's regime history: its first regime has no previous one, each later one
    # follows the regime before it, and the conditions row of that bar names it.
    history = await conn.fetch(
        "SELECT h.symbol, h.timeframe, h.regime, h.previous_regime, c.detected_regime FROM market_regime_history h "
        "JOIN market_conditions c USING (symbol, timeframe, timestamp) WHERE h.symbol = ANY($1) "
        "ORDER BY h.symbol, h.timeframe, h.timestamp",
        SYMBOLS,
    )
    assert {r["symbol"] for r in history} == set(SYMBOLS)
    previous = {}
    for r in history:
        assert r["previous_regime"] == previous.get((r["symbol"], r["timeframe"]))
        assert r["detected_regime"] == r["regime"]
        previous[(r["symbol"], r["timeframe"])] = r["regime"]

    # Every 5m close of every symbol has its multi-timeframe analysis, the core's.
    want = {}
    processor, states = SymbolProcessor(), {}
    for bar in bars:
        for kind, value in processor.process(states.setdefault(bar.symbol, SymbolState()), bar)[0]:
            if kind == "mtf":
                row = msgspec.json.decode(value, type=MultiTimeframeAnalysis)
                want[row.symbol, row.timestamp] = row

    async def analysed():
        return await conn.fetchval("SELECT count(*) FROM multi_timeframe_analysis WHERE symbol = ANY($1)", SYMBOLS) >= len(want)

    assert len(want) == 20 * 100 and await wait_for(analysed, timeout_s=60, check=processes.check_alive)
    for got in await conn.fetch("SELECT * FROM multi_timeframe_analysis WHERE symbol = ANY($1)", SYMBOLS):
        row = want[got["symbol"], got["timestamp"]]
        assert (got["trigger_timeframe"], got["dominant_direction"], got["agreeing_timeframes"]) == (
            row.trigger_timeframe, row.dominant_direction, row.agreeing_timeframes)
        assert got["alignment_score"] == pytest.approx(row.alignment_score)
        assert msgspec.json.decode(got["timeframes"]) == msgspec.to_builtins(row.timeframes)

    # The same 10,000 bars again: nothing new may appear.
    before = scrape(worker_port)
    await publish(settings, messages)
    consumed_topic = settings.topic(BARS.name)
    target = sample(before, "tickwire_messages_consumed_total", topic=consumed_topic) + 10_000

    async def replay_processed():
        worker = scrape(worker_port)
        sink = scrape(sink_port)
        produced = sample(worker, "tickwire_messages_produced_total", topic=settings.topic(CONDITIONS.name))
        sunk = sample(sink, "tickwire_messages_consumed_total", topic=settings.topic(CONDITIONS.name))
        return sample(worker, "tickwire_messages_consumed_total", topic=consumed_topic) >= target and sunk >= produced

    assert await wait_for(replay_processed, timeout_s=240, check=processes.check_alive)
    await asyncio.sleep(1)
    assert await row_count(conn, SYMBOLS) == 10_000


async def test_metrics_show_the_flow_and_lag_drains_to_zero(pipeline):
    settings, processes, conn, worker_port, sink_port = pipeline
    conditions = settings.topic(CONDITIONS.name)

    async def drained():
        lags = [v for (name, labels), v in scrape(sink_port).items() if name == "tickwire_consumer_lag_messages" and ("topic", conditions) in labels]
        return len(lags) == CONDITIONS.partitions and max(lags) == 0

    assert await wait_for(drained, timeout_s=60, check=processes.check_alive)
    worker, sink = scrape(worker_port), scrape(sink_port)
    rows = await conn.fetchval("SELECT count(*) FROM market_conditions")
    # Inserted rows, plus the correlation context's updates of rows the conditions created.
    assert sample(sink, "tickwire_rows_written_total", table="market_conditions") >= rows
    assert sample(worker, "tickwire_messages_produced_total", topic=conditions) >= rows
    assert sample(sink, "tickwire_messages_consumed_total", topic=conditions) >= rows
    assert sample(sink, "tickwire_flush_duration_seconds_count", table="market_conditions") > 0
    assert sample(sink, "tickwire_batch_rows_sum", table="market_conditions") >= rows
    assert sample(sink, "tickwire_publish_latency_seconds_count", stage="sink:market_conditions") > 0
    assert sample(sink, "tickwire_event_latency_seconds_count", stage="sink:market_conditions") > 0
    for process in (worker, sink):
        assert sample(process, "tickwire_rebalances_total") >= 1
        assert sample(process, "tickwire_ready") == 1


async def read_dlq(settings: Settings, key: bytes, count: int, timeout_s: float = 60) -> list:
    consumer = AIOKafkaConsumer(settings.topic(DLQ.name), **settings.kafka_options(), auto_offset_reset="earliest")
    await consumer.start()
    records = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(records) < count and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for recs in batch.values():
                records.extend(r for r in recs if r.key == key)
    finally:
        await consumer.stop()
    return records


async def test_bad_bars_go_to_the_dlq_and_good_ones_around_them_are_written(pipeline):
    settings, processes, conn, _, _ = pipeline
    good = [b for b in MarketSimulator(["DLQA"], seed=5, start=START).bars(30)]
    missing_close = msgspec.json.decode(encode(good[0]))
    del missing_close["close"]
    inverted = msgspec.structs.replace(good[0], ts=datetime(2026, 3, 3, tzinfo=timezone.utc))
    inverted_json = msgspec.json.decode(encode(inverted))
    inverted_json["high"], inverted_json["low"] = inverted_json["low"], inverted_json["high"]
    bad = [b"{not json", encode(missing_close), encode(inverted_json)]
    messages = [(b.symbol.encode(), encode(b)) for b in good[:10]]
    messages += [(b"DLQA", value) for value in bad[:2]]
    messages += [(b.symbol.encode(), encode(b)) for b in good[10:20]]
    messages += [(b"DLQA", bad[2])]
    messages += [(b.symbol.encode(), encode(b)) for b in good[20:]]
    await publish(settings, messages)

    dlq = await read_dlq(settings, b"DLQA", 3)
    reasons = sorted(dict(r.headers)["tickwire.reason"].decode() for r in dlq)
    assert reasons == ["invalid_value", "not_json", "schema"]
    assert sorted(r.value for r in dlq) == sorted(bad)
    for record in dlq:
        headers = dict(record.headers)
        assert headers["tickwire.source.topic"].decode() == settings.topic(BARS.name)
        assert int(headers["tickwire.source.offset"]) >= 0
    schema_detail = next(dict(r.headers)["tickwire.detail"] for r in dlq if dict(r.headers)["tickwire.reason"] == b"schema")
    assert b"close" in schema_detail

    async def good_written():
        return await row_count(conn, ["DLQA"]) >= 30

    assert await wait_for(good_written, timeout_s=120, check=processes.check_alive)
    assert await row_count(conn, ["DLQA"]) == 30
    processes.check_alive()
