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
is dropped. A record above it is withheld (never acknowledged, so faust cannot commit it,
and forgotten by faust's consumer, whose rebalances wait for what it handed over)
and the partition sought back to the offset due; while the rest of the old fetch comes,
it is withheld too, and a partition whose offset due has still not come after
``RESEEK_S`` is sought back again (by a timer: a stalled partition sends no records to
trigger it). A record at or below the first one withheld that comes after a seek starts
a real hole in the log (a transaction marker, a compacted record), and the partition
goes on from there. faust's own filter is switched off for these topics (``ReadOffsets``).

A seek runs in faust's consumer thread, which owns the client (a seek from outside is
undone by the fetch it races), and is not waited for beyond ``SEEK_WAIT_S``: during a
rebalance that thread waits for the agents to finish their batches, so an agent waiting
for it would never finish. Where a partition begins is asked of a client of the
worker's own (``Beginnings``) for the same reason. No seek starts while faust rebalances.

The same timer reports each input partition's lag (its end minus the offset due, in
``tickwire_consumer_lag_messages``) and watches for a partition that lags yet has handed
nothing over for ``STALL_S``: it is put back among the partitions faust fetches
(faust drops a partition from them while the agent's queue is full, and in the crash
test one was never put back) and sought to its offset due.

One stage per input topic: a seek moves the partition for every agent reading it.
"""

from __future__ import annotations

import asyncio
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
SEEK_WAIT_S = 2.0
ASK_TIMEOUT_S = 10.0
STALL_S = 5.0
RECOVERY_STUCK_S = 30.0
Where = tuple[str, int]  # (topic, partition)


class Sequence:
    """The offset due next per partition of one stage's inputs (see the module docstring).

    ``consumer()`` is faust's consumer (its committed offsets, and its seek); ``beginnings``
    says where partitions start; ``rebalancing()`` whether faust is in a rebalance. Without
    them (a unit test) the first record seen of a partition starts it.
    """

    def __init__(
        self, consumer: Callable[[], Any] | None = None, beginnings: Callable[[list[Where]], Awaitable[dict[Where, int]]] | None = None,
        rebalancing: Callable[[], bool] = lambda: False, ends: Callable[[list[Where]], Awaitable[dict[Where, int]]] | None = None,
        topics: Collection[str] = (), lag: Any = None,
    ) -> None:
        self._consumer, self._beginnings, self._rebalancing = consumer, beginnings, rebalancing
        self._ends, self._topics, self._lag = ends, frozenset(topics), lag
        self._lagging: set[Where] = set()  # partitions with a lag series, dropped when no longer ours
        self._moved: dict[Where, tuple[int, float]] = {}  # partition -> (offset due, since when), for stalls
        self.due: dict[Where, int] = {}
        # partition -> (the offset due, the first record withheld, when it was last sought back)
        self._withheld: dict[Where, tuple[int, int, float]] = {}
        self._seeking: set[asyncio.Task] = set()

    def reset(self) -> None:
        """Partitions were reassigned: what is due comes from the committed offsets again."""
        self.due.clear()
        self._withheld.clear()
        self._moved.clear()

    async def start(self, events: list[faust.EventT]) -> None:
        """The offset due of each partition ``events`` hold that is new since the rebalance."""
        new = {(e.message.topic, e.message.partition) for e in events} - self.due.keys()
        if new and self._consumer is not None:
            self.due.update(await self._starts(new))

    async def _starts(self, partitions: Collection[Where]) -> dict[Where, int]:
        """Where each partition starts after a rebalance: its committed offset, or its
        beginning when the group has committed none."""
        committed = {where: self._consumer()._committed_offset.get(TP(*where)) for where in partitions}
        uncommitted = [where for where, offset in committed.items() if offset is None]
        beginnings = await self._beginnings(uncommitted) if uncommitted and self._beginnings else {}
        return {where: offset if offset is not None else beginnings.get(where, 0) for where, offset in committed.items()}

    def admit(self, events: list[faust.EventT]) -> tuple[list[faust.EventT], dict[Where, int]]:
        """(the events to apply, in their order; partition -> offset to seek back to)."""
        admitted: list[faust.EventT] = []
        seeks: dict[Where, int] = {}
        for event in events:
            message = event.message
            where, offset = (message.topic, message.partition), message.offset
            due = self.due.get(where, offset)
            if offset < due:
                continue  # applied already: faust handed it over twice
            if offset > due:
                withheld = self._withheld.get(where)
                if withheld is None or withheld[0] != due:  # a jump: withhold, and fetch again from the offset due
                    log.warning("%s[%d]: offset %d handed over while %d was due; seeking back to %d",
                                message.topic, message.partition, offset, due, due)
                    self._withheld[where] = (due, offset, time.monotonic())
                    seeks[where] = due
                    self._withhold(message)
                    continue
                if offset > withheld[1] or where in seeks:  # the old fetch still coming
                    self._withhold(message)
                    continue
                log.warning("%s[%d]: offsets %d to %d are not in the log (a transaction marker or a compacted "
                            "record); going on from %d", message.topic, message.partition, due, offset - 1, offset)
            self.due[where] = offset + 1
            admitted.append(event)
        return admitted, seeks

    def _withhold(self, message: Any) -> None:
        """Never acknowledged, so faust cannot commit it; and forgotten by faust's consumer,
        whose rebalance waits for every record it handed over to be acknowledged (the
        replica test's worker waited so for minutes on a withheld record, and the group
        with it)."""
        message.incref()
        if self._consumer is not None:
            self._consumer()._unacked_messages.discard(message)

    def overdue(self) -> dict[Where, int]:
        """Partitions whose offset due has not come ``RESEEK_S`` after their last seek back."""
        now, seeks = time.monotonic(), {}
        for where, (due, first, sought) in list(self._withheld.items()):
            if self.due.get(where) != due:  # it came
                del self._withheld[where]
            elif now - sought >= RESEEK_S:
                log.warning("%s[%d]: %d has not come %.0f s after a seek back; seeking again", *where, due, now - sought)
                self._withheld[where] = (due, first, now)
                seeks[where] = due
        return seeks

    async def stalled(self) -> dict[Where, int]:
        """Partitions of these topics that lag yet have not moved for ``STALL_S``, each put
        back among those faust fetches; partition -> its offset due."""
        if self._consumer is None or self._ends is None or self._rebalancing():
            return {}
        consumer, now, seeks = self._consumer(), time.monotonic(), {}
        mine = [(tp.topic, tp.partition) for tp in consumer.assignment() if tp.topic in self._topics]
        # A partition nothing was handed over from yet is due where it starts (one faust never
        # fetched, and never committed, stayed invisible here: the crash test lost every bar of two).
        due = {where: self.due[where] for where in mine if where in self.due}
        due.update(await self._starts([where for where in mine if where not in due]))
        ends = await self._ends(list(due)) if due else {}
        self._report_lag(due, ends)
        for where in due:
            moved = self._moved.get(where)
            if moved is None or moved[0] != due[where] or ends.get(where, 0) <= due[where]:
                self._moved[where] = (due[where], now)
            elif now - moved[1] >= STALL_S:
                tp = TP(*where)
                log.warning("%s[%d]: nothing handed over for %.0f s while %d is due and the partition ends at %d"
                            " (in faust's fetch: %s, held back for a full queue: %s, paused: %s); fetching it again",
                            *where, now - moved[1], due[where], ends[where], tp in consumer._get_active_partitions(),
                            tp in consumer._buffered_partitions, tp in consumer._paused_partitions)
                consumer.on_buffer_drop(tp)
                self._moved[where] = (due[where], now)
                seeks[where] = due[where]
        return seeks

    def _report_lag(self, due: dict[Where, int], ends: dict[Where, int]) -> None:
        """``tickwire_consumer_lag_messages`` per input partition: its end minus the offset due."""
        if self._lag is None:
            return
        for where in self._lagging - ends.keys():
            self._lag.remove(where[0], str(where[1]))
        for where, end in ends.items():
            self._lag.labels(where[0], str(where[1])).set(max(0, end - due[where]))
        self._lagging = set(ends)

    async def seek(self, seeks: dict[Where, int]) -> None:
        """Fetch each partition again from its offset due (see the module docstring)."""
        if not seeks or self._consumer is None or self._rebalancing():
            return  # after a rebalance faust seeks to the committed offsets itself
        task = asyncio.ensure_future(self._consumer().seek_wait({TP(t, p): offset for (t, p), offset in seeks.items()}))
        self._seeking.add(task)
        task.add_done_callback(self._sought)
        await asyncio.wait({task}, timeout=SEEK_WAIT_S)

    def _sought(self, task: asyncio.Task) -> None:
        self._seeking.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a seek back failed (%s); the timer tries again", type(task.exception()).__name__)


class StuckRecovery:
    """Finishes a faust recovery that stopped with its tables read.

    faust-streaming's recovery can stop between reading the changelogs and resuming the
    stream partitions: an error there is taken for another rebalance, which may never come.
    The partitions that rebalance assigned then stay paused, and the app stays
    "rebalancing", which also holds ``Sequence``'s watch back. The crash test's last worker
    sat so, never fetching two md.bars.v1 partitions its killed predecessors had held.
    Called by a timer: once the same generation has been recovering for ``RECOVERY_STUCK_S``
    with nothing left to read, it completes the recovery as faust does (resume the stream
    partitions, seek them to the committed offsets, end the rebalance).
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._since: tuple[int, float] | None = None  # (generation, when it was first seen stuck)

    async def __call__(self) -> None:
        app, recovery = self._app, self._app.tables.recovery
        if not (app.rebalancing and recovery.in_recovery and app.consumer.assignment()) or recovery.need_recovery():
            self._since = None
            return
        generation, now = app.consumer_generation_id, time.monotonic()
        if self._since is None or self._since[0] != generation:
            self._since = (generation, now)
        elif now - self._since[1] >= RECOVERY_STUCK_S:
            log.warning("faust's recovery of generation %d stopped %.0f s ago with its tables read; finishing it",
                        generation, now - self._since[1])
            self._since = None
            await recovery.on_recovery_completed(generation)


class Beginnings:
    """Where partitions start, asked of a client of its own (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._options = settings.kafka_options()
        self._client: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()  # stages asking at the same moment share one client

    async def __call__(self, partitions: list[Where]) -> dict[Where, int]:
        async with self._starting:
            if self._client is None:
                client = AIOKafkaConsumer(**self._options, enable_auto_commit=False)
                try:
                    await client.start()
                except BaseException:
                    await client.stop()
                    raise
                self._client = client
        # Bounded: the batch waits on it, and a timeout is retried (and logged) like a failed delivery.
        offsets = await asyncio.wait_for(self._client.beginning_offsets([TopicPartition(t, p) for t, p in partitions]), ASK_TIMEOUT_S)
        return {(tp.topic, tp.partition): offset for tp, offset in offsets.items()}

    async def ends(self, partitions: list[Where]) -> dict[Where, int]:
        """Where partitions end (their next offset), asked of the same client."""
        await self([])
        offsets = await asyncio.wait_for(self._client.end_offsets([TopicPartition(t, p) for t, p in partitions]), ASK_TIMEOUT_S)
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
