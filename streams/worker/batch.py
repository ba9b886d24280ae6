"""The checkpoint every batch goes through, in this order:

1. each message through its stage's handler, once and in its partition's offset order
   (``Sequence``); one it refuses, or fails on, goes to the DLQ
   with its reason and source offset, and its key's state goes back to the last written;
2. the outputs delivered, awaited until the broker has them (``Outbox``);
3. each state the batch changed written once, to the table and its changelog, awaited;
4. the source offsets committed, by faust, once the agent has taken the next batch.

A crash between any two steps leaves a state that redoes the batch to the same outputs
(see ``stage.redelivered``). A failure in step 2 or 3 is not the messages' fault, and
the batch must not be committed: faust acknowledges a batch however its agent ends, so
the step is retried in place, with backoff, until it succeeds (a broker outage, a
missing topic, a partition without a leader), holding the batch's offsets and every
later message. A failure no retry can mend (an output larger than the broker accepts,
no authorisation) stops the process without committing, and a restarted worker gets the
batch again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Awaitable, Callable, NoReturn

import faust
from aiokafka.errors import KafkaError, KafkaTimeoutError

from tickwire.schemas.codec import dlq_record
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.metrics import Metrics
from tickwire.streams.worker.outbox import Message, Outbox
from tickwire.streams.worker.sequence import Sequence
from tickwire.streams.worker.stage import Stage

log = logging.getLogger("tickwire.worker")

MAX_BACKOFF_S = 10.0
STATE_WRITE_TIMEOUT_S = 60.0
REPORT_EVERY_S = 60.0  # one log line per stuck step per minute, however often it is retried


def retriable(exc: BaseException) -> bool:
    """A failure that time can mend: the broker or a partition's leader away, a topic not yet there."""
    return isinstance(exc, (KafkaTimeoutError, asyncio.TimeoutError, OSError)) or (
        isinstance(exc, KafkaError) and exc.retriable
    )


def stop_uncommitted(reason: str) -> NoReturn:
    """End the process at once: a clean shutdown would let faust commit the batch."""
    log.critical("%s; stopping without committing, a restarted worker gets the batch again", reason)
    logging.shutdown()
    os._exit(70)


