"""``maintain()``: future monthly partitions, rows moved out of DEFAULT, views refreshed
(plain PostgreSQL); background jobs reported (TimescaleDB).

The PostgreSQL cases run on a database migrated with ``flavor="postgres"``, which any
cluster allows; the TimescaleDB cases skip where the extension is absent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pytest

from tickwire.schemas.settings import Settings
from tickwire.sinks.maintenance import MATERIALIZED_VIEWS, RETENTION, maintain
from tickwire.sinks.migrate import migrate
from tests.schemas.test_migrations import HYPERTABLES, NO_TIMESCALEDB, TIME_TABLES, Databases, timescaledb_available

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def databases(pg_settings):
    dbs = Databases(pg_settings)
    yield dbs
    await dbs.drop_all()


async def _fresh(databases: Databases, flavor: str | None) -> Settings:
    settings = await databases.create()
    if flavor is not None:
        conn = await asyncpg.connect(**settings.pg_options())
        try:
            await migrate(conn, flavor=flavor)
        finally:
            await conn.close()
    return settings


@pytest.fixture
async def pg_db(databases):
    """A connection to a freshly migrated plain-PostgreSQL database (one per test)."""
    settings = await _fresh(databases, "postgres")
    conn = await asyncpg.connect(**settings.pg_options())
    conn_settings = settings
    try:
        yield conn, conn_settings
    finally:
        await conn.close()


def _month(d: date, ahead: int) -> date:
    months = d.year * 12 + d.month - 1 + ahead
    return date(months // 12, months % 12 + 1, 1)


async def _partitions(conn, table: str) -> dict[str, str]:
    await conn.execute("SET timezone = 'UTC'")
    return {
        r["name"]: r["bound"]
        for r in await conn.fetch(
            """SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass""",
            table,
        )
    }


async def test_maintain_creates_the_months_ahead_once(pg_db):
    conn, _ = pg_db
    today = datetime.now(timezone.utc).date()
    before = {t: await _partitions(conn, t) for t in TIME_TABLES}
    report = await maintain(conn, months_ahead=6, retention=False)
    assert report["flavor"] == "postgres"
    assert report["partitions_dropped"] == {}
    for table in TIME_TABLES:
        parts = await _partitions(conn, table)
        for ahead in range(7):
            month = _month(today, ahead)
            nxt = _month(today, ahead + 1)
            assert parts[f"{table}_p{month:%Y%m}"] == (
                f"FOR VALUES FROM ('{month:%Y-%m-%d} 00:00:00+00') TO ('{nxt:%Y-%m-%d} 00:00:00+00')"
            ), table
        assert report["partitions_created"][table] == len(parts) - len(before[table]), table
    # migrations made 3 months ahead (market_conditions_intraday: 12), so 3 more each here
    assert report["partitions_created"]["trade_outcomes"] == 3
    assert report["partitions_created"]["market_conditions_intraday"] == 0
    again = await maintain(conn, months_ahead=6, retention=False)
    assert again["partitions_created"] == {t: 0 for t in TIME_TABLES}


async def test_rows_in_default_move_into_a_partition_of_their_own(pg_db):
    conn, _ = pg_db
    far = datetime.now(timezone.utc) + timedelta(days=400)  # beyond every partition made ahead
    cases = {
        # table: (time, row)
        "market_conditions_intraday": datetime(2019, 7, 15, 12, tzinfo=timezone.utc),  # before 0001's 2020-01
        "trade_outcomes": far,
        "model_predictions": datetime(2024, 1, 31, 23, 30, tzinfo=timezone.utc),  # Feb 1 in Tokyo: UTC bounds
        "correlation_entries": datetime(2025, 5, 1, tzinfo=timezone.utc),  # exactly on a month's start
    }
    await conn.execute("SET timezone = 'Asia/Tokyo'")  # maintain() must not depend on the session's zone
    await conn.execute(
        """INSERT INTO market_conditions_intraday (symbol, timeframe, "timestamp", open, high, low, close, volume)
           VALUES ('OLD', '1m', $1, 1, 2, 0.5, 1.5, 7)""",
        cases["market_conditions_intraday"],
    )
    trade_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction, entry_time, entry_price, quantity)
           VALUES ($1, 's', 'v', 'FAR', 'SHORT', $2, 10, 1)""",
        trade_id, cases["trade_outcomes"],
    )
    await conn.execute(
        """INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol, predicted_at,
                                          prediction_horizon_minutes, feature_vector)
           VALUES ($1, 'v', 'direction', 'JAN', $2, 5, $3)""",
        uuid.uuid4(), cases["model_predictions"], json.dumps({"x": 1}),
    )
    await conn.execute(
        """INSERT INTO correlation_entries (timeframe, window_bars, "timestamp", symbol_a, symbol_b, value, common_bars)
           VALUES ('1h', 20, $1, 'AAA', 'BBB', 0.5, 20)""",
        cases["correlation_entries"],
    )
    time_col = {t: TIME_TABLES[t] for t in cases}
    for table in cases:
        assert await conn.fetchval(f"SELECT count(*) FROM {table}_default") == 1, table
        assert not await conn.fetchval("SELECT to_regclass($1)", f"{table}_p{cases[table].astimezone(timezone.utc):%Y%m}")

    report = await maintain(conn, months_ahead=3, retention=False)  # 2019 is past market_conditions_intraday's 2 years

    for table, ts in cases.items():
        assert report["partitions_created"][table] >= 1, table
        assert await conn.fetchval(f"SELECT count(*) FROM {table}_default") == 0, table
        child = f"{table}_p{ts.astimezone(timezone.utc):%Y%m}"
        where = f'"{time_col[table]}" = $1'
        assert await conn.fetchval(f"SELECT tableoid::regclass::text FROM {table} WHERE {where}", ts) == child, table
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1, table
        # the new partition has the parent's indexes, unique key included
        indexes = await conn.fetchval("SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass", child)
        parent_indexes = await conn.fetchval("SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass", table)
        assert indexes == parent_indexes, table
    row = await conn.fetchrow("SELECT * FROM market_conditions WHERE symbol = 'OLD'")
    assert (row["open"], row["close"], row["volume"]) == (Decimal("1.00000000"), Decimal("1.50000000"), 7)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            """INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction, entry_time, entry_price, quantity)
               VALUES ($1, 's', 'v', 'FAR', 'SHORT', $2, 10, 1)""",
            trade_id, cases["trade_outcomes"],
        )
    parts = await _partitions(conn, "model_predictions")
    assert parts["model_predictions_p202401"] == (
        "FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00')"
    )


