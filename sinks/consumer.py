"""A topic-to-table sink: aiokafka ``getmany`` batches, one DB transaction, then commit.

Checkpoint order (DESIGN rule 3): write the batch and commit the transaction, flush
DLQ records, and only then commit the Kafka offsets. A failed write commits nothing;
retriable database errors are retried with capped exponential backoff, data errors
are isolated by bisecting the batch and the bad rows go to the DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Callable, Generic, TypeVar

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from tickwire.schemas.codec import dlq_record
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.metrics import Metrics
from tickwire.schemas.settings import Settings
from tickwire.schemas.tables import Table
from tickwire.schemas.topics import DLQ, Topic
from tickwire.sinks.errors import is_data_error, is_retriable
from tickwire.sinks.postgres import TableWriter

log = logging.getLogger("tickwire.sink")
T = TypeVar("T", bound=msgspec.Struct)
_MIN_GROUP_ROWS = 500  # a batch is spread over more connections only in groups at least this big
_WRITE_POLL_S = 0.005  # while a write is in flight, a started batch polls this often
_PAUSE_AFTER_S = 5.0  # a write taking longer pauses the partitions, polled only to stay in the group
# Records decoded between two turns of the event loop: getmany returns prefetched records
# without yielding, and the write in flight needs the loop to stream its COPY and merge.
_DECODE_CHUNK = 500


class _Rejected(msgspec.Struct):
    record: ConsumerRecord
    reason: str
    detail: str


class _Batch:
    """Rows and their source records per partition, rejects, and the offsets to commit."""

    def __init__(self) -> None:
        self.rows: dict[TopicPartition, list[tuple]] = {}
        self.sources: dict[TopicPartition, list[ConsumerRecord]] = {}
        self.rejected: list[_Rejected] = []
        self.offsets: dict[TopicPartition, int] = {}
        self.size = 0

    def groups(self, count: int, key: Callable[[tuple], object]) -> list[tuple[list[tuple], list[ConsumerRecord]]]:
        """Rows dealt into at most ``count`` groups, one per database connection, by the hash
        of their table key: every row of one key lands in one group (so the last one wins
        there and no two transactions touch one key), in its partition's order, and the
        groups are even however few partitions the batch drew from. Small batches stay in
        fewer groups: a transaction per handful of rows costs more than it saves."""
        rows_count = sum(len(rows) for rows in self.rows.values())
        count = max(1, min(count, rows_count // _MIN_GROUP_ROWS))
        ordered = sorted(self.rows, key=lambda tp: (tp.topic, tp.partition))
        if count == 1:
            return [(
                [row for tp in ordered for row in self.rows[tp]],
                [source for tp in ordered for source in self.sources[tp]],
            )]
        groups: list[tuple[list[tuple], list[ConsumerRecord]]] = [([], []) for _ in range(count)]
        for tp in ordered:
            for row, source in zip(self.rows[tp], self.sources[tp]):
                rows, sources = groups[hash(key(row)) % count]
                rows.append(row)
                sources.append(source)
        return [g for g in groups if g[0]]


class CountRebalances(ConsumerRebalanceListener):
    """Counts the group's rebalances in ``tickwire_rebalances_total``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.metrics.rebalances.inc()


