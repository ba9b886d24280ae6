"""The sink loop against the real broker and database: idempotent writes, bisected data errors."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from tickwire.schemas.market import Condition
from tickwire.schemas.metrics import Metrics
from tickwire.schemas.settings import Settings
from tickwire.schemas.signals import ModelPredictionRow
from tickwire.schemas.tables import MARKET_CONDITIONS, MODEL_PREDICTIONS
from tickwire.schemas.topics import CONDITIONS, DLQ, OUTCOMES
from tickwire.sinks.consumer import TopicSink
from tickwire.sinks.errors import ConflictingKey
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


async def test_writer_stores_each_bar_in_its_timeframes_table_and_merges_across_both(market_conditions_writer):
    writer, conn = market_conditions_writer
    bars = [condition("D", i) for i in range(3)] + [
        msgspec.structs.replace(condition("D", 0), timeframe=timeframe, timestamp=T0 + timedelta(days=i))
        for timeframe in ("1d", "5d", "1h") for i in range(2)
    ]
    rows = [msgspec.structs.astuple(bar) for bar in bars]
    assert await writer.write(conn, rows) == 9
    where = "WHERE symbol = 'D' GROUP BY timeframe ORDER BY timeframe"
    intraday = await conn.fetch(f"SELECT timeframe, count(*) FROM market_conditions_intraday {where}")
    daily = await conn.fetch(f"SELECT timeframe, count(*) FROM market_conditions_daily {where}")
    assert [tuple(r) for r in intraday] == [("1h", 2), ("1m", 3)] and [tuple(r) for r in daily] == [("1d", 2), ("5d", 2)]
    assert await writer.write(conn, rows) == 0  # replayed: the merge, in both tables, changes nothing
    changed = [msgspec.structs.astuple(msgspec.structs.replace(bar, vwap=10.25)) for bar in bars[3:5] + bars[:1]]
    assert await writer.write(conn, changed) == 3
    assert await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'D' AND vwap = 10.25") == 3


def prediction(symbol: str, prediction_id: uuid.UUID, predicted_at: datetime = T0, **values) -> tuple:
    return msgspec.structs.astuple(ModelPredictionRow(
        prediction_id=prediction_id, model_version="m-1", model_type="toy", symbol=symbol, predicted_at=predicted_at,
        prediction_horizon_minutes=5, predicted_direction="LONG", confidence_score=0.6, predicted_volatility=None,
        feature_vector={}, feature_hash="h", **values,
    ))


async def test_a_prediction_id_stored_for_one_symbol_is_refused_for_another_not_merged_over_it(isolated):
    writer = TableWriter(MODEL_PREDICTIONS)
    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        await writer.prepare(conn)
        shared, other = uuid.uuid4(), uuid.uuid4()
        assert await writer.write(conn, [prediction("AAPL", shared)]) == 1
        with pytest.raises(ConflictingKey, match="symbol MSFT has the id of a row stored for AAPL"):
            await writer.write(conn, [prediction("MSFT", shared, actual_direction="SHORT", validated_at=T0), prediction("MSFT", other)])
        with pytest.raises(ConflictingKey, match="stored for AAPL"):  # a later time is no way round it
            await writer.write(conn, [prediction("MSFT", shared, predicted_at=T0 + timedelta(days=6))])
        with pytest.raises(ConflictingKey, match="two symbols in one batch"):
            await writer.write(conn, [prediction("TSLA", other), prediction("NVDA", other, predicted_at=T0 + timedelta(hours=1))])
        stored = await conn.fetch("SELECT symbol, actual_direction FROM model_predictions")
        assert [tuple(r) for r in stored] == [("AAPL", None)]  # nothing merged over the stored row, nothing half-written
        assert await writer.write(conn, [prediction("AAPL", shared, actual_direction="LONG", validated_at=T0)]) == 1
        # Beyond the window the check would have to read every chunk since the table began: not refused.
        assert await writer.write(conn, [prediction("MSFT", shared, predicted_at=T0 + timedelta(days=8))]) == 1
    finally:
        await conn.close()


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

    metrics = Metrics(CollectorRegistry())
    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        async def written():
            return await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'BIS'") >= 37

        async with sinking(isolated, CONDITIONS, MARKET_CONDITIONS, producer, metrics):
            assert await wait_for(written, timeout_s=60)
        assert await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'BIS'") == 37
        minutes = {r[0] for r in await conn.fetch(
            "SELECT extract(epoch FROM timestamp - $1)::int / 60 FROM market_conditions WHERE symbol = 'BIS'", T0
        )}
        assert minutes == set(range(40)) - bad_index
        assert metrics.is_ready
    finally:
        await conn.close()
    found = await dead_letters(isolated, b"BIS", 4)
    await producer.stop()
    reasons = sorted(dict(r.headers)["tickwire.reason"].decode() for r in found)
    assert reasons == ["database_rejected", "database_rejected", "database_rejected", "empty"]
    rejected = [msgspec.json.decode(r.value, type=Condition) for r in found if r.value]
    assert sorted(c.timestamp for c in rejected) == [T0 + timedelta(minutes=i) for i in sorted(bad_index)]
    details = {msgspec.json.decode(r.value, type=Condition).volume: dict(r.headers)["tickwire.detail"] for r in found if r.value}
    assert details.pop(2**63 + 5).startswith((b"DataError", b"OverflowError"))  # the client's, before any SQL
    assert all(b"22003" in detail for detail in details.values())


async def test_the_sink_dead_letters_a_prediction_whose_id_another_symbol_has(isolated):
    await ensure_topics(isolated)
    shared = uuid.uuid4()
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all")
    await producer.start()
    for row in (prediction("DUPA", shared), prediction("DUPB", shared), prediction("DUPB", uuid.uuid4())):
        record = dict(zip(MODEL_PREDICTIONS.columns, row))
        await producer.send(isolated.topic(OUTCOMES.name), key=b"m-1", value=msgspec.json.encode(record))
    await producer.flush()
    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        async def written():
            return await conn.fetchval("SELECT count(*) FROM model_predictions WHERE symbol LIKE 'DUP%'") >= 2

        async with sinking(isolated, OUTCOMES, MODEL_PREDICTIONS, producer, Metrics(CollectorRegistry())):
            assert await wait_for(written, timeout_s=60)
        stored = await conn.fetch("SELECT symbol, prediction_id FROM model_predictions WHERE symbol LIKE 'DUP%' ORDER BY symbol")
        assert [r["symbol"] for r in stored] == ["DUPA", "DUPB"] and stored[0]["prediction_id"] == shared
    finally:
        await conn.close()
    (dead,) = await dead_letters(isolated, b"m-1", 1)
    await producer.stop()
    headers = dict(dead.headers)
    assert headers["tickwire.reason"] == b"conflicting_id" and b"stored for DUPA" in headers["tickwire.detail"]
    assert msgspec.json.decode(dead.value)["symbol"] == "DUPB"


@contextlib.asynccontextmanager
async def sinking(isolated, spec, table, producer, metrics):
    """A ``TopicSink`` of ``spec`` into ``table`` running for the block."""
    writer = TableWriter(table)
    pool = await asyncpg.create_pool(**isolated.pg_options(), min_size=1, max_size=2, init=writer.prepare)
    consumer = AIOKafkaConsumer(
        isolated.topic(spec.name), **isolated.kafka_options(), group_id=f"sink-test-{spec.name}",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
    await consumer.start()
    sink = TopicSink(settings=isolated, topic=spec, table=table, pool=pool, consumer=consumer, producer=producer, metrics=metrics)
    task = asyncio.create_task(sink.run())
    try:
        yield sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await pool.close()


async def dead_letters(isolated, key: bytes, count: int) -> list:
    """The DLQ's records of ``key``, once ``count`` are there (or after 10 s)."""
    dlq = AIOKafkaConsumer(isolated.topic(DLQ.name), **isolated.kafka_options(), auto_offset_reset="earliest")
    await dlq.start()
    try:
        found = []
        for _ in range(20):
            for recs in (await dlq.getmany(timeout_ms=500)).values():
                found.extend(r for r in recs if r.key == key)
            if len(found) >= count:
                break
        return found
    finally:
        await dlq.stop()


