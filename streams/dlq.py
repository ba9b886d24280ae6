"""``tickwire dlq replay``: dead-lettered records back onto their source topic, after a fix.

The DLQ keeps each rejected record's key, bytes and headers with Tickwire's and Kafka
Connect's error headers (``schemas.codec.dlq_record``). A replay reads the DLQ up to its
end at the start (so what it re-sends and is refused again is not read twice), keeps the
records that match the filters, strips the error headers, and sends each to its source
topic with ``tickwire.replayed_from`` naming the DLQ record. Records whose value the DLQ
had to truncate cannot be replayed and are counted apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tickwire.schemas.codec import DLQ_HEADER_PREFIXES
from tickwire.schemas.errors import Unreachable
from tickwire.schemas.kafka import start_kafka
from tickwire.schemas.settings import Settings
from tickwire.schemas.topics import DLQ

STALL_S = 60.0  # no record for this long while some are still to be read: the broker is gone

@dataclass(frozen=True)
class ReplayFilter:
    """Which DLQ records to re-send; an empty field matches every record."""

    reasons: frozenset[str] = frozenset()
    topic: str = ""  # the source topic's name on the broker
    from_offset: int = 0  # source offsets, inclusive
    to_offset: int | None = None

    def matches(self, headers: dict[str, bytes]) -> bool:
        if self.reasons and headers.get("tickwire.reason", b"").decode() not in self.reasons:
            return False
        if self.topic and headers.get("tickwire.source.topic", b"").decode() != self.topic:
            return False
        try:
            offset = int(headers.get("tickwire.source.offset", b""))
        except ValueError:
            return False
        return self.from_offset <= offset and (self.to_offset is None or offset <= self.to_offset)


@dataclass
class ReplayReport:
    matched: int = 0
    sent: int = 0
    truncated: int = 0  # matched, but the DLQ kept only the start of the value
    by_topic: dict[str, int] = field(default_factory=dict)


async def replay_dlq(settings: Settings, chosen: ReplayFilter, *, dry_run: bool) -> ReplayReport:
    """Re-send the DLQ records ``chosen`` matches (none with ``dry_run``); what was found."""
    dlq = settings.topic(DLQ.name)
    consumer = AIOKafkaConsumer(**settings.kafka_options(), enable_auto_commit=False, group_id=None)
    producer = None if dry_run else AIOKafkaProducer(**settings.kafka_options(), acks="all", enable_idempotence=True)
    report = ReplayReport()
    await start_kafka(settings, *filter(None, (consumer, producer)))
    try:
        partitions = [TopicPartition(dlq, p) for p in await _partitions(settings, dlq)]
        if not partitions:
            return report
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        deadline = time.monotonic() + STALL_S
        while pending:
            if time.monotonic() > deadline:
                raise Unreachable(f"reading {dlq} made no progress for {STALL_S:.0f} s; {report.sent} records were sent")
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            if batches:
                deadline = time.monotonic() + STALL_S
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    headers = dict(record.headers or ())
                    if chosen.matches(headers):
                        await _resend(producer, record, headers, tp, report)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        if producer:
            await producer.flush()
    except KafkaError as exc:
        raise Unreachable(f"cannot read {dlq} or write its records back at {settings.kafka_bootstrap}: {exc}") from None
    finally:
        await consumer.stop()
        if producer:
            await producer.stop()
    return report


async def _partitions(settings: Settings, topic: str) -> list[int]:
    """``topic``'s partitions (a consumer knows only those of topics it subscribed to)."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await start_kafka(settings, admin)
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t["topic"] == topic for p in t.get("partitions", ()))


async def _resend(producer: AIOKafkaProducer | None, record, headers: dict[str, bytes], tp: TopicPartition, report: ReplayReport) -> None:
    report.matched += 1
    if "tickwire.truncated_from_bytes" in headers:
        report.truncated += 1
        return
    source = headers["tickwire.source.topic"].decode()
    report.by_topic[source] = report.by_topic.get(source, 0) + 1
    if producer is None:
        return
    kept = [(name, value) for name, value in record.headers or () if not name.startswith(DLQ_HEADER_PREFIXES)]
    kept.append(("tickwire.replayed_from", f"{tp.topic}:{tp.partition}:{record.offset}".encode()))
    await producer.send(source, key=record.key, value=record.value, headers=kept)
    report.sent += 1
