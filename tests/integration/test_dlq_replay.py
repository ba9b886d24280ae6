"""``tickwire dlq replay`` against the real broker: the chosen records go back to their source
topic with their own key, bytes and headers, the error headers stripped; a dry run sends
nothing; truncated records are counted, never sent."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tickwire.schemas.codec import dlq_record
from tickwire.schemas.topics import BARS, DLQ, PREDICTIONS
from tickwire.streams.topics import ensure_topics

pytestmark = pytest.mark.integration


def dlq_cli(processes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tickwire.streams.cli", "dlq", "replay", *args],
        env=processes.env(), capture_output=True, text=True, timeout=120,
    )


async def records_of(settings, topic: str) -> list:
    consumer = AIOKafkaConsumer(settings.topic(topic), **settings.kafka_options(), auto_offset_reset="earliest")
    await consumer.start()
    found: list = []
    try:
        while batch := await consumer.getmany(timeout_ms=3000):
            found += [r for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    return found


async def test_chosen_dlq_records_go_back_to_their_source_topic(isolated, processes):
    await ensure_topics(isolated)
    bars, predictions = isolated.topic(BARS.name), isolated.topic(PREDICTIONS.name)
    dead = [
        dlq_record(key=b"A", value=b'{"symbol":"A"}', reason="schema", detail="missing ts", topic=bars, partition=1, offset=10,
                   headers=[("trace", b"t-1")], stage="symbols"),
        dlq_record(key=b"B", value=b'{"symbol":"B"}', reason="schema", detail="missing ts", topic=bars, partition=2, offset=11),
        dlq_record(key=b"C", value=b"x" * 100_000, reason="schema", detail="too big for the DLQ", topic=bars, partition=0, offset=12),
        dlq_record(key=b"D", value=b'{"symbol":"D"}', reason="late_bar", detail="late", topic=bars, partition=0, offset=13),
        dlq_record(key=b"E", value=b'{"x":1}', reason="schema", detail="bad", topic=predictions, partition=0, offset=14),
    ]
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all", max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for record in dead:
            await producer.send(isolated.topic(DLQ.name), key=record.key, value=record.value, headers=record.headers)
        await producer.flush()
    finally:
        await producer.stop()

    dry = dlq_cli(processes, "--reason", "schema", "--topic", BARS.name, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"3 DLQ records matched; would send 2 to {bars}; 1 truncated" in dry.stdout
    assert await records_of(isolated, BARS.name) == []

    done = dlq_cli(processes, "--reason", "schema", "--topic", BARS.name)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    back = sorted(await records_of(isolated, BARS.name), key=lambda r: r.key)
    assert [(r.key, r.value) for r in back] == [(b"A", b'{"symbol":"A"}'), (b"B", b'{"symbol":"B"}')]
    headers = dict(back[0].headers)
    assert headers["trace"] == b"t-1" and headers["tickwire.replayed_from"].startswith(isolated.topic(DLQ.name).encode())
    assert not any(name.startswith(("tickwire.reason", "__connect.errors.")) for name, _ in back[0].headers)

    refused = dlq_cli(processes, "--reason", "no_such_reason")
    assert refused.returncode == 2 and "unknown DLQ reason no_such_reason" in refused.stderr
