"""Thousands of symbols through every stage: no crash, every symbol's rows present, no
changelog record above the state chunk bound, every symbol's benchmark correlation and
the pairwise correlations kept to their universe. CI size: 3,000 symbols x 20 bars;
TICKWIRE_FAULT_SCALE=full: 10,000 x 30.

At 2,000 symbols the correlation stage's state record passed the broker's 1 MiB limit and
the worker died (MessageSizeTooLargeError, issue 15).
"""

from __future__ import annotations

import os

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from tickwire.streams.simulator import MarketSimulator, default_symbols
from tickwire.streams.topics import ensure_topics
from tickwire.streams.worker.app import changelog_topics
from tickwire.streams.worker.state import MAX_RECORD_BYTES
from tests.conftest import wait_for
from tests.faults.test_outages import publish
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration
FULL = os.environ.get("TICKWIRE_FAULT_SCALE") == "full"
SYMBOLS, STEPS = (10_000, 30) if FULL else (3_000, 20)


async def test_thousands_of_symbols_all_land_and_no_state_record_outgrows_its_bound(isolated, processes):
    await ensure_topics(isolated)
    symbols = default_symbols(SYMBOLS)
    await publish(isolated, list(MarketSimulator(symbols, seed=3, start=START).bars(STEPS)))
    processes.start("worker")
    processes.start("sink")
    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        async def landed() -> bool:
            return await conn.fetchval("SELECT count(*) FROM market_conditions WHERE timeframe = '1m'") >= SYMBOLS * STEPS

        assert await wait_for(landed, timeout_s=1200 if FULL else 300, interval_s=2, check=processes.check_alive)
        per_symbol = await conn.fetch("SELECT symbol, count(*) AS n FROM market_conditions WHERE timeframe = '1m' GROUP BY symbol")
        assert {r["symbol"] for r in per_symbol} == set(symbols) and {r["n"] for r in per_symbol} == {STEPS}

        async def correlated() -> bool:  # every symbol its benchmark correlation, not only the pairs' universe
            return await conn.fetchval(
                "SELECT count(DISTINCT symbol) FROM market_conditions WHERE timeframe = '1m' AND spy_correlation IS NOT NULL"
            ) == SYMBOLS

        assert await wait_for(correlated, timeout_s=120, check=processes.check_alive)
        paired = await conn.fetchval(
            "SELECT count(*) FROM (SELECT symbol_a FROM correlation_entries UNION SELECT symbol_b FROM correlation_entries) s"
        )
        assert 0 < paired <= isolated.correlation_max_symbols + 1  # the pairs: the universe, and the benchmark
    finally:
        await conn.close()
    largest = 0
    topics = [name for name, _ in changelog_topics(isolated)]
    consumer = AIOKafkaConsumer(*topics, **isolated.kafka_options(), auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            largest = max([largest] + [len(r.value or b"") for records in batch.values() for r in records])
    finally:
        await consumer.stop()
    assert 0 < largest <= MAX_RECORD_BYTES + 64
