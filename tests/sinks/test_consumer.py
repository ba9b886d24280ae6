"""The sink loop against the real broker and database: idempotent writes, bisected data errors."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from tickwire.schemas.market import Condition
from tickwire.schemas.metrics import Metrics
from tickwire.schemas.tables import MARKET_CONDITIONS
from tickwire.schemas.topics import CONDITIONS, DLQ
from tickwire.sinks.consumer import TopicSink
from tickwire.sinks.postgres import TableWriter
from tickwire.streams.topics import ensure_topics
from tests.conftest import wait_for

pytestmark = pytest.mark.integration
T0 = datetime(2026, 4, 1, tzinfo=timezone.utc)


def condition(symbol: str, i: int, **values) -> Condition:
    return Condition(
        symbol=symbol, timeframe="1m", timestamp=T0 + timedelta(minutes=i),
        open=10.0, high=11.0, low=9.0, close=10.5, volume=100, **values,
    )


@pytest.fixture
async def market_conditions_writer(isolated):
    """A ``market_conditions`` writer and a connection prepared for it (its staging table)."""
    writer = TableWriter(MARKET_CONDITIONS)
    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        await writer.prepare(conn)
        yield writer, conn
    finally:
        await conn.close()


async def test_writer_merges_idempotently_and_dedupes_within_a_batch(market_conditions_writer):
    writer, conn = market_conditions_writer
    rows = [msgspec.structs.astuple(condition("W", i)) for i in range(100)]
    assert await writer.write(conn, rows + rows[:10]) == 100
    assert await writer.write(conn, rows) == 0
    assert await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'W'") == 100


async def test_writer_merges_a_batch_whose_plain_insert_meets_existing_keys(market_conditions_writer):
    writer, conn = market_conditions_writer
    first = [msgspec.structs.astuple(condition("M", i)) for i in range(50)]
    assert await writer.write(conn, first) == 50
    # Half of them again with a new vwap, half new keys: the plain insert fails on the
    # first half, and the merge must still update them and insert the rest.
    changed = [msgspec.structs.astuple(condition("M", i, vwap=10.25)) for i in range(25, 75)]
    assert await writer.write(conn, changed) == 50
    stored = await conn.fetch("SELECT vwap FROM market_conditions WHERE symbol = 'M' ORDER BY \"timestamp\"")
    assert [r["vwap"] for r in stored] == [None] * 25 + [Decimal("10.25")] * 50
    # Later batches are merged without trying the plain insert first, and still count
    # only what changed.
    assert await writer.write(conn, changed) == 0
    assert await writer.write(conn, [msgspec.structs.astuple(condition("M", 75))]) == 1


async def test_sink_sends_rows_the_database_refuses_to_the_dlq_and_writes_the_rest(isolated):
    await ensure_topics(isolated)
    topic = isolated.topic(CONDITIONS.name)
    good = [condition("BIS", i, rsi_14=50.0) for i in range(40)]
    refused, unencodable = {7, 23}, 31
    bad_index = refused | {unencodable}
    # rsi_14 is DECIMAL(5, 2): 5000 overflows it, a data error the sink must isolate; a volume
    # past BIGINT cannot even be encoded by the client, and must be isolated all the same.
    records = [msgspec.structs.replace(c, rsi_14=5000.0) if i in refused else c for i, c in enumerate(good)]
    records[unencodable] = msgspec.structs.replace(good[unencodable], volume=2**63 + 5)
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all")
    await producer.start()
    for c in records:
        await producer.send(topic, key=c.symbol.encode(), value=msgspec.json.encode(c))
    await producer.send(topic, key=b"BIS", value=b"")
    await producer.flush()

    writer = TableWriter(MARKET_CONDITIONS)
    pool = await asyncpg.create_pool(**isolated.pg_options(), min_size=1, max_size=2, init=writer.prepare)
    consumer = AIOKafkaConsumer(
        topic, **isolated.kafka_options(), group_id="sink-test", enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    metrics = Metrics(CollectorRegistry())
    sink = TopicSink(
        settings=isolated, topic=CONDITIONS, table=MARKET_CONDITIONS, pool=pool,
        consumer=consumer, producer=producer, metrics=metrics,
    )
    task = asyncio.create_task(sink.run())
    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        async def written():
            return await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'BIS'") >= 37

        assert await wait_for(written, timeout_s=60)
        assert await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'BIS'") == 37
        minutes = {r[0] for r in await conn.fetch(
            "SELECT extract(epoch FROM timestamp - $1)::int / 60 FROM market_conditions WHERE symbol = 'BIS'", T0
        )}
        assert minutes == set(range(40)) - bad_index
        assert metrics.is_ready
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await pool.close()
        await conn.close()

    dlq = AIOKafkaConsumer(isolated.topic(DLQ.name), **isolated.kafka_options(), auto_offset_reset="earliest")
    await dlq.start()
    try:
        found = []
        for _ in range(20):
            for recs in (await dlq.getmany(timeout_ms=500)).values():
                found.extend(r for r in recs if r.key == b"BIS")
            if len(found) >= 4:
                break
    finally:
        await dlq.stop()
        await producer.stop()
    reasons = sorted(dict(r.headers)["tickwire.reason"].decode() for r in found)
    assert reasons == ["database_rejected", "database_rejected", "database_rejected", "empty"]
    rejected = [msgspec.json.decode(r.value, type=Condition) for r in found if r.value]
    assert sorted(c.timestamp for c in rejected) == [T0 + timedelta(minutes=i) for i in sorted(bad_index)]
    details = {msgspec.json.decode(r.value, type=Condition).volume: dict(r.headers)["tickwire.detail"] for r in found if r.value}
    assert details.pop(2**63 + 5).startswith((b"DataError", b"OverflowError"))  # the client's, before any SQL
    assert all(b"22003" in detail for detail in details.values())