async def test_records_of_a_partition_assigned_while_a_slow_write_is_polled_are_fetched_again(monkeypatch):
    """While a write is slow the sink polls its paused partitions only to stay in the group;
    a partition assigned meanwhile is not paused, and what that poll returns must be fetched
    again, not dropped (its later offsets would be committed over the hole)."""
    from aiokafka import TopicPartition
    from aiokafka.structs import ConsumerRecord

    from tickwire.sinks import consumer as module

    tp = TopicPartition("md.conditions.v1", 4)

    class Consumer:
        paused_now: set = set()
        sought: list = []

        def assignment(self):
            return {TopicPartition("md.conditions.v1", 0)}  # partition 4 came in a rebalance, unpaused

        def pause(self, *tps):
            self.paused_now |= set(tps)

        def paused(self):
            return set(self.paused_now)

        def resume(self, *tps):
            self.paused_now -= set(tps)

        async def getmany(self, timeout_ms=0):
            return {tp: [ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"{}", None, 1, 2, []) for offset in (70, 71)]}

        def seek(self, where, offset):
            self.sought.append((where, offset))

    monkeypatch.setattr(module, "_PAUSE_AFTER_S", 0.01)
    sink = TopicSink(settings=Settings(), topic=CONDITIONS, table=MARKET_CONDITIONS, pool=None, consumer=Consumer(),
                     producer=None, metrics=Metrics(CollectorRegistry()), max_retry_backoff_s=0.1)
    sink._report_lag = lambda: asyncio.sleep(0)
    await sink._wait_polling(asyncio.ensure_future(asyncio.sleep(0.05)))
    assert Consumer.sought and set(Consumer.sought) == {(tp, 70)} and not Consumer.paused_now


async def test_a_batch_written_as_the_group_rebalanced_is_left_uncommitted_and_the_sink_goes_on():
    """The replica test's sinks died of this: a batch read before a rebalance committed
    after it (IllegalStateError for a partition moved away, CommitFailedError for one kept
    under a new generation) ended the process, and with it every table's pipeline."""
    from aiokafka import TopicPartition
    from aiokafka.errors import CommitFailedError

    kept, moved = TopicPartition("md.conditions.v1", 0), TopicPartition("md.conditions.v1", 1)

    class Consumer:
        commits: list = []
        refuse = False

        def assignment(self):
            return {kept}

        async def commit(self, offsets):
            if self.refuse:
                raise CommitFailedError("the group has already rebalanced")
            self.commits.append(offsets)

    consumer = Consumer()
    sink = TopicSink(settings=Settings(), topic=CONDITIONS, table=MARKET_CONDITIONS, pool=None, consumer=consumer,
                     producer=None, metrics=Metrics(CollectorRegistry()))
    sink._report_lag = lambda: asyncio.sleep(0)
    await sink._commit({kept: 10, moved: 20})
    assert [set(c) for c in Consumer.commits] == [{kept}] and sink._committed == {kept: 10}
    consumer.refuse = True
    await sink._commit({kept: 30})  # does not raise
    assert sink._committed == {kept: 10}