async def test_retention_drops_whole_months_older_than_the_seed_retention(pg_db):
    conn, _ = pg_db
    now = datetime.now(timezone.utc)
    six_years, four_years = now - timedelta(days=6 * 366), now - timedelta(days=4 * 366)
    for ts, symbol in ((six_years, "OLD6"), (four_years, "OLD4")):  # both land in DEFAULT first
        await conn.execute(
            """INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction, entry_time, entry_price, quantity)
               VALUES ($1, 's', 'v', $2, 'LONG', $3, 10, 1)""",
            uuid.uuid4(), symbol, ts,
        )
    assert await conn.fetchval("SELECT to_regclass('market_conditions_intraday_p202001')")  # made by 0001
    report = await maintain(conn)
    dropped = report["partitions_dropped"]
    assert set(dropped) == set(RETENTION) == {
        "market_conditions_intraday", "trade_outcomes", "model_predictions", "position_snapshots", "portfolio_snapshots",
        "multi_timeframe_analysis", "position_sizing_history", "smart_exit_history", "partial_exit_history",
    }
    assert dropped["trade_outcomes"] == [f"trade_outcomes_p{six_years:%Y%m}"]
    assert [r["symbol"] for r in await conn.fetch("SELECT symbol FROM trade_outcomes")] == ["OLD4"]
    assert "market_conditions_intraday_p202001" in dropped["market_conditions_intraday"]
    for young in ("model_predictions", "position_snapshots", "portfolio_snapshots", "position_sizing_history",
                  "smart_exit_history", "partial_exit_history"):
        assert dropped[young] == [], young  # their partitions start a month before the migration
    # every partition left ends after the cutoff; the month holding the cutoff is kept
    cutoff_month = await conn.fetchval("SELECT to_char(now() - INTERVAL '2 years', 'YYYYMM')")
    kept = await _partitions(conn, "market_conditions_intraday")
    assert f"market_conditions_intraday_p{cutoff_month}" in kept
    for name in dropped["market_conditions_intraday"]:
        assert name not in kept and name < f"market_conditions_intraday_p{cutoff_month}"
    assert (await maintain(conn))["partitions_dropped"]["market_conditions_intraday"] == []


async def test_partition_bounds_are_utc_months_whatever_the_session_zone(pg_db):
    conn, _ = pg_db
    await conn.execute("SET timezone = 'America/New_York'")
    assert await conn.fetchval(
        "SELECT tickwire_ensure_monthly_partitions('correlation_matrix', '2040-02-10', '2040-03-01')"
    ) == 2
    parts = await _partitions(conn, "correlation_matrix")
    assert parts["correlation_matrix_p204002"] == "FOR VALUES FROM ('2040-02-01 00:00:00+00') TO ('2040-03-01 00:00:00+00')"
    assert parts["correlation_matrix_p204003"] == "FOR VALUES FROM ('2040-03-01 00:00:00+00') TO ('2040-04-01 00:00:00+00')"


