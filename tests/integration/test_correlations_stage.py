"""The correlation stage on the real broker, in a worker of its own: snapshots in their tables,
context in market_conditions, the day's close in historical_correlations, the thresholds in
force by the benchmark's regime."""

from __future__ import annotations

from datetime import date, datetime, timezone

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

pytestmark = pytest.mark.integration
SYMBOLS = ["SPY", "AAPL", "MSFT", "NVDA", "XOM", "CVX"]
STEPS = 200
PAIRS = len(SYMBOLS) * (len(SYMBOLS) - 1) // 2
START = datetime(2026, 3, 2, 22, 0, tzinfo=timezone.utc)  # minute 120 is the next day's first


async def test_snapshots_and_context_match_pandas(isolated, processes):
    await ensure_topics(isolated)
    processes.extra_env.update(
        TICKWIRE_CORRELATION_TIMEFRAMES="1m",
        TICKWIRE_CORRELATION_SNAPSHOT_EVERY="50",
        TICKWIRE_CORRELATION_SECTORS_FILE=str(ROOT / "deploy" / "local" / "sectors.csv"),
        # any regime of the benchmark's lowers the threshold: the change is seen once it has one
        TICKWIRE_CORRELATION_THRESHOLDS="trending_up=0.5,trending_down=0.5,ranging=0.5,volatile=0.5",
    )
    # Split as an operator isolates the correlations' bursts: their stage in workers of a
    # group of its own, every other stage in the default group.
    processes.start("worker", env={"TICKWIRE_WORKER_STAGES": "correlations", "TICKWIRE_PROCESSOR_GROUP": "tickwire-correlations"})
    processes.start("worker", env={"TICKWIRE_WORKER_STAGES": "symbols,candles,model_statistics,strategy_statistics,portfolios"})
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
        h = await conn.fetchval("SELECT count(*) FROM historical_correlations WHERE timeframe = '1m'")
        a = await conn.fetchval("SELECT count(*) FROM correlation_analysis_results WHERE timeframe = '1m'")
        t = await conn.fetchval("SELECT count(*) FROM correlation_thresholds WHERE timeframe = '1m'")
        return (n >= len(SYMBOLS) * (STEPS - 1 - 20) and m >= 2 * ((STEPS - 1) // 50) and e >= len(SYMBOLS) * (STEPS - 19)
                and h >= 2 * PAIRS and a >= 2 * ((STEPS - 1) // 50) and t >= 2)

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

    # The day's close: its last minute's values of every pair and window, once minute 120 (the next day) came.
    history = await conn.fetch(
        "SELECT window_bars, day, timestamp, symbol_a, symbol_b, value::float8 AS value, common_bars FROM historical_correlations"
    )
    assert len(history) == 2 * PAIRS
    assert {(r["day"], r["timestamp"]) for r in history} == {(date(2026, 3, 2), datetime(2026, 3, 2, 23, 59, tzinfo=timezone.utc))}
    for r in history:
        window = returns.iloc[119 - r["window_bars"] + 1 : 120]
        assert abs(r["value"] - window[r["symbol_a"]].corr(window[r["symbol_b"]])) <= 0.5e-6 + 1e-12, r
        assert r["common_bars"] == r["window_bars"]

    # The thresholds in force: the single one first, then the regimes' once the benchmark has a regime.
    changes = await conn.fetch("SELECT timestamp, regime, threshold::float8 AS threshold FROM correlation_thresholds ORDER BY timestamp")
    assert [(r["regime"] is None, r["threshold"]) for r in changes] == [(True, 0.7), (False, 0.5)]
    spy_regime = await conn.fetchval(
        "SELECT detected_regime FROM market_conditions WHERE symbol = 'SPY' AND timeframe = '1m' AND timestamp = $1", changes[1]["timestamp"]
    )
    assert spy_regime == changes[1]["regime"]
    assert await conn.fetchval(  # the first regime the benchmark had
        "SELECT min(timestamp) FROM market_conditions WHERE symbol = 'SPY' AND timeframe = '1m' AND detected_regime IS NOT NULL"
    ) == changes[1]["timestamp"]

    # Each snapshot's analysis: the threshold in force, the benchmark's regime then, the summary of its entries.
    results = await conn.fetch("SELECT * FROM correlation_analysis_results WHERE timeframe = '1m' ORDER BY timestamp, window_bars")
    assert len(results) == 2 * ((STEPS - 1) // 50)
    for r in results:
        in_force = [c for c in changes if c["timestamp"] <= r["timestamp"]][-1]
        regime = await conn.fetchval(
            "SELECT detected_regime FROM market_conditions WHERE symbol = 'SPY' AND timeframe = '1m' AND timestamp <= $1"
            " AND detected_regime IS NOT NULL ORDER BY timestamp DESC LIMIT 1", r["timestamp"]
        )
        assert (float(r["threshold"]), r["regime"]) == (in_force["threshold"], regime)
    last = results[-1]
    values = {(e["symbol_a"], e["symbol_b"]): e["value"] for e in entries}
    assert (last["window_bars"], last["symbol_count"], last["pair_count"]) == (60, len(SYMBOLS), PAIRS)
    assert float(last["mean_correlation"]) == pytest.approx(np.mean(list(values.values())), abs=1e-6)
    assert float(last["stddev_correlation"]) == pytest.approx(np.std(list(values.values())), abs=1e-6)
    assert (last["most_correlated_a"], last["most_correlated_b"]) == max(values, key=values.get)
    assert (last["least_correlated_a"], last["least_correlated_b"]) == min(values, key=values.get)
    groups = await conn.fetchval(
        "SELECT count(*) FROM correlation_groups WHERE timeframe = '1m' AND window_bars = 60 AND timestamp = $1", last["timestamp"]
    )
    assert last["group_count"] == groups
    await conn.close()