class TopicSink(Generic[T]):
    """Consume one topic and write its records into one table."""

    def __init__(
        self,
        *,
        settings: Settings,
        topic: Topic,
        table: Table,
        pool: asyncpg.Pool,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        metrics: Metrics,
        max_retry_backoff_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.topic_name = settings.topic(topic.name)
        self.dlq_topic = settings.topic(DLQ.name)
        self.table = table
        self.writer = TableWriter(table)
        self.pool = pool
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.max_retry_backoff_s = max_retry_backoff_s
        self._decoder = msgspec.json.Decoder(table.message or table.record)
        self._ts_index = table.columns.index(table.time_column) if table.time_column else None
        self._committed: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task | None = None  # the offset commit of the last batch written
        self._lag_reported = 0.0

    def decode(self, record: ConsumerRecord) -> tuple | None:
        if not record.value:
            raise InvalidMessage("empty", "message has no value")
        try:
            row = self._decoder.decode(record.value)
        except msgspec.DecodeError as exc:
            raise InvalidMessage("schema", str(exc)) from None
        return msgspec.structs.astuple(row) if type(row) is self.table.record else None

    async def run(self) -> None:
        """Consume until cancelled; every batch is written before its offsets are committed.

        The next batch is collected while the previous one is being written, so at most
        two batches are in memory; commits stay in batch order.
        """
        self.metrics.set_ready(True, "database")
        pending: asyncio.Task | None = None
        try:
            while True:
                batch = await self._collect(pending)
                if pending is not None:
                    await self._wait_polling(pending)
                    pending = None
                if batch.offsets:
                    pending = asyncio.create_task(self.checkpoint(batch))
                else:
                    await self._report_lag()
        finally:
            for task in (pending, self._committing):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    async def _collect(self, writing: asyncio.Task | None) -> "_Batch":
        """Records until the batch is full, ``flush_interval_s`` has passed, or it holds some
        and no write is in flight: a row then waits for the write before it, not for a
        deadline, and batches grow only as large as the database's pace makes them."""
        max_rows = self.settings.max_batch_rows
        deadline = time.monotonic() + self.settings.flush_interval_s
        batch = _Batch()
        while batch.size < max_rows:
            if batch.size and (writing is None or writing.done()):
                break
            timeout_s = deadline - time.monotonic()
            if timeout_s <= 0:
                break
            if batch.size:  # look again soon whether the write has finished
                timeout_s = min(timeout_s, _WRITE_POLL_S)
            polled = await self.consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=min(_DECODE_CHUNK, max_rows - batch.size)
            )
            for tp, records in polled.items():
                self.metrics.consumed.labels(tp.topic).inc(len(records))
                batch.offsets[tp] = records[-1].offset + 1
                rows, sources = batch.rows.setdefault(tp, []), batch.sources.setdefault(tp, [])
                for record in records:
                    try:
                        row = self.decode(record)
                    except InvalidMessage as exc:
                        batch.rejected.append(_Rejected(record, exc.reason, exc.detail))
                        continue
                    if row is not None:  # None: another table's record type on a shared topic
                        rows.append(row)
                        sources.append(record)
                batch.size += len(records)
            await asyncio.sleep(0)
        return batch

    async def _wait_polling(self, task: asyncio.Task) -> None:
        """Await a write; if the database is slow, keep polling paused partitions so the
        consumer keeps its group membership (max_poll_interval) while lag grows.

        A partition the group assigns during such a poll is not paused: the records it
        returns are not part of any batch, so it is sought back to the first of them
        (dropped, they were lost, and the offsets after them committed)."""
        while not task.done():
            await asyncio.wait({task}, timeout=_PAUSE_AFTER_S)
            if not task.done():
                self.consumer.pause(*self.consumer.assignment())
                for tp, records in (await self.consumer.getmany(timeout_ms=100)).items():
                    self.consumer.seek(tp, records[0].offset)
                await self._report_lag()
        if self.consumer.paused():
            self.consumer.resume(*self.consumer.paused())
        task.result()

    async def checkpoint(self, batch: "_Batch") -> None:
        """Write the batch (partitions spread over the pool's connections, one transaction
        each), send rejects to the DLQ, then start committing the offsets."""
        rows_count = sum(len(r) for r in batch.rows.values())
        if rows_count:
            started = time.perf_counter()
            results = await asyncio.gather(
                *(self._write_isolating(rows, sources) for rows, sources in batch.groups(self.settings.pg_pool_size, self.writer.key_of))
            )
            self.metrics.flush_seconds.labels(self.table.name).observe(time.perf_counter() - started)
            self.metrics.batch_rows.labels(self.table.name).observe(rows_count)
            self.metrics.rows_written.labels(self.table.name).inc(sum(written for written, _ in results))
            for record, reason, detail in (item for _, bad in results for item in bad):
                log.warning(
                    "row rejected (%s): %s",
                    reason,
                    detail,
                    extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "table": self.table.name},
                )
                batch.rejected.append(_Rejected(record, reason, detail))
            self._observe_latency(batch)
        if batch.rejected:
            await self._send_dlq(batch.rejected)
        # The offsets are committed while the next batch is written: that broker round trip
        # (and the lag report) would otherwise hold up every write. Commits stay in batch
        # order, and a failed one fails the next checkpoint.
        if self._committing is not None:
            await self._committing
        self._committing = asyncio.create_task(self._commit(batch.offsets))

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit a written batch's offsets. A partition the group has moved since the batch
        was read is not ours to commit: its owner writes those records again from the last
        commit, and the write is idempotent. A rebalance under way refuses the commit for the
        same reason; neither ends the sink (it ended it, and with it every table's pipeline)."""
        assigned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            if offsets:
                await self.consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("a batch written as the group rebalanced was not committed (%s); its records are written"
                        " again, idempotently", type(exc).__name__, extra={"table": self.table.name})
            return
        self._committed.update(offsets)
        await self._report_lag()

    async def _report_lag(self) -> None:
        """Lag per assigned partition: its end offset minus our commit, at most once a second.
        End offsets are asked of the broker: a paused partition's fetch position says
        nothing about what keeps arriving."""
        now = time.monotonic()
        if now - self._lag_reported < 1.0:
            return
        self._lag_reported = now
        assigned = [tp for tp in self.consumer.assignment() if tp in self._committed]
        if not assigned:
            return
        try:
            ends = await self.consumer.end_offsets(assigned)
        except KafkaError:
            return  # the broker is away; readiness already says so
        for tp, end in ends.items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - self._committed[tp]))

    def _observe_latency(self, batch: "_Batch") -> None:
        """Event time: the batch's newest row; publish time: each partition's oldest record."""
        stage = f"sink:{self.table.name}"
        now = datetime.now(timezone.utc)
        if self._ts_index is not None:
            newest = max(rows[-1][self._ts_index] for rows in batch.rows.values() if rows)
            self.metrics.event_latency.labels(stage).observe(max(0.0, (now - newest).total_seconds()))
        publish = self.metrics.publish_latency.labels(stage)
        now_ms = now.timestamp() * 1000
        for sources in batch.sources.values():
            if sources:
                publish.observe(max(0.0, (now_ms - sources[0].timestamp) / 1000))

    async def _write_isolating(
        self, rows: list[tuple], sources: list[ConsumerRecord]
    ) -> tuple[int, list[tuple[ConsumerRecord, str, str]]]:
        """Write ``rows``; on a data error bisect until the bad rows (their records, reasons
        and details) are found."""
        try:
            return await self._write_retrying(rows), []
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(rows) == 1:
                code = getattr(exc, "sqlstate", None) or type(exc).__name__
                return 0, [(sources[0], getattr(exc, "reason", "database_rejected"), f"{code}: {str(exc)[:500]}")]
        mid = len(rows) // 2
        left_written, left_bad = await self._write_isolating(rows[:mid], sources[:mid])
        right_written, right_bad = await self._write_isolating(rows[mid:], sources[mid:])
        return left_written + right_written, left_bad + right_bad

    async def _write_retrying(self, rows: list[tuple]) -> int:
        backoff_s = 0.1
        while True:
            try:
                async with self.pool.acquire() as conn:
                    written = await self.writer.write(conn, rows)
                self.metrics.set_ready(True, "database")
                return written
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                self.metrics.set_ready(False, "database")
                self.metrics.db_retries.labels(self.table.name).inc()
                self.metrics.db_backoff_seconds.labels(self.table.name).inc(backoff_s)
                log.warning(
                    "database unavailable (%s), retrying in %.1fs", type(exc).__name__, backoff_s, extra={"table": self.table.name}
                )
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self.max_retry_backoff_s)

    async def _send_dlq(self, rejected: list[_Rejected]) -> None:
        for r in rejected:
            rec = r.record
            self.metrics.dlq.labels(rec.topic, r.reason).inc()
            dead = dlq_record(
                key=rec.key, value=rec.value, reason=r.reason, detail=r.detail,
                topic=rec.topic, partition=rec.partition, offset=rec.offset, timestamp_ms=rec.timestamp,
                headers=rec.headers or (), stage=f"sink:{self.table.name}",
                exception={"database_rejected": "DatabaseRejected", "conflicting_id": "ConflictingKey"}.get(r.reason, "InvalidMessage"),
            )
            await self.producer.send(self.dlq_topic, key=dead.key, value=dead.value, headers=dead.headers)
        await self.producer.flush()
        self.metrics.produced.labels(self.dlq_topic).inc(len(rejected))