async def test_maintain_refreshes_the_materialized_views(pg_db):
    conn, _ = pg_db
    hour = datetime(2026, 1, 5, 14, tzinfo=timezone.utc)
    await conn.executemany(
        """INSERT INTO market_conditions_intraday (symbol, timeframe, "timestamp", open, high, low, close, volume)
           VALUES ('VW', '1m', $1, $2::numeric, $2::numeric + 1, $2::numeric - 1, $2::numeric, 5)""",
        [(hour + timedelta(minutes=i), Decimal(10 + i)) for i in range(3)],
    )
    await conn.execute(
        """INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction, entry_time, entry_price,
                                       quantity, net_pnl, outcome_type)
           VALUES ($1, 's', 'v', 'VW', 'LONG', $2, 10, 2, 5, 'WIN')""",
        uuid.uuid4(), hour,
    )
    assert await conn.fetchval("SELECT count(*) FROM candles_1h WHERE symbol = 'VW'") == 0
    report = await maintain(conn)
    assert report["views_refreshed"] == list(MATERIALIZED_VIEWS)
    candle = await conn.fetchrow("SELECT * FROM candles_1h WHERE symbol = 'VW'")
    assert (candle["bucket"], candle["open"], candle["high"], candle["low"], candle["close"], candle["volume"]) == (
        hour, 10, 13, 9, 12, 15
    )
    assert await conn.fetchval("SELECT volume FROM candles_1d WHERE symbol = 'VW'") == 15
    assert await conn.fetchval("SELECT winning_trades FROM mv_daily_trading_stats WHERE symbol = 'VW'") == 1


async def test_concurrent_maintain_runs_do_the_work_once(pg_db):
    conn, settings = pg_db
    await conn.execute(
        """INSERT INTO market_regime_history (symbol, timeframe, "timestamp", regime) VALUES ('CC', '1h', $1, 'ranging')""",
        datetime(2018, 3, 3, tzinfo=timezone.utc),
    )
    others = [await asyncpg.connect(**settings.pg_options()) for _ in range(3)]
    try:
        reports = await asyncio.gather(*(maintain(c, months_ahead=5) for c in others))
    finally:
        for c in others:
            await c.close()
    created = [r["partitions_created"]["market_regime_history"] for r in reports]
    assert sorted(created) == [0, 0, 3]  # 2018-03 plus months 4 and 5 ahead, by one of them
    assert await conn.fetchval("SELECT tableoid::regclass::text FROM market_regime_history WHERE symbol = 'CC'") == (
        "market_regime_history_p201803"
    )


async def test_maintain_refuses_a_negative_horizon_and_leaves_an_unmigrated_database_alone(databases):
    settings = await _fresh(databases, None)
    conn = await asyncpg.connect(**settings.pg_options())
    try:
        with pytest.raises(ValueError):
            await maintain(conn, months_ahead=-1)
        report = await maintain(conn)
        assert (report["flavor"], report["partitions_created"], report["views_refreshed"]) == (None, {}, [])
        assert not await conn.fetchval("SELECT to_regclass('tickwire_migrations')")
    finally:
        await conn.close()


async def test_timescaledb_maintain_reports_the_policies_and_failed_jobs(databases, pg_settings):
    if not await timescaledb_available(pg_settings):
        pytest.skip(NO_TIMESCALEDB)
    settings = await _fresh(databases, "timescaledb")
    conn = await asyncpg.connect(**settings.pg_options())
    try:
        await conn.execute(
            """CREATE PROCEDURE tickwire_test_failing_job(job_id int, config jsonb) LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'deliberate failure'; END $$"""
        )
        failing = await conn.fetchval(
            "SELECT add_job('tickwire_test_failing_job', INTERVAL '1 day', initial_start => now())"
        )
        deadline = asyncio.get_running_loop().time() + 60
        while not await conn.fetchval(
            """SELECT 1 FROM timescaledb_information.job_errors
                WHERE job_id = $1 AND err_message = 'deliberate failure'""",
            failing,
        ):
            assert asyncio.get_running_loop().time() < deadline, "the failing job never ran"
            await asyncio.sleep(0.2)
        report = await maintain(conn)
        assert report["flavor"] == "timescaledb"
        assert report["partitions_created"] == {} and report["views_refreshed"] == []
        kinds: dict[str, set] = {}
        for job in report["jobs"]:
            kinds.setdefault(job["proc_name"], set()).add(job["hypertable_name"])
        assert kinds["policy_compression"] == set(HYPERTABLES)
        assert kinds["policy_retention"] == set(RETENTION)  # the same tables as maintain drops on PostgreSQL
        assert kinds["policy_refresh_continuous_aggregate"] == set(MATERIALIZED_VIEWS)
        failed = {j["job_id"]: j for j in report["failed_jobs"]}
        assert failed[failing]["last_error"] == "deliberate failure"
        assert failed[failing]["proc_name"] == "tickwire_test_failing_job"
    finally:
        await conn.close()
