"""Routine database maintenance: ``tickwire maintain``.

On plain PostgreSQL the time-series tables are range-partitioned by month with a DEFAULT
partition (see ``schemas/migrations``), and the aggregates are materialized views that
nothing refreshes by itself. :func:`maintain`

* runs ``tickwire_maintain_partitions`` for every partitioned table: months whose rows
  landed in the DEFAULT partition get a partition of their own (the rows move into it),
  and the current month plus ``months_ahead`` months are created ahead of time;
* applies the seed 001 retention (:data:`RETENTION`) as TimescaleDB's retention policies
  do: monthly partitions whose rows are all older than that are dropped whole
  (``retention=False`` keeps everything);
* refreshes the materialized views, CONCURRENTLY (readers are not blocked) once they
  have been populated.

On TimescaleDB chunks are created on demand and the background jobs compress, drop and
refresh, so there is nothing to do; :func:`maintain` only reports the jobs and the ones
whose last run failed, with their newest error. Run it often enough (daily is plenty) that the months ahead never
run out; a row beyond them still lands safely in the DEFAULT partition.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from tickwire.sinks.migrate import LOCK_ID, flavor_of

MATERIALIZED_VIEWS = ("candles_1h", "candles_1d", "mv_daily_trading_stats")

# Seed 001 retention (market_conditions: its intraday rows; days are kept, migration 0010);
# on TimescaleDB the same intervals are retention policies (0002, 0003, 0011, 0014).
RETENTION = {
    "market_conditions_intraday": "2 years", "trade_outcomes": "5 years", "model_predictions": "3 years",
    "position_snapshots": "1 year", "portfolio_snapshots": "5 years", "multi_timeframe_analysis": "1 year",
    "position_sizing_history": "5 years", "smart_exit_history": "5 years", "partial_exit_history": "5 years",
}

_PARTITIONED = """
    SELECT c.oid::regclass::text AS name
      FROM pg_partitioned_table p
      JOIN pg_class c ON c.oid = p.partrelid
     WHERE p.partstrat = 'r' AND p.partnatts = 1 AND NOT c.relispartition
       AND c.relnamespace = current_schema()::regnamespace
     ORDER BY 1
"""


async def maintain(conn: asyncpg.Connection, *, months_ahead: int = 3, retention: bool = True) -> dict[str, Any]:
    """Create future partitions, apply retention and refresh materialized views.

    Returns what was done: ``{"flavor", "partitions_created": {table: n},
    "partitions_dropped": {table: [name, ...]}, "views_refreshed": [...], "jobs": [...],
    "failed_jobs": [...], "duration_s"}``. Serialised with migrations (same advisory
    lock), so concurrent runs and a concurrent ``migrate`` are safe.
    """
    if months_ahead < 0:
        raise ValueError(f"months_ahead must be >= 0, not {months_ahead}")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "flavor": None,
        "partitions_created": {},
        "partitions_dropped": {},
        "views_refreshed": [],
        "jobs": [],
        "failed_jobs": [],
    }
    await conn.execute("SET timezone = 'UTC'")
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        flavor = await flavor_of(conn)
        report["flavor"] = flavor
        if flavor == "postgres":
            for table in [r["name"] for r in await conn.fetch(_PARTITIONED)]:
                async with conn.transaction():
                    report["partitions_created"][table] = await conn.fetchval(
                        "SELECT tickwire_maintain_partitions($1::regclass, $2)", table, months_ahead
                    )
            for table, keep in RETENTION.items() if retention else ():
                async with conn.transaction():
                    report["partitions_dropped"][table] = await conn.fetchval(
                        "SELECT tickwire_drop_expired_partitions($1::regclass, $2::text::interval)", table, keep
                    )
            populated = {
                r["matviewname"]: r["ispopulated"]
                for r in await conn.fetch(
                    "SELECT matviewname, ispopulated FROM pg_matviews WHERE schemaname = current_schema()"
                )
            }
            for view in MATERIALIZED_VIEWS:
                if view in populated:
                    concurrently = "CONCURRENTLY " if populated[view] else ""
                    await conn.execute(f'REFRESH MATERIALIZED VIEW {concurrently}"{view}"')
                    report["views_refreshed"].append(view)
        elif flavor == "timescaledb":
            jobs = await conn.fetch(
                """SELECT j.job_id, j.application_name, j.proc_name, j.hypertable_name,
                          s.last_run_status, s.total_runs, s.total_failures
                     FROM timescaledb_information.jobs j
                     LEFT JOIN timescaledb_information.job_stats s USING (job_id)
                    WHERE j.job_id >= 1000
                    ORDER BY j.job_id"""
            )
            report["jobs"] = [dict(r) for r in jobs]
            failed = [dict(r) for r in jobs if r["last_run_status"] == "Failed"]
            if failed:
                # the newest error of each (a job that could not even be launched, for want
                # of a free background worker, says "... failed to start")
                errors = await conn.fetch(
                    """SELECT DISTINCT ON (job_id) job_id, err_message FROM timescaledb_information.job_errors
                        WHERE job_id = ANY($1::int[]) ORDER BY job_id, start_time DESC""",
                    [j["job_id"] for j in failed],
                )
                last_error = {r["job_id"]: r["err_message"] for r in errors}
                for job in failed:
                    job["last_error"] = last_error.get(job["job_id"])
            report["failed_jobs"] = failed
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    report["duration_s"] = round(time.perf_counter() - started, 3)
    return report
