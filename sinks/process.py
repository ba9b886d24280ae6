"""The sink process: one consumer group and one writer per (topic, table) pipeline, on one
connection pool, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tickwire.schemas.errors import Unreachable
from tickwire.schemas.kafka import start_kafka
from tickwire.schemas.metrics import Metrics, watch_broker
from tickwire.schemas.settings import Settings
from tickwire.schemas.tables import SINKS, sink_group_name
from tickwire.sinks.consumer import CountRebalances, TopicSink
from tickwire.sinks.postgres import TableWriter


async def run_sinks(settings: Settings, metrics: Metrics, tables: list[str]) -> None:
    """Write ``tables`` (names from ``SINKS``) from their topics until asked to stop."""
    chosen = [(topic, table) for topic, table in SINKS if table.name in tables]
    writers = [TableWriter(table) for _, table in chosen]

    async def prepare(conn: asyncpg.Connection) -> None:
        for writer in writers:
            await writer.prepare(conn)

    async def release(conn: asyncpg.Connection) -> None:
        """Sinks set no session state (their staging tables are meant to stay), so a released
        connection needs no reset query, a round trip per write, unless a write was cut short."""
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")

    try:
        pool = await asyncpg.create_pool(
            **settings.pg_options(), min_size=1, max_size=settings.pg_pool_size, init=prepare, reset=release
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unreachable(f"cannot connect to PostgreSQL at {settings.safe_dsn()}: {type(exc).__name__}: {exc}") from None
    producer = AIOKafkaProducer(**settings.kafka_options(), acks="all")
    consumers = [
        AIOKafkaConsumer(
            **settings.kafka_options(),
            # One group per pipeline, so each scales and lags on its own.
            group_id=f"{settings.topic_prefix}{settings.sink_group}.{sink_group_name(topic, table)}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        for topic, table in chosen
    ]
    for (topic, _), consumer in zip(chosen, consumers):
        consumer.subscribe([settings.topic(topic.name)], listener=CountRebalances(metrics))
    try:
        await start_kafka(settings, producer, *consumers)
    except Unreachable:
        await pool.close()
        raise
    sinks = [
        TopicSink(settings=settings, topic=topic, table=table, pool=pool, consumer=consumer, producer=producer, metrics=metrics)
        for (topic, table), consumer in zip(chosen, consumers)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(sink.run()) for sink in sinks]
    watcher = asyncio.create_task(watch_broker(metrics, settings.kafka_bootstrap))
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({*tasks, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*tasks, waiter, watcher):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()
        await pool.close()
    for task in tasks:
        if not task.cancelled() and task.exception():
            raise task.exception()