class _Labelled(dict):
    """A metric's children by label value, each looked up once."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, label: str) -> Any:
        child = self[label] = self.metric.labels(label)
        return child


def where(message: faust.types.Message) -> dict[str, object]:
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


def in_partition_order(events: list[faust.EventT]) -> list[faust.EventT]:
    """``events`` with each partition's records in offset order, in the places they held.

    Around a rebalance faust can hand a batch a record ahead of earlier ones (seen in the
    crash test: a symbol's 15:22 bar before its 15:12-15:21 bars); in order, ``Sequence``
    admits them all instead of seeking back for the earlier ones.
    """
    last: dict[tuple[str, int], int] = {}
    for event in events:
        message = event.message
        where_ = (message.topic, message.partition)
        if message.offset < last.get(where_, -1):
            break
        last[where_] = message.offset
    else:
        return events
    slots: dict[tuple[str, int], list[int]] = {}
    for index, event in enumerate(events):
        slots.setdefault((event.message.topic, event.message.partition), []).append(index)
    ordered = list(events)
    for (topic, partition), indexes in slots.items():
        records = sorted((events[i] for i in indexes), key=lambda event: event.message.offset)
        if records != [events[i] for i in indexes]:
            log.warning("a batch held %s[%d]'s records out of offset order; applying them in order", topic, partition)
        for index, event in zip(indexes, records):
            ordered[index] = event
    return ordered


class Checkpoint:
    """Runs one stage's batches through the steps above."""

    def __init__(
        self, stage: Stage, outbox: Outbox, dlq_topic: str, metrics: Metrics,
        stop: Callable[[str], NoReturn] = stop_uncommitted, sequence: Sequence | None = None,
    ) -> None:
        self.stage, self.outbox, self.dlq_topic, self.metrics, self.stop = stage, outbox, dlq_topic, metrics, stop
        self.sequence = sequence or Sequence()
        self._consumed, self._produced = _Labelled(metrics.consumed), _Labelled(metrics.produced)

    def assigned(self) -> None:
        """Partitions were reassigned (and their tables recovered)."""
        self.sequence.reset()
        self.stage.assigned()

    async def reseek(self) -> None:
        """A timer's: seek back again the partitions whose offset due has not come, and
        fetch again those that stalled."""
        try:
            stalled = await self.sequence.stalled()
        except (KafkaError, asyncio.TimeoutError, OSError) as exc:  # the broker away: the next round asks again
            log.debug("cannot look for stalled partitions: %s", exc)
            stalled = {}
        await self.sequence.seek({**stalled, **self.sequence.overdue()})

    async def run(self, events: list[faust.EventT]) -> None:
        # Asking the broker where a partition starts fails as a delivery does.
        await self.until_done("sequence records", lambda: self.sequence.start(events))
        admitted, seeks = self.sequence.admit(in_partition_order(events))
        await self.sequence.seek(seeks)
        out = self.handle(admitted)  # 1
        await self.until_done("deliver outputs", lambda: self.outbox.deliver(out))  # 2
        for topic, _, _, _ in out:
            self._produced[topic].inc()
        await self.until_done("write state", lambda: self.stage.states.write(STATE_WRITE_TIMEOUT_S))  # 3
        # 4: faust commits the offsets once this returns

    async def until_done(self, step: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """``attempt()`` until it succeeds; readiness part ``outputs`` is false meanwhile."""
        failures, reported = 0, 0.0
        retries = self.metrics.batch_retries.labels(self.stage.name, step)
        while True:
            try:
                await attempt()
            except Exception as exc:
                reason = f"{self.stage.name}: cannot {step}: {type(exc).__name__}: {exc}"
                if not retriable(exc):
                    self.stop(reason)
                failures += 1
                retries.inc()
                if failures == 1:
                    self.metrics.set_ready(False, "outputs")
                if time.monotonic() - reported >= REPORT_EVERY_S:
                    reported = time.monotonic()
                    log.error("%s (%d attempts so far); retrying, the batch stays uncommitted", reason, failures)
                await asyncio.sleep(min(MAX_BACKOFF_S, 0.1 * 2 ** min(failures, 7)))
                continue
            if failures:
                log.warning("%s: %s after %d failed attempts", self.stage.name, step, failures)
                self.metrics.set_ready(True, "outputs")
            return

    def handle(self, events: list[faust.EventT]) -> list[Message]:
        """Step 1. A failure may have left its key's state half-changed: the key is forgotten
        and the batch's earlier messages of that key are applied again, their outputs
        (already queued) discarded."""
        stage, out = self.stage, []
        applied: dict[bytes | None, list[faust.EventT]] = {}
        for event in events:
            message = event.message
            self._consumed[message.topic].inc()
            mark = len(out)
            try:
                stage.handle(event, out)
            except InvalidMessage as exc:
                del out[mark:]
                out.append(self.reject(event, exc))
                continue
            except Exception as exc:  # a bug must cost one message, never the stream
                log.exception("internal error on a message; it goes to the DLQ", extra=where(message))
                del out[mark:]
                stage.forget(message.key)
                for earlier in applied.get(message.key, ()):
                    stage.handle(earlier, [])
                internal = InvalidMessage("internal", f"{type(exc).__name__}: {str(exc)[:500]}")
                out.append(self.reject(event, internal, exception=type(exc).__name__))
                continue
            applied.setdefault(message.key, []).append(event)
        return stage.finish(out)

    def reject(self, event: faust.EventT, exc: InvalidMessage, exception: str = "InvalidMessage") -> Message:
        message = event.message
        headers = message.headers or ()
        self.metrics.dlq.labels(message.topic, exc.reason).inc()
        # The DLQ record has the whole detail; a log line stays short whatever a producer sent.
        log.warning("rejected: %.300s", exc, extra={**where(message), "reason": exc.reason})
        dead = dlq_record(
            key=message.key, value=event.value, reason=exc.reason, detail=exc.detail,
            topic=message.topic, partition=message.partition, offset=message.offset,
            timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
            headers=list(headers.items()) if isinstance(headers, dict) else headers,
            stage=self.stage.name, exception=exception,
        )
        return self.dlq_topic, dead.key, dead.value, dead.headers
