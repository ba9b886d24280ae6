"""An analyst's backfills through ``tickwire replay``, one symbol's whole history after
another (as vendors ship it), then live 1m bars: 25 years of vendor daily bars, and 2 years
of 1m bars resampled on the way.

Every row lands, in the table of its timeframe; the daily history takes one chunk per year
on TimescaleDB (it took one per day, ~9,000, and a backfill batch ran the server out of
locks: issue 15), no retention drops it, and a query for one symbol's year plans without
a single intraday chunk. CI size: 20 symbols of daily bars, 8 of 3 days' 1m bars;
TICKWIRE_FAULT_SCALE=full: 500, and 50 of 2 years' (504 weekdays).
"""

from __future__ import annotations

import os
import random
from datetime import date, datetime, time, timedelta, timezone

import asyncpg
import pytest

from tickwire.streams.simulator import MarketSimulator
from tickwire.streams.topics import ensure_topics
from tickwire.sinks.maintenance import maintain
from tests.conftest import wait_for
from tests.faults.test_outages import publish
from tests.integration.test_pipeline import START
from tests.integration.test_replay import replay

pytestmark = pytest.mark.integration
FULL = os.environ.get("TICKWIRE_FAULT_SCALE") == "full"
SYMBOLS = [f"H{i:03d}" for i in range(500 if FULL else 20)]
FIRST, LAST = date(2000, 1, 3), date(2024, 12, 31)
LIVE_STEPS = 30


def write_bars(path, symbols: list[str], times: list[datetime], timeframe: str, sigma: float, seed: int) -> int:
    """A vendor's CSV: a random walk of each symbol over ``times``, symbol after symbol (as
    vendors ship history); returns the number of bars."""
    rng = random.Random(seed)
    with path.open("w") as out:
        out.write("symbol,timeframe,ts,open,high,low,close,volume\n")
        for symbol in symbols:
            close = 50.0
            for ts in times:
                opened, close = close, max(1.0, close * (1 + rng.gauss(0, sigma)))
                high, low = max(opened, close) * (1 + sigma / 2), min(opened, close) * (1 - sigma / 2)
                out.write(f"{symbol},{timeframe},{ts.isoformat()},{opened:.4f},{high:.4f},{low:.4f},{close:.4f},"
                          f"{rng.randint(100, 10**7)}\n")
    return len(symbols) * len(times)


def backfill(processes, path, bars: int, timeout_s: float) -> None:
    """``tickwire replay`` of the whole file, then the worker and the sink started."""
    done = replay(processes, str(path), "--kind", "bars", timeout_s=timeout_s)
    assert done.returncode == 0 and f"{bars} sent" in done.stderr, done.stderr[-2000:]
    processes.start("worker")
    processes.start("sink")


