"""The correlation stage on the real broker: snapshots in their tables, context in market_conditions."""

from __future__ import annotations

import asyncpg
import msgspec
import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaProducer

from tickwire.schemas.topics import BARS
from tickwire.streams.topics import ensure_topics
from tickwire.streams.simulator import MarketSimulator
from tests.conftest import ROOT, wait_for
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration
SYMBOLS = ["SPY", "AAPL", "MSFT", "NVDA", "XOM", "CVX"]
STEPS = 200


async def test_snapshots_and_context_match_pandas(isolated, processes):
    await ensure_topics(isolated)
    processes.extra_env.update(
        TICKWIRE_CORRELATION_TIMEFRAMES="1m",
        TICKWIRE_CORRELATION_SNAPSHOT_EVERY="50",
        TICKWIRE_CORRELATION_SECTORS_FILE=str(ROOT / "deploy" / "local" / "sectors.csv"),
    )
    processes.start("worker")
    processes.start("sink")
    bars = list(MarketSimulator(SYMBOLS, seed=8, start=START).bars(STEPS))
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    for bar in bars:
        await producer.send(isolated.topic(BARS.name), key=bar.symbol.encode(), value=msgspec.json.encode(bar))
    await producer.stop()

    conn = await asyncpg.connect(**isolated.pg_options())
    # The last step stays open until a later bar closes it: STEPS - 1 steps get context.
    # The conditions and the context come through two sink pipelines, either first: wait for both.
    async def done():
        n = await conn.fetchval("SELECT count(*) FROM market_conditions WHERE timeframe = '1m' AND spy_correlation IS NOT NULL")
        m = await conn.fetchval("SELECT count(*) FROM correlation_matrix WHERE timeframe = '1m'")
        e = await conn.fetchval("SELECT count(*) FROM market_conditions WHERE timeframe = '1m' AND ema_20 IS NOT NULL")
        return n >= len(SYMBOLS) * (STEPS - 1 - 20) and m >= 2 * ((STEPS - 1) // 50) and e >= len(SYMBOLS) * (STEPS - 19)

    assert await wait_for(done, timeout_s=180, check=processes.check_alive)

    closes = pd.DataFrame({s: [b.close for b in bars if b.symbol == s] for s in SYMBOLS})
    returns = np.log(closes).diff()
    expected_spy = returns.rolling(20, min_periods=10).corr(returns["SPY"])
    rows = await conn.fetch(
        "SELECT symbol, timestamp, spy_correlation::float8 AS spy, sector_correlation::float8 AS sector, ema_20 "
        "FROM market_conditions WHERE timeframe = '1m' AND spy_correlation IS NOT NULL"
    )
    for r in rows:
        i = int((r["timestamp"] - START).total_seconds() // 60)
        # DECIMAL(4, 3): the stored value is pandas' to within half a unit of the third decimal.
        assert abs(r["spy"] - expected_spy[r["symbol"]][i]) <= 0.0005 + 1e-9, (r["symbol"], i)
        assert r["ema_20"] is not None or i < 19  # the context row and the condition are one row
    tech = returns[["AAPL", "MSFT", "NVDA"]]
    aapl_sector = tech["AAPL"].rolling(20, min_periods=10).corr(tech[["MSFT", "NVDA"]].mean(axis=1))
    aapl = {int((r["timestamp"] - START).total_seconds() // 60): r["sector"] for r in rows if r["symbol"] == "AAPL"}
    assert all(abs(v - aapl_sector[i]) <= 0.0005 + 1e-9 for i, v in aapl.items())

    entries = await conn.fetch(
        "SELECT symbol_a, symbol_b, value::float8 AS value, common_bars FROM correlation_entries "
        "WHERE timeframe = '1m' AND window_bars = 60 AND timestamp = (SELECT max(timestamp) FROM correlation_entries WHERE window_bars = 60)"
    )
    assert len(entries) == len(SYMBOLS) * (len(SYMBOLS) - 1) // 2
    last = await conn.fetchval("SELECT max(timestamp) FROM correlation_entries WHERE window_bars = 60")
    i = int((last - START).total_seconds() // 60)
    window = returns.iloc[i - 59 : i + 1]
    for e in entries:
        assert e["symbol_a"] < e["symbol_b"]
        assert abs(e["value"] - window[e["symbol_a"]].corr(window[e["symbol_b"]])) <= 0.5e-6 + 1e-12
    await conn.close()
