"""Sink throughput: Kafka md.conditions.v1 -> market_conditions, against the database's own limit.

The baseline is asyncpg ``copy_records_to_table`` of the same rows, from memory, into the
same empty table (``market_conditions_intraday`` or ``_daily``, in a second freshly
migrated database) in batches of the same size: what the database can take with no
Kafka, decoding or merge at all. Two workloads: 1m bars of 100 symbols, and a backfill
of 25 years of daily bars for 500 symbols (20 with ``--quick``), one symbol's history
after the other as vendors ship them; for the latter also the query of one symbol's year
through the ``market_conditions`` view, against the same query on its table.
One figure each on plain PostgreSQL, and on TimescaleDB where it is preloaded.

    python tests/bench/bench_sink.py [--quick] [--rows N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg  # noqa: E402
import msgspec  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from tickwire.schemas.market import Condition  # noqa: E402
from tickwire.schemas.metrics import Metrics  # noqa: E402
from tickwire.schemas.tables import MARKET_CONDITIONS  # noqa: E402
from tickwire.schemas.topics import CONDITIONS  # noqa: E402
from tickwire.sinks.consumer import TopicSink  # noqa: E402
from tickwire.sinks.migrate import Flavor, detect_flavor, migrate  # noqa: E402
from tickwire.sinks.postgres import TableWriter  # noqa: E402
from tickwire.streams.cli import _use_uvloop
from tickwire.streams.topics import ensure_topics  # noqa: E402
from tests.bench._services import emit, local_settings  # noqa: E402

T0 = datetime(2026, 5, 4, tzinfo=timezone.utc)


def conditions(count: int, symbols: int = 100) -> list[Condition]:
    return [
        Condition(
            symbol=f"S{i % symbols:03d}", timeframe="1m", timestamp=T0 + timedelta(minutes=i // symbols),
            open=100.0 + i % 7, high=101.5 + i % 7, low=99.25 + i % 7, close=100.5 + i % 7, volume=1000 + i,
            ema_20=100.123456, ema_50=100.654321, rsi_14=55.5, atr_14=1.25, macd_line=0.1, macd_signal=0.05,
        )
        for i in range(count)
    ]


def daily_history(symbols: int, years: int = 25) -> list[Condition]:
    first = datetime(2000, 1, 3, tzinfo=timezone.utc)
    days = [first + timedelta(days=n) for n in range(years * 365) if (first + timedelta(days=n)).weekday() < 5]
    return [
        Condition(
            symbol=f"D{s:03d}", timeframe="1d", timestamp=day, open=100.0 + n % 7, high=101.5 + n % 7, low=99.25 + n % 7,
            close=100.5 + n % 7, volume=10**6 + n, ema_20=100.123456, ema_50=100.654321, rsi_14=55.5, atr_14=1.25,
        )
        for s in range(symbols) for n, day in enumerate(days)
    ]


async def fresh_database(settings, flavor: Flavor | None = None) -> object:
    """A new migrated database (``flavor`` forces plain PostgreSQL where TimescaleDB is present)."""
    name = "bench_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(**settings.pg_options())
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    db = local_settings(pg_dsn=settings.pg_dsn.rsplit("/", 1)[0] + "/" + name, topic_prefix=settings.topic_prefix)
    conn = await asyncpg.connect(**db.pg_options())
    await migrate(conn, flavor=flavor)
    await conn.close()
    return db, name


async def drop_database(settings, name: str) -> None:
    admin = await asyncpg.connect(**settings.pg_options())
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def copy_baseline(settings, rows: list[Condition], batch: int, flavor: Flavor, table: str) -> float:
    db, name = await fresh_database(settings, flavor)
    columns = MARKET_CONDITIONS.columns
    # Numeric columns take Decimal in binary COPY; the conversion is done before timing.
    numeric = {c for c in columns if c not in ("symbol", "timeframe", "timestamp", "volume", "detected_regime")}
    records = [
        tuple(Decimal(repr(v)) if (c in numeric and v is not None) else v for c, v in zip(columns, msgspec.structs.astuple(r)))
        for r in rows
    ]
    conn = await asyncpg.connect(**db.pg_options())
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        async with conn.transaction():
            await conn.copy_records_to_table(table, records=records[i:i + batch], columns=columns)
    elapsed = time.perf_counter() - started
    await conn.close()
    await drop_database(settings, name)
    return len(records) / elapsed


async def sink_run(settings, rows: list[Condition], flavor: Flavor, year_query: str | None = None) -> tuple[float, float, float]:
    """(rows/s, then with ``year_query``: its milliseconds through the view and on the daily table)."""
    db, name = await fresh_database(settings, flavor)
    await ensure_topics(db)
    topic = db.topic(CONDITIONS.name)
    producer = AIOKafkaProducer(**db.kafka_options(), linger_ms=20, max_batch_size=1 << 20, acks="all")
    await producer.start()
    encode = msgspec.json.Encoder().encode
    for r in rows:
        await producer.send(topic, key=r.symbol.encode(), value=encode(r))
    await producer.flush()

    writer = TableWriter(MARKET_CONDITIONS)
    pool = await asyncpg.create_pool(**db.pg_options(), min_size=1, max_size=db.pg_pool_size, init=writer.prepare)
    consumer = AIOKafkaConsumer(
        topic, **db.kafka_options(), group_id="bench-sink", enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    metrics = Metrics(CollectorRegistry())
    sink = TopicSink(settings=db, topic=CONDITIONS, table=MARKET_CONDITIONS, pool=pool,
                     consumer=consumer, producer=producer, metrics=metrics)
    started = time.perf_counter()
    task = asyncio.create_task(sink.run())
    # Done when the sink has committed the offsets of every record (it commits them only
    # after the rows' transaction): watched in-process, because polling count(*) on the
    # growing table would take a core of this 2-core machine from the database under test.
    while sum(sink._committed.values()) < len(rows):
        if task.done():
            task.result()
            raise RuntimeError("the sink stopped before writing every row")
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    conn = await asyncpg.connect(**db.pg_options())
    written = await conn.fetchval("SELECT count(*) FROM market_conditions")
    if written != len(rows):
        raise RuntimeError(f"market_conditions holds {written} rows, {len(rows)} were published")
    view_ms = table_ms = float("nan")
    if year_query:
        await conn.execute("ANALYZE market_conditions_daily")
        view_ms = await query_ms(conn, year_query.format(relation="market_conditions"))
        table_ms = await query_ms(conn, year_query.format(relation="market_conditions_daily"))
    await conn.close()
    await consumer.stop()
    await producer.stop()
    await pool.close()
    await drop_database(settings, name)
    return len(rows) / elapsed, view_ms, table_ms


async def query_ms(conn: asyncpg.Connection, sql: str, repeats: int = 20) -> float:
    """Median milliseconds of ``sql``, planning included, after one warm-up run."""
    await conn.fetch(sql)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await conn.fetch(sql)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


YEAR_QUERY = """SELECT "timestamp", close, ema_20 FROM {relation}
                 WHERE symbol = 'D007' AND timeframe = '1d' AND "timestamp" >= '2010-01-01' AND "timestamp" < '2011-01-01'"""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, one repeat")
    parser.add_argument("--rows", type=int, help="rows per run (default 1,000,000)")
    args = parser.parse_args()
    count = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = 1 if args.quick else 3
    workloads = (
        ("market_conditions", conditions(count), "market_conditions_intraday", None),
        ("daily_history", daily_history(20 if args.quick else 500), "market_conditions_daily", YEAR_QUERY),
    )
    conn = await asyncpg.connect(**local_settings().pg_options())
    # Plain PostgreSQL always; TimescaleDB too where it is preloaded.
    flavors: list[Flavor] = ["postgres"] + (["timescaledb"] if await detect_flavor(conn) == "timescaledb" else [])
    await conn.close()
    for workload, rows, table, year_query in workloads:
        for flavor in flavors:
            runs, copy_rates = [], []
            for _ in range(repeats):
                settings = local_settings(topic_prefix=f"bsink{uuid.uuid4().hex[:8]}.")
                copy_rates.append(await copy_baseline(settings, rows, settings.max_batch_rows, flavor, table))
                runs.append(await sink_run(settings, rows, flavor, year_query))
            rate, view_ms, table_ms = (statistics.median(r[i] for r in runs) for i in range(3))
            emit("sink", f"{workload}_rows_per_s_{flavor}", rate, "rows/s",
                 f"asyncpg copy_records_to_table into an identical empty {table}", statistics.median(copy_rates))
            if year_query:
                emit("sink", f"symbol_year_query_ms_{flavor}", view_ms, "ms",
                     "the same query on market_conditions_daily itself", table_ms)


if __name__ == "__main__":
    _use_uvloop()  # as `tickwire sink` does; the baseline runs on the same loop
    asyncio.run(main())
