"""Values a key's record no longer changes (a symbol's settled trades, a strategy's counted
trade ids), each under a key of its own beside the record: written once, read back by id,
deleted when their time is up.

A record is written whole each batch it changes, so one that kept a week of closed
trades would write them all again for every bar (a symbol trading every few minutes
carries thousands). Here the record keeps what can still change, and each settled value
costs one small write when it leaves and one tombstone when it expires.

A value comes back into its record (``restore``) when a message names it again, so the
record's rules see it as before it left. A value leaves its record in two steps, so no crash loses it: ``put`` writes it while
the record still holds it, and only once the archive has it on the broker (a later
batch) does ``put`` say the record may drop it. The changelog may so hold a value in
both places for a while; the record's copy is the one read.

What expires when is kept in memory (a heap per owner), rebuilt from the table after
partitions move (``reset``): the table is in memory already, and nothing of it is
written again.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any, Callable

import msgspec

from tickwire.streams.worker.state import Encoded, KeyedStates, StateCodec

log = logging.getLogger("tickwire.worker")


class Archive:
    """``kind``'s values of each owner key in ``states``' table, under ``owner + \\0kind/ + id``."""

    def __init__(self, states: KeyedStates, codec: StateCodec, kind: str, expires: Callable[[Any], int]) -> None:
        """``expires(value)``: when a value's time is up, on the clock ``tidy`` is given."""
        self.states, self.codec, self.expires = states, codec, expires
        self.marker = f"\x00{kind}/".encode()
        self._due: dict[bytes, list[tuple[int, bytes]]] | None = None  # owner -> heap of (expiry, key)

    def key(self, owner: bytes, item_id: str) -> bytes:
        return owner + self.marker + item_id.encode()

    def owns(self, key: bytes) -> bool:
        return self.marker in key

    def get(self, owner: bytes, item_id: str) -> Any | None:
        """The archived value, or None (never archived, expired, or unreadable: logged)."""
        stored = self.states.stored(self.key(owner, item_id))
        if not stored:
            return None
        try:
            return self.codec.decode(stored)
        except (msgspec.DecodeError, ValueError) as exc:
            log.error("archived %r cannot be decoded (%s): taken as unknown", self.key(owner, item_id), exc)
            return None

    def restore(self, owner: bytes, held: dict[str, Any], item_id: str | None) -> None:
        """``item_id``'s archived value back in the record's ``held``, unless held already."""
        if item_id is not None and item_id not in held:
            value = self.get(owner, item_id)
            if value is not None:
                held[item_id] = value

    def put(self, owner: bytes, partition: int, item_id: str, value: Any) -> bool:
        """Archive ``value`` (once); whether the broker has it, so its record may drop it (not
        while a write or a deletion of it waits: the record keeps it, and puts it again)."""
        key = self.key(owner, item_id)
        if self.states.stored(key) and not self.states.pending(key):
            return True
        if not self.states.pending(key):
            self.states.changed(key, partition, Encoded(self.codec.encode(value)))
            heapq.heappush(self._heap(owner), (self.expires(value), key))
        return False

    def tidy(self, owner: bytes, partition: int, held: dict[str, Any], settled: list[str], now: int) -> None:
        """Archive the ``settled`` ids of the record's ``held``, drop from ``held`` those the
        broker has, and delete the archived values whose time is up at ``now``."""
        for item_id in settled:
            if self.put(owner, partition, item_id, held[item_id]):
                del held[item_id]
        self.expire(owner, partition, now)

    def expire(self, owner: bytes, partition: int, now: int) -> None:
        """Delete ``owner``'s values whose time is up at ``now``."""
        heap = self._heap(owner)
        while heap and heap[0][0] < now:
            _, key = heapq.heappop(heap)
            self.states.delete(key, partition)

    def reset(self) -> None:
        """Partitions moved: the heaps are rebuilt from the table when next needed."""
        self._due = None

    def _heap(self, owner: bytes) -> list[tuple[int, bytes]]:
        if self._due is None:
            self._due = {}
            for key, stored in self.states.stored_items():
                if self.marker in key:
                    try:
                        expires = self.expires(self.codec.decode(stored))
                    except (msgspec.DecodeError, ValueError):
                        expires = -(2**62)  # unreadable: deleted at the owner's next message
                    self._due.setdefault(key.split(self.marker, 1)[0], []).append((expires, key))
            for heap in self._due.values():
                heapq.heapify(heap)
        return self._due.setdefault(owner, [])
