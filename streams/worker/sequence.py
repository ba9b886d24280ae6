"""Each source partition's records applied once, in offset order, none skipped.

faust's consumer does not promise it around a rebalance: records fetched before its seek
to the committed offsets are handed over after it (faust-streaming issues 216 and 221),
so a partition's stream can jump ahead, go back or repeat itself. And faust drops the
records it then fetches again (its read-offset filter) and counts the offsets it jumped
over as done (its "gaps", meant for compacted topics), committing them. The crash test
caught it: a handful of symbols' bars never applied, their offsets committed, every
later condition of those symbols computed without them.

``Sequence`` keeps, per partition, the offset due next: after each rebalance the committed
offset, or the partition's beginning when the group has committed none (the consumer
starts from the earliest record, and the first record handed over may be a stale one far
ahead), then one past each record admitted. A record below it was applied already and
is dropped. A record above it is withheld: never acknowledged, so faust cannot commit it.
The records fetched again after faust's seek follow the stale ones, and are admitted in
order. Only if the offset due has not come within ``RESEEK_S`` is the partition sought
back to it; a record at or below the first one withheld that comes after that seek
starts a real hole in the log (a transaction marker, a compacted record), and the
partition goes on from there. faust's own filter is switched off for these topics
(``ReadOffsets``).

An agent never calls into faust's consumer thread: during a rebalance that thread waits
for the agents to finish their batches, and an agent waiting for it would never finish.
Where a partition begins is asked of a client of its own (``Beginnings``), and a seek is
faust's own, which sets the client's position without waiting for the thread.

One stage per input topic: a seek moves the partition for every agent reading it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Awaitable, Callable, Collection

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from tickwire.schemas.settings import Settings

log = logging.getLogger("tickwire.worker")
RESEEK_S = 5.0
Where = tuple[str, int]  # (topic, partition)


class Sequence:
    """The offset due next per partition of one stage's inputs (see the module docstring).

    ``consumer()`` is faust's consumer (its committed offsets, and its seek); ``beginnings``
    says where partitions start. Without them (a unit test) the first record seen of a
    partition starts it.
    """

    def __init__(
        self, consumer: Callable[[], Any] | None = None, beginnings: Callable[[list[Where]], Awaitable[dict[Where, int]]] | None = None,
    ) -> None:
        self._consumer, self._beginnings = consumer, beginnings
        self.due: dict[Where, int] = {}
        # partition -> (the offset due, the first record withheld, when it was withheld or last sought back)
        self._withheld: dict[Where, tuple[int, int, float]] = {}
        self._sought: set[Where] = set()

    def reset(self) -> None:
        """Partitions were reassigned: what is due comes from the committed offsets again."""
        self.due.clear()
        self._withheld.clear()
        self._sought.clear()

    async def start(self, events: list[faust.EventT]) -> None:
        """The offset due of each partition ``events`` hold that is new since the rebalance."""
        new = {(e.message.topic, e.message.partition) for e in events} - self.due.keys()
        if not new or self._consumer is None:
            return
        committed = {where: self._consumer()._committed_offset.get(TP(*where)) for where in new}
        uncommitted = [where for where, offset in committed.items() if offset is None]
        beginnings = await self._beginnings(uncommitted) if uncommitted and self._beginnings else {}
        for where, offset in committed.items():
            self.due[where] = offset if offset is not None else beginnings.get(where, 0)

    def admit(self, events: list[faust.EventT]) -> tuple[list[faust.EventT], dict[Where, int]]:
        """(the events to apply, in their order; partition -> offset to seek back to)."""
        admitted: list[faust.EventT] = []
        seeks: dict[Where, int] = {}
        now = time.monotonic()
        for event in events:
            message = event.message
            where, offset = (message.topic, message.partition), message.offset
            due = self.due.get(where, offset)
            if offset < due:
                continue  # applied already: faust handed it over twice
            if offset > due:
                withheld = self._withheld.get(where)
                if withheld is None or withheld[0] != due:  # a jump: wait for the records fetched again
                    log.warning("%s[%d]: offset %d handed over while %d was due; withheld until %d comes",
                                message.topic, message.partition, offset, due, due)
                    self._withheld[where] = (due, offset, now)
                    self._sought.discard(where)
                    message.incref()
                    continue
                if offset > withheld[1] or where not in self._sought:
                    if now - withheld[2] >= RESEEK_S and where not in seeks:
                        log.warning("%s[%d]: %d has not come in %.0f s; seeking back to it", message.topic, message.partition, due, RESEEK_S)
                        self._withheld[where] = (due, withheld[1], now)
                        self._sought.add(where)
                        seeks[where] = due
                    message.incref()
                    continue
                log.warning("%s[%d]: offsets %d to %d are not in the log (a transaction marker or a compacted "
                            "record); going on from %d", message.topic, message.partition, due, offset - 1, offset)
            self.due[where] = offset + 1
            admitted.append(event)
        return admitted, seeks

    async def seek(self, seeks: dict[Where, int]) -> None:
        """Fetch each partition again from its offset due."""
        if self._consumer is not None:
            for (topic, partition), offset in seeks.items():
                await self._consumer().seek(TP(topic, partition), offset)


class Beginnings:
    """Where partitions start, asked of a client of its own (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._options = settings.kafka_options()
        self._client: AIOKafkaConsumer | None = None

    async def __call__(self, partitions: list[Where]) -> dict[Where, int]:
        if self._client is None:
            client = AIOKafkaConsumer(**self._options, enable_auto_commit=False)
            await client.start()
            self._client = client
        offsets = await self._client.beginning_offsets([TopicPartition(t, p) for t, p in partitions])
        return {(tp.topic, tp.partition): offset for tp, offset in offsets.items()}

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.stop()
            self._client = None


class ReadOffsets(defaultdict):
    """faust's consumer's read offsets, never told for ``topics``.

    faust drops a fetched record whose offset is below the last it handed over, and takes
    a record beyond it as the end of a gap it may commit. For the stages' inputs
    ``Sequence`` does both right, so faust hands over every record it fetches; changelog
    topics keep faust's filter (a table recovers from them in offset order).
    """

    def __init__(self, topics: Collection[str], offsets: dict) -> None:
        super().__init__(lambda: None, offsets)
        self.topics = frozenset(topics)

    def __getitem__(self, tp: TP) -> int | None:
        return None if tp.topic in self.topics else super().__getitem__(tp)


def hand_over_every_record(consumer: Any, topics: Collection[str]) -> None:
    """Install ``ReadOffsets`` on faust's consumer (before its fetcher starts draining)."""
    if not isinstance(consumer._read_offset, ReadOffsets):
        consumer._read_offset = ReadOffsets(topics, consumer._read_offset)
