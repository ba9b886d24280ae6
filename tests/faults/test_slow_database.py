"""A table locked for a while: the sink's memory stays bounded, lag grows, then drains.

CI size: a 10 s lock; TICKWIRE_FAULT_SCALE=full gives the issue's 20 s.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from tickwire.schemas.market import Condition
from tickwire.schemas.topics import CONDITIONS
from tickwire.streams.topics import ensure_topics
from tests.conftest import wait_for
from tests.integration.test_pipeline import START, sample, scrape

pytestmark = pytest.mark.integration
LOCK_S = 20 if os.environ.get("TICKWIRE_FAULT_SCALE") == "full" else 10
ROWS = 60_000


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def conditions(count: int, offset: int = 0) -> list[Condition]:
    return [
        Condition(symbol=f"SLOW{i % 20}", timeframe="1m", timestamp=START + timedelta(minutes=(offset + i) // 20),
                  open=10.0, high=11.0, low=9.0, close=10.5, volume=100)
        for i in range(offset, offset + count)
    ]


async def publish(settings, rows) -> None:
    producer = AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=20)
    await producer.start()
    encode = msgspec.json.Encoder().encode
    try:
        for row in rows:
            await producer.send(settings.topic(CONDITIONS.name), key=row.symbol.encode(), value=encode(row))
        await producer.flush()
    finally:
        await producer.stop()


def total_lag(metrics: dict, topic: str) -> float:
    return sum(v for (name, labels), v in metrics.items() if name == "tickwire_consumer_lag_messages" and ("topic", topic) in labels)


async def test_a_locked_table_grows_lag_not_memory(isolated, processes):
    await ensure_topics(isolated)
    topic = isolated.topic(CONDITIONS.name)
    processes.extra_env["TICKWIRE_MAX_BATCH_ROWS"] = "2000"
    sink, port = processes.start("sink", "--tables", "market_conditions")
    conn = await asyncpg.connect(**isolated.pg_options())
    count = lambda: conn.fetchval("SELECT count(*) FROM market_conditions")  # noqa: E731

    await publish(isolated, conditions(2_000))
    assert await wait_for(lambda: _at_least(count, 2_000), timeout_s=60, check=processes.check_alive)
    baseline = rss_bytes(sink.pid)

    locker = await asyncpg.connect(**isolated.pg_options())
    lock = locker.transaction()
    await lock.start()
    # EXCLUSIVE blocks the sink's writes, not this test's reads.
    await locker.execute("LOCK TABLE market_conditions IN EXCLUSIVE MODE")
    try:
        await publish(isolated, conditions(ROWS, offset=2_000))
        peak_rss, peak_lag = baseline, 0.0
        for _ in range(LOCK_S * 2):
            await asyncio.sleep(0.5)
            processes.check_alive()
            peak_rss = max(peak_rss, rss_bytes(sink.pid))
            peak_lag = max(peak_lag, total_lag(scrape(port), topic))
        assert await count() == 2_000  # nothing got past the lock
    finally:
        await lock.rollback()
        await locker.close()
    # At most two batches of 2,000 rows are held; 60,000 buffered rows would show.
    assert peak_rss - baseline < 64 * 1024 * 1024, f"sink grew {(peak_rss - baseline) / 2**20:.0f} MiB while blocked"
    assert peak_lag >= ROWS - 3 * 2_000, f"lag only reached {peak_lag}"

    assert await wait_for(lambda: _at_least(count, 2_000 + ROWS), timeout_s=120, check=processes.check_alive)
    assert await wait_for(lambda: _drained(port, topic), timeout_s=30)
    assert await count() == 2_000 + ROWS
    assert sample(scrape(port), "tickwire_ready") == 1
    await conn.close()


async def _at_least(count, n: int) -> bool:
    return await count() >= n


async def _drained(port: int, topic: str) -> bool:
    return total_lag(scrape(port), topic) == 0
