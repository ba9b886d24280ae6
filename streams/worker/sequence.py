"""Each source partition's records applied once, in offset order, none skipped.

faust's consumer does not promise it around a rebalance: records fetched before its seek
to the committed offsets are handed over after it (faust-streaming issues 216 and 221),
so a partition's stream can jump ahead, go back or repeat itself. And faust counts the
offsets it jumped over as done (its "gaps", meant for compacted topics) and commits
them. The crash test caught it: a handful of symbols' bars never applied, their offsets
committed, every later condition of those symbols computed without them.

``Sequence`` keeps, per partition, the offset due next: after each rebalance the committed
offset, or the partition's beginning when the group has committed none (the consumer
starts from the earliest record; the first record handed over may be a stale one far
ahead, so it cannot say where the partition starts), then one past each record admitted. A record below it was applied already and
is dropped. A record above it is withheld (never acknowledged, so faust cannot commit
it) and the partition is sought back to the offset due. Until the records fetched again
arrive, faust still hands over what it fetched before (thousands of records): those,
above the first one withheld, are withheld too, without another seek unless
``RESEEK_S`` pass. A record at or below that first one after the seek comes from the
fetch again: it starts a real hole in the log (a transaction marker, a compacted record),
and the partition goes on from there.

faust's own filter (``ReadOffsets``) is switched off for these topics: it drops a record
below the highest offset it has handed over, which a stale record raises past records
never applied, and marks the offsets a jump skips as done.

One stage per input topic: a seek moves the partition for every agent reading it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Callable, Collection

import faust
from faust.types import TP

log = logging.getLogger("tickwire.worker")
RESEEK_S = 5.0


class Sequence:
    """The offset due next per partition of one stage's inputs (see the module docstring).

    ``consumer()`` is faust's consumer, asked for committed and earliest offsets and used
    to seek; without one (a unit test) the first record seen of a partition starts it.
    """

    def __init__(self, consumer: Callable[[], Any] | None = None) -> None:
        self._consumer = consumer
        self.due: dict[tuple[str, int], int] = {}
        # partition -> (the offset due it was sought back to, the first record withheld, when)
        self._sought: dict[tuple[str, int], tuple[int, int, float]] = {}

    def reset(self) -> None:
        """Partitions were reassigned: what is due comes from the committed offsets again."""
        self.due.clear()
        self._sought.clear()

    async def start(self, events: list[faust.EventT]) -> None:
        """The offset due of each partition ``events`` hold that is new since the rebalance."""
        new = {(e.message.topic, e.message.partition) for e in events} - self.due.keys()
        if not new or self._consumer is None:
            return
        consumer = self._consumer()
        committed = {where: consumer._committed_offset.get(TP(*where)) for where in new}
        uncommitted = [TP(*where) for where, offset in committed.items() if offset is None]
        earliest = await consumer.earliest_offsets(*uncommitted) if uncommitted else {}
        for where, offset in committed.items():
            self.due[where] = offset if offset is not None else earliest[TP(*where)]

    def admit(self, events: list[faust.EventT]) -> tuple[list[faust.EventT], dict[tuple[str, int], int]]:
        """(the events to apply, in their order; partition -> offset to seek back to)."""
        admitted: list[faust.EventT] = []
        seeks: dict[tuple[str, int], int] = {}
        for event in events:
            message = event.message
            where, offset = (message.topic, message.partition), message.offset
            if where in seeks:
                message.incref()  # withheld: the seek brings it again
                continue
            due = self.due.get(where, offset)
            if offset < due:
                continue  # applied already: faust handed it over twice
            if offset > due:
                sought = self._sought.get(where)
                if sought is None or sought[0] != due:  # a jump: withhold, and fetch again from the offset due
                    log.warning("%s[%d]: offset %d handed over while %d was due; seeking back to %d",
                                message.topic, message.partition, offset, due, due)
                    self._sought[where] = (due, offset, time.monotonic())
                    seeks[where] = due
                    message.incref()
                    continue
                if offset > sought[1]:  # fetched before the seek: withheld, its copy is on its way
                    if time.monotonic() - sought[2] >= RESEEK_S:
                        self._sought[where] = (due, sought[1], time.monotonic())
                        seeks[where] = due
                    message.incref()
                    continue
                log.warning("%s[%d]: offsets %d to %d are not in the log (a transaction marker or a compacted "
                            "record); going on from %d", message.topic, message.partition, due, offset - 1, offset)
            self.due[where] = offset + 1
            admitted.append(event)
        return admitted, seeks

    async def seek(self, seeks: dict[tuple[str, int], int]) -> None:
        """Fetch each partition again from its offset due (in faust's consumer thread, which
        owns the client: a seek from outside it is undone by the fetch it races)."""
        if seeks and self._consumer is not None:
            await self._consumer().seek_wait({TP(topic, partition): offset for (topic, partition), offset in seeks.items()})


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
