"""Sink throughput: Kafka md.conditions.v1 -> market_conditions, against the database's own limit.

The baseline is asyncpg ``copy_records_to_table`` of the same rows, from memory, into the
same empty table (``market_conditions_intraday`` or ``_daily``, in a second freshly
migrated database) in batches of the same size: what the database can take with no
Kafka, decoding or merge at all. Two workloads: 1m bars of 100 symbols, and a backfill
of 25 years of daily bars for 500 symbols (20 with ``--quick``), one symbol's history
after the other as vendors ship them; for the latter also the query of one symbol's year
through the ``market_conditions`` view, against the same query on its table, and on
TimescaleDB a vendor's corrected year merged into compressed chunks, against the first load.
One figure each on plain PostgreSQL, and on TimescaleDB where it is preloaded.

    python tests/bench/bench_sink.py [--quick] [--rows N] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

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


class SinkRun(NamedTuple):
    rate: float  # rows/s of the first load
    view_ms: float = math.nan  # the symbol-year query through market_conditions (history only)
    table_ms: float = math.nan  # ... and on market_conditions_daily itself
    backfill_rate: float = math.nan  # rows/s of a corrected year into compressed chunks (history, TimescaleDB)


async def sink_run(settings, rows: list[Condition], flavor: Flavor, history: bool = False) -> SinkRun:
    db, name = await fresh_database(settings, flavor)
    await ensure_topics(db)
    topic = db.topic(CONDITIONS.name)
    producer = AIOKafkaProducer(**db.kafka_options(), linger_ms=20, max_batch_size=1 << 20, acks="all")
    await producer.start()
    encode = msgspec.json.Encoder().encode

    async def publish(batch: list[Condition]) -> None:
        for r in batch:
            await producer.send(topic, key=r.symbol.encode(), value=encode(r))
        await producer.flush()

    await publish(rows)
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
    task = asyncio.create_task(sink.run())

    async def drained(total: int) -> None:
        """Until the sink has committed the offsets of ``total`` records (it commits them only
        after the rows' transaction): watched in-process, because polling count(*) on the
        growing table would take a core of this 2-core machine from the database under test."""
        while sum(sink._committed.values()) < total:
            if task.done():
                task.result()
                raise RuntimeError("the sink stopped before writing every row")
            await asyncio.sleep(0.02)

    started = time.perf_counter()
    await drained(len(rows))
    run = SinkRun(len(rows) / (time.perf_counter() - started))
    conn = await asyncpg.connect(**db.pg_options())
    written = await conn.fetchval("SELECT count(*) FROM market_conditions")
    if written != len(rows):
        raise RuntimeError(f"market_conditions holds {written} rows, {len(rows)} were published")
    if history:
        await conn.execute("ANALYZE market_conditions_daily")
        run = run._replace(view_ms=await query_ms(conn, YEAR_QUERY.format(relation="market_conditions")),
                           table_ms=await query_ms(conn, YEAR_QUERY.format(relation="market_conditions_daily")))
    if history and flavor == "timescaledb":
        # A vendor corrects a year the compression policy has long compressed: each row an
        # update merged into a compressed chunk (publishing included in the time).
        await conn.fetchval("SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('market_conditions_daily') c")
        corrections = [msgspec.structs.replace(r, close=r.close + 0.25) for r in rows if r.timestamp.year == 2010]
        started = time.perf_counter()
        await publish(corrections)
        await drained(len(rows) + len(corrections))
        run = run._replace(backfill_rate=len(corrections) / (time.perf_counter() - started))
        corrected = await conn.fetchval(
            """SELECT count(*) FROM market_conditions_daily WHERE close - open = 0.75
                AND "timestamp" >= '2010-01-01' AND "timestamp" < '2011-01-01'"""
        )
        if corrected != len(corrections):
            raise RuntimeError(f"{corrected} of {len(corrections)} corrected rows stored")
    await conn.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await consumer.stop()
    await producer.stop()
    await pool.close()
    await drop_database(settings, name)
    return run


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
    parser.add_argument("--rows", type=int, help="rows per run of 1m bars (default 1,000,000)")
    parser.add_argument("--repeats", type=int, help="runs per figure, the median reported (default 3)")
    args = parser.parse_args()
    count = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    workloads = (
        ("market_conditions", conditions(count), "market_conditions_intraday", False),
        ("daily_history", daily_history(20 if args.quick else 500), "market_conditions_daily", True),
    )
    conn = await asyncpg.connect(**local_settings().pg_options())
    # Plain PostgreSQL always; TimescaleDB too where it is preloaded.
    flavors: list[Flavor] = ["postgres"] + (["timescaledb"] if await detect_flavor(conn) == "timescaledb" else [])
    await conn.close()
    for workload, rows, table, history in workloads:
        for flavor in flavors:
            runs, copy_rates = [], []
            for _ in range(repeats):
                settings = local_settings(topic_prefix=f"bsink{uuid.uuid4().hex[:8]}.")
                copy_rates.append(await copy_baseline(settings, rows, settings.max_batch_rows, flavor, table))
                runs.append(await sink_run(settings, rows, flavor, history))
            run = SinkRun(*(statistics.median(r[i] for r in runs) for i in range(len(SinkRun._fields))))
            emit("sink", f"{workload}_rows_per_s_{flavor}", run.rate, "rows/s",
                 f"asyncpg copy_records_to_table into an identical empty {table}", statistics.median(copy_rates))
            if history:
                emit("sink", f"symbol_year_query_ms_{flavor}", run.view_ms, "ms",
                     "the same query on market_conditions_daily itself", run.table_ms)
            if not math.isnan(run.backfill_rate):
                emit("sink", f"corrected_year_into_compressed_chunks_rows_per_s_{flavor}", run.backfill_rate, "rows/s",
                     "the same sink's first load of the history, into uncompressed chunks", run.rate)


if __name__ == "__main__":
    _use_uvloop()  # as `tickwire sink` does; the baseline runs on the same loop
    asyncio.run(main())
