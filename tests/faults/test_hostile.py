"""A corpus of hostile messages on md.bars.v1: each lands in the DLQ with its reason and
source offset, is counted, and every good message around it is processed."""

from __future__ import annotations

import urllib.request

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codec import DLQ_MAX_VALUE_BYTES
from schemas.topics import BARS, DLQ
from streams.cli import _topics
from streams.simulator import MarketSimulator
from tests.conftest import wait_for
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration

good_bars = list(MarketSimulator(["HOST"], seed=3, start=START).bars(40))
base = msgspec.json.decode(msgspec.json.encode(good_bars[5]))
_DROP = object()


def bar(**changes) -> bytes:
    body = {**base, **changes}
    return msgspec.json.encode({k: v for k, v in body.items() if v is not _DROP})


# (kind, key, value, headers, expected reason)
CORPUS = [
    ("invalid utf-8", b"HOST", b'{"symbol": "HO\xff\xfeST"}', None, "not_utf8"),
    ("not json", b"HOST", b"symbol=HOST,close=1", None, "not_json"),
    ("truncated json", b"HOST", bar()[:-3], None, "not_json"),
    ("json array", b"HOST", b"[1, 2, 3]", None, "schema"),
    ("json number", b"HOST", b"42", None, "schema"),
    ("wrong type", b"HOST", bar(open="100.0"), None, "schema"),
    ("missing field", b"HOST", bar(close=_DROP), None, "schema"),
    ("null field", b"HOST", bar(high=None), None, "schema"),
    ("huge extra field", b"HOST", bar(comment="x" * 500_000), None, "schema"),
    ("NaN", b"HOST", bar().replace(b'"open":' + msgspec.json.encode(base["open"]), b'"open":NaN'), None, "not_json"),
    ("Infinity", b"HOST", bar().replace(b'"high":' + msgspec.json.encode(base["high"]), b'"high":Infinity'), None, "not_json"),
    ("overflowing number", b"HOST", bar().replace(b'"low":' + msgspec.json.encode(base["low"]), b'"low":1e999'), None, "schema"),
    ("zero price", b"HOST", bar(open=0), None, "schema"),
    ("negative price", b"HOST", bar(low=-1.0), None, "schema"),
    ("high below low", b"HOST", bar(high=base["low"] - 1, ts="2026-03-05T00:00:00Z"), None, "invalid_value"),
    ("close above high", b"HOST", bar(close=base["high"] + 1, ts="2026-03-05T00:01:00Z"), None, "invalid_value"),
    ("negative volume", b"HOST", bar(volume=-10), None, "schema"),
    ("fractional volume", b"HOST", bar(volume=10.5), None, "schema"),
    ("before 1970", b"HOST", bar(ts="1969-07-20T20:17:00Z"), None, "bad_timestamp"),
    ("years ahead", b"HOST", bar(ts="2099-01-01T00:00:00Z"), None, "bad_timestamp"),
    ("naive timestamp", b"HOST", bar(ts="2026-03-02T14:30:00"), None, "schema"),
    ("not a timestamp", b"HOST", bar(ts="yesterday"), None, "schema"),
    ("symbol too long", b"HOSTHOSTHOST", bar(symbol="HOSTHOSTHOST"), None, "schema"),
    ("control characters", b"HO\x07ST", bar(symbol="HO\u0007ST"), None, "schema"),
    ("sql in symbol", b"X'; DROP", bar(symbol="X'; DROP TABLE market_conditions;--"), None, "schema"),
    ("sql in timeframe", b"HOST", bar(timeframe="1m'; DELETE FROM market_conditions;--"), None, "schema"),
    ("key is not the symbol", b"OTHER", bar(ts="2026-03-05T00:02:00Z"), None, "invalid_value"),
    ("empty message", b"HOST", b"", None, "empty"),
    ("10 MB message", b"HOST", b'{"symbol":"' + b"A" * 10_000_000 + b'"}', None, "too_large"),
    ("unknown schema version", b"HOST", bar(ts="2026-03-05T00:03:00Z"), [("tickwire.schema.version", b"7")], "unknown_version"),
    ("out of order bar", b"HOST", msgspec.json.encode(good_bars[2]), None, "late_bar"),
]


async def test_every_hostile_message_is_dead_lettered_and_good_ones_flow(isolated, processes):
    await _topics(isolated)
    worker, port = processes.start("worker")
    processes.start("sink")
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all", max_request_size=12_000_000)
    await producer.start()
    topic = isolated.topic(BARS.name)
    encode = msgspec.json.Encoder().encode
    sent = {}
    try:
        for i, good in enumerate(good_bars[:10]):
            await producer.send_and_wait(topic, key=b"HOST", value=encode(good))
        for i, (kind, key, value, headers, _) in enumerate(CORPUS):
            meta = await producer.send_and_wait(topic, key=key, value=value, headers=headers)
            sent[(meta.partition, meta.offset)] = kind
            if i < 30:
                await producer.send_and_wait(topic, key=b"HOST", value=encode(good_bars[10 + i]))
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        isolated.topic(DLQ.name), **isolated.kafka_options(), auto_offset_reset="earliest", fetch_max_bytes=64_000_000,
        max_partition_fetch_bytes=16_000_000,
    )
    await consumer.start()
    found = {}
    try:
        for _ in range(120):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    h = dict(r.headers)
                    found[(int(h["tickwire.source.partition"]), int(h["tickwire.source.offset"]))] = (
                        h["tickwire.reason"].decode(), r.value
                    )
            if len(found) >= len(CORPUS):
                break
    finally:
        await consumer.stop()

    expected = {kind: reason for kind, _, _, _, reason in CORPUS}
    got = {sent[where]: reason for where, (reason, _) in found.items() if where in sent}
    assert got == expected
    values = {kind: value for kind, _, value, _, _ in CORPUS}
    # Original bytes kept; the 10 MB one keeps its first 64 KiB.
    assert all(found[where][1] == values[kind][:DLQ_MAX_VALUE_BYTES] for where, kind in sent.items())

    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        async def all_good():
            return await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'HOST' AND timeframe = '1m'") >= 40

        assert await wait_for(all_good, timeout_s=120, check=processes.check_alive)
        assert await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'HOST' AND timeframe = '1m'") == 40
        assert await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol <> 'HOST'") == 0
    finally:
        await conn.close()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    dlq_total = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("tickwire_dlq_messages_total{"))
    assert dlq_total == len(CORPUS)
    processes.check_alive()
