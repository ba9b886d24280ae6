"""When the sink stops filling a batch: full, the flush interval, or the database free again."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import msgspec
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from tickwire.schemas.market import Condition
from tickwire.schemas.metrics import Metrics
from tickwire.schemas.settings import Settings
from tickwire.schemas.tables import MARKET_CONDITIONS
from tickwire.schemas.topics import CONDITIONS
from tickwire.sinks.consumer import TopicSink

TP = TopicPartition("md.conditions.v1", 0)
T0 = datetime(2026, 4, 1, tzinfo=timezone.utc)


def records(start: int, count: int) -> dict[TopicPartition, list[ConsumerRecord]]:
    out = []
    for offset in range(start, start + count):
        value = msgspec.json.encode(Condition(
            symbol="C", timeframe="1m", timestamp=T0.replace(minute=offset % 60, hour=offset // 60),
            open=10.0, high=11.0, low=9.0, close=10.5, volume=100,
        ))
        out.append(ConsumerRecord(TP.topic, TP.partition, offset, 0, 0, b"C", value, None, 1, len(value), ()))
    return {TP: out}


class Consumer:
    """Hands out one poll per ``getmany`` (more fail the test); calls ``on_poll`` with its number."""

    def __init__(self, polls: list, on_poll=lambda n: None) -> None:
        self.polls, self.on_poll, self.timeouts_ms = polls, on_poll, []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.timeouts_ms.append(timeout_ms)
        self.on_poll(len(self.timeouts_ms))
        if not self.polls:
            raise AssertionError("the batch should have ended before this poll")
        return self.polls.pop(0)


def sink(consumer: Consumer, **settings) -> TopicSink:
    return TopicSink(
        settings=Settings(flush_interval_s=3600.0, **settings), topic=CONDITIONS, table=MARKET_CONDITIONS,
        pool=None, consumer=consumer, producer=None, metrics=Metrics(CollectorRegistry()),
    )


async def test_with_no_write_in_flight_the_first_records_are_a_batch():
    consumer = Consumer([records(0, 3), records(3, 3)])
    batch = await sink(consumer)._collect(None)
    assert batch.size == 3 and batch.offsets == {TP: 3}
    assert len(consumer.timeouts_ms) == 1


async def test_a_batch_grows_while_the_write_before_it_runs_and_ends_when_it_is_done():
    writing = asyncio.get_running_loop().create_future()
    consumer = Consumer(
        [records(0, 2), records(2, 2), records(4, 2), records(6, 2)],
        on_poll=lambda n: writing.set_result(None) if n == 3 else None,
    )
    batch = await sink(consumer)._collect(writing)
    assert batch.size == 6 and batch.offsets == {TP: 6}
    # Once it holds records, it looks at the write between short polls, not the flush interval.
    assert consumer.timeouts_ms[0] > 1000 and max(consumer.timeouts_ms[1:]) <= 5


async def test_a_full_batch_ends_even_while_a_write_runs():
    writing = asyncio.get_running_loop().create_future()
    consumer = Consumer([records(0, 4), records(4, 4), records(8, 4)])
    batch = await sink(consumer, max_batch_rows=8)._collect(writing)
    assert batch.size == 8 and len(consumer.timeouts_ms) == 2