async def test_decades_of_daily_bars_replay_then_live_bars_every_row_in_its_table(isolated, processes, tmp_path):
    await ensure_topics(isolated)
    path = tmp_path / "daily.csv"
    days = [FIRST + timedelta(days=n) for n in range((LAST - FIRST).days + 1)]
    opens = [datetime.combine(day, time(), timezone.utc) for day in days if day.weekday() < 5]
    bars = write_bars(path, SYMBOLS, opens, "1d", sigma=0.02, seed=15)
    backfill(processes, path, bars, timeout_s=1800)
    await publish(isolated, list(MarketSimulator(SYMBOLS, seed=4, start=START).bars(LIVE_STEPS)))

    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        async def landed() -> bool:
            daily = await conn.fetchval("SELECT count(*) FROM market_conditions_daily")
            live = await conn.fetchval("SELECT count(*) FROM market_conditions_intraday WHERE timeframe = '1m'")
            return daily >= bars and live >= len(SYMBOLS) * LIVE_STEPS

        assert await wait_for(landed, timeout_s=3600 if FULL else 600, interval_s=2, check=processes.check_alive)
        per_symbol = await conn.fetch(
            "SELECT symbol, count(*) AS n, min(\"timestamp\") AS first, max(\"timestamp\") AS last"
            " FROM market_conditions WHERE timeframe = '1d' GROUP BY symbol"
        )
        assert {r["symbol"] for r in per_symbol} == set(SYMBOLS)
        assert {(r["n"], r["first"].date(), r["last"].date()) for r in per_symbol} == {(bars // len(SYMBOLS), FIRST, LAST)}
        assert await conn.fetchval("SELECT count(*) FROM market_conditions_intraday WHERE timeframe LIKE '%d'") == 0
        # indicators ran over the history: the last bar of each symbol has its 50-bar EMA
        assert await conn.fetchval(
            "SELECT count(*) FROM market_conditions WHERE timeframe = '1d' AND \"timestamp\" = $1 AND ema_50 IS NOT NULL",
            datetime.combine(LAST, time(), timezone.utc),
        ) == len(SYMBOLS)

        intraday = ["market_conditions_intraday"]
        if await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
            intraday += [f"_hyper_{r['id']}_" for r in await conn.fetch(  # its chunks, named after its id
                "SELECT id FROM _timescaledb_catalog.hypertable WHERE table_name = 'market_conditions_intraday'"
            )]
            chunks = await conn.fetchval("SELECT count(*) FROM show_chunks('market_conditions_daily')")
            assert chunks <= LAST.year - FIRST.year + 2, chunks  # one per 365 days, not one per day
        else:
            assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'market_conditions_daily'::regclass") == "r"
            await maintain(conn)  # retention: the intraday table's 2 years, never the daily history
            assert await conn.fetchval("SELECT count(*) FROM market_conditions_daily") == bars

        plan = "\n".join(r[0] for r in await conn.fetch(
            f"""EXPLAIN (ANALYZE, COSTS OFF) SELECT "timestamp", close, ema_20 FROM market_conditions
                WHERE symbol = '{SYMBOLS[0]}' AND timeframe = '1d' AND "timestamp" >= '2010-01-01' AND "timestamp" < '2011-01-01'"""
        ))
        assert not any(name in plan for name in intraday) and "rows=" in plan, plan
        year = await conn.fetch(
            """SELECT close FROM market_conditions
                WHERE symbol = $1 AND timeframe = '1d' AND "timestamp" >= '2010-01-01' AND "timestamp" < '2011-01-01'""",
            SYMBOLS[0],
        )
        assert len(year) == 261  # the weekdays of 2010
    finally:
        await conn.close()


INTRADAY_SYMBOLS = [f"M{i:02d}" for i in range(50 if FULL else 8)]
INTRADAY_DAYS = 2 * 252 if FULL else 3  # weekdays, inside the 2 years the intraday table keeps
SESSION = 390  # 1m bars a day, 14:30 to 21:00 UTC


def minute_history_days() -> list[date]:
    """The weekdays of the minute history, the newest the day before yesterday: live bars,
    even just after midnight, come after it."""
    days, day = [], datetime.now(timezone.utc).date() - timedelta(days=1)
    while len(days) < INTRADAY_DAYS:
        day -= timedelta(days=1)
        if day.weekday() < 5:
            days.insert(0, day)
    return days


async def test_two_years_of_minute_bars_replay_then_live_bars_and_resample_into_their_tables(isolated, processes, tmp_path):
    await ensure_topics(isolated)
    path = tmp_path / "minutes.csv"
    days = minute_history_days()
    minutes = [datetime.combine(day, time(14, 30), timezone.utc) + timedelta(minutes=m) for day in days for m in range(SESSION)]
    bars = write_bars(path, INTRADAY_SYMBOLS, minutes, "1m", sigma=0.001, seed=16)
    backfill(processes, path, bars, timeout_s=3600)
    live = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=LIVE_STEPS + 5)
    await publish(isolated, list(MarketSimulator(INTRADAY_SYMBOLS, seed=5, start=live).bars(LIVE_STEPS)))

    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        expected = {"1m": len(days) * SESSION + LIVE_STEPS, "1h": len(days) * 7, "1d": len(days)}  # 14:00..20:00 hours

        count_minutes = "SELECT count(*) FROM market_conditions_intraday WHERE timeframe = '1m' AND symbol = ANY($1)"

        async def landed() -> bool:  # the module's database holds the daily test's rows too
            return await conn.fetchval(count_minutes, INTRADAY_SYMBOLS) >= expected["1m"] * len(INTRADAY_SYMBOLS)

        assert await wait_for(landed, timeout_s=7200 if FULL else 600, interval_s=5, check=processes.check_alive)
        # the history's resampled hours and days closed when the live bars came
        history_ends = datetime.combine(days[-1] + timedelta(days=1), time(), timezone.utc)
        for timeframe, n in expected.items():
            counts = await conn.fetch(
                "SELECT symbol, count(*) AS n FROM market_conditions WHERE timeframe = $1 AND \"timestamp\" < $2"
                " AND symbol = ANY($3) GROUP BY symbol",
                timeframe, history_ends if timeframe != "1m" else live + timedelta(days=1), INTRADAY_SYMBOLS,
            )
            assert {(r["symbol"], r["n"]) for r in counts} == {(s, n) for s in INTRADAY_SYMBOLS}, timeframe
        if await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
            chunks = await conn.fetchval(
                "SELECT count(*) FROM show_chunks('market_conditions_intraday', newer_than => $1::timestamptz, older_than => $2::timestamptz)",
                datetime.combine(days[0], time(), timezone.utc), history_ends,
            )
            assert chunks <= (days[-1] - days[0]).days + 1, chunks  # one a day
        else:
            await maintain(conn)  # the 2 years' retention keeps them all
            assert await conn.fetchval(count_minutes, INTRADAY_SYMBOLS) == expected["1m"] * len(INTRADAY_SYMBOLS)
    finally:
        await conn.close()
