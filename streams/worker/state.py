"""A stage's state per key: one faust table, decoded once per key, written once per batch.

A value larger than ``MAX_RECORD_BYTES`` is written as chunks under keys of its own and a
small manifest under its key (``_Chunked``), so no changelog record grows with what a
stage keeps (a broker refuses records above ``max.message.bytes``, 1 MiB by default).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any, Awaitable, Callable, Generic, NamedTuple, TypeVar

import faust
import lz4.block
import msgspec

from tickwire.schemas.metrics import Metrics

log = logging.getLogger("tickwire.worker")

T = TypeVar("T")
# Writes (partition, key, value; None deletes) onto the table's changelog, awaited (``Outbox.write``).
Changelog = Callable[[list[tuple[int, bytes, bytes | None]]], Awaitable[None]]
_GONE = object()  # a deleted key, until the batch's writes
MAX_RECORD_BYTES = 192 * 1024
# Bits of a value's version byte: compressed with zlib (written before lz4, still read), or with lz4.
ZLIB, LZ4, COMPRESS_FROM = 0x40, 0x20, 1024


class Encoded(bytes):
    """A value already in its stored form (``Archive``'s), written as it is."""


class _Chunked(NamedTuple):
    """The manifest stored under a large value's key: byte 0 (never a layout version, nor
    the first byte of msgpack's arrays and maps), then this tuple in msgpack. Its chunks
    live under ``chunk_key``; each write takes a new generation, and the previous
    generation's chunks are deleted only once the new manifest is acknowledged, so the
    changelog always holds a complete value."""

    generation: int
    count: int
    crc: int

    def encode(self) -> bytes:
        return b"\x00" + msgspec.msgpack.encode(tuple(self))

    @classmethod
    def of(cls, stored: bytes | None) -> "_Chunked | None":
        if not stored or stored[0] != 0:
            return None
        return cls(*msgspec.msgpack.decode(stored[1:], type=tuple[int, int, int]))


def chunk_key(key: bytes, generation: int, index: int) -> bytes:
    return key + b"\x00chunk\x00" + generation.to_bytes(4, "big") + index.to_bytes(4, "big")


def _is_chunk(key: bytes) -> bool:
    return b"\x00chunk\x00" in key


class StateCodec(Generic[T]):
    """msgpack of one state type, behind a version byte.

    The byte says which layout wrote a value, so a worker reads the layouts before its own
    (``upgrades``: version -> (that layout's type, a function to today's)) instead of
    misreading them; a value of an unknown layout cannot be decoded, and its key starts
    afresh. Values written before the byte existed (a msgpack array or map, whose first
    byte is never below 0x80) read as version 1. A field added at the end of a Struct (with
    a default) or dropped from its end needs no new version: msgspec fills the default, or
    ignores the trailing element.

    A payload of ``COMPRESS_FROM`` bytes or more is written compressed with lz4, its byte's
    ``LZ4`` bit set: every batch writes each changed key whole, and a symbol's record (12 KB
    of indicator arrays, open trades and recent predictions) shrinks to 7.5 KB in 7 µs;
    zlib's level 1, which earlier layouts used (``ZLIB``), took it to 6.9 KB in 77 µs, the
    largest single cost of the symbols stage under load.
    """

    def __init__(
        self,
        type_: Any,
        default: Callable[[], T],
        *,
        version: int = 1,
        upgrades: dict[int, tuple[Any, Callable[[Any], T]]] | None = None,
    ) -> None:
        if not 1 <= version < LZ4:
            raise ValueError(f"a state version is 1..{LZ4 - 1}")
        self.version, self.default = version, default
        self._prefix = bytes([version])
        self._decoders: dict[int, tuple[msgspec.msgpack.Decoder, Callable[[Any], T] | None]] = {
            version: (msgspec.msgpack.Decoder(type_), None),
            **{old: (msgspec.msgpack.Decoder(old_type), upgrade) for old, (old_type, upgrade) in (upgrades or {}).items()},
        }
        self._encoder = msgspec.msgpack.Encoder()

    def encode(self, value: T) -> bytes:
        payload = self._encoder.encode(value)
        if len(payload) < COMPRESS_FROM:
            return self._prefix + payload
        return bytes([self.version | LZ4]) + lz4.block.compress(payload, store_size=True)

    def decode(self, data: bytes) -> T:
        version, payload = self.split(data)
        decoder, upgrade = self._decoders.get(version, (None, None))
        if decoder is None:
            raise ValueError(f"state layout version {version} is not one this worker reads")
        value = decoder.decode(payload)
        return upgrade(value) if upgrade else value

    @staticmethod
    def split(data: bytes) -> tuple[int, bytes]:
        """(layout version, msgpack payload) of a stored value."""
        if not data or data[0] >= 0x80:
            return 1, data
        version = data[0] & ~(ZLIB | LZ4)
        try:
            if data[0] & LZ4:
                return version, lz4.block.decompress(data[1:])
            if data[0] & ZLIB:
                return version, zlib.decompress(data[1:])
        except (zlib.error, lz4.block.LZ4BlockError) as exc:
            raise ValueError(f"a compressed state does not decompress: {exc}") from None
        return data[0], data[1:]


class KeyedStates:
    """One faust table's values, decoded once and kept while this worker owns the keys.

    Stages change the live objects and mark them (``changed``); ``write`` encodes each
    marked key once and writes it to the table and its changelog partition (the
    source message's, as faust does; faust recovers the table from that topic), so a
    batch of a symbol's bars costs one state write, not one per bar. ``forget`` drops
    live objects (a failed message, a rebalance): they are decoded again from the last
    written value.
    """

    def __init__(self, table: faust.Table, codec: StateCodec, metrics: Metrics, changelog: Changelog) -> None:
        self.table, self.codec, self.changelog = table, codec, changelog
        self._live: dict[bytes, Any] = {}
        self._changed: dict[bytes, int] = {}  # key -> changelog partition
        self._sizes: dict[bytes, int] = {}
        self._gauge = metrics.state_bytes.labels(table.name)
        self._resets = metrics.state_resets.labels(table.name)

    def get(self, key: bytes) -> Any:
        value = self._live.get(key, _GONE)
        if value is _GONE:
            stored = self.stored(key)
            value = self._live[key] = self.decoded(key, stored, self.codec.decode, self.codec.default) if stored else self.codec.default()
        return value

    def stored(self, key: bytes) -> bytes | None:
        """``key``'s last written value, its chunks joined (b"" if they do not add up)."""
        stored = self.table.data.get(key)
        manifest = _Chunked.of(stored)
        if manifest is None:
            return stored
        data = self.table.data
        value = b"".join(data.get(chunk_key(key, manifest.generation, i), b"") for i in range(manifest.count))
        return value if zlib.crc32(value) == manifest.crc else b"\xff"  # undecodable: starts afresh

    def decoded(self, key: bytes, stored: bytes, decode: Callable[[bytes], Any], default: Callable[[], Any]) -> Any:
        """``stored`` decoded; ``default()`` if it cannot be (written by a worker of another
        state format, or damaged): logged and counted, so the key starts afresh instead of
        failing, and sending to the DLQ, every message it receives."""
        try:
            return decode(stored)
        except (msgspec.DecodeError, ValueError) as exc:
            log.error("state of %s key %r cannot be decoded (%s): starting it afresh", self.table.name, key, exc)
            self._resets.inc()
            return default()

    def changed(self, key: bytes, partition: int, value: Any = _GONE) -> None:
        """Mark ``key`` for the next ``write``; with a ``value``, that becomes its live object."""
        if value is not _GONE:
            self._live[key] = value
        self._changed[key] = partition

    def pending(self, key: bytes) -> bool:
        """Whether ``key`` waits for the next ``write``."""
        return key in self._changed

    def delete(self, key: bytes, partition: int) -> None:
        self._live[key] = _GONE
        self._changed[key] = partition

    def stored_items(self) -> list[tuple[bytes, bytes]]:
        """The last written values (what a rebuild after ``forget`` starts from)."""
        return [(key, self.stored(key)) for key, value in list(self.table.data.items()) if value and not _is_chunk(key)]

    def forget(self, match: Callable[[bytes], bool]) -> None:
        for key in [key for key in self._live if match(key)]:
            del self._live[key]
            self._changed.pop(key, None)

    def release(self) -> None:
        """Drop every live object not waiting to be written (after a rebalance)."""
        self.forget(lambda key: key not in self._changed)

    async def write(self, timeout_s: float) -> None:
        """Every changed key to the table and its changelog, awaited: the batch's offsets are
        committed only after the broker has its state. On failure the keys stay marked, so
        a retry writes them again (a compacted changelog keeps the last).

        The table's own copy is set once the changelog has the values: a rebalance while
        they are on their way recovers the table from the changelog, without them, and a
        copy set before would be overwritten by that older state (and read back later)."""
        records: list[tuple[int, bytes, bytes | None]] = []  # (partition, key, value) in the changelog's order
        retired: list[tuple[int, bytes]] = []  # chunks of the generations the new manifests replace
        for key, partition in self._changed.items():
            value = self._live.get(key, _GONE)
            previous = _Chunked.of(self.table.data.get(key))
            if previous is not None:
                retired += [(partition, chunk_key(key, previous.generation, i)) for i in range(previous.count)]
            if value is _GONE:
                records.append((partition, key, None))
                continue
            encoded = value if isinstance(value, Encoded) else self.codec.encode(value)
            if len(encoded) <= MAX_RECORD_BYTES:
                records.append((partition, key, encoded))
                continue
            generation = (previous.generation + 1) % 2**32 if previous else 0
            chunks = [encoded[i : i + MAX_RECORD_BYTES] for i in range(0, len(encoded), MAX_RECORD_BYTES)]
            records += [(partition, chunk_key(key, generation, i), chunk) for i, chunk in enumerate(chunks)]
            records.append((partition, key, _Chunked(generation, len(chunks), zlib.crc32(encoded)).encode()))
        await self._send(records, timeout_s)
        await self._send([(partition, key, None) for partition, key in retired], timeout_s)
        data, sizes = self.table.data, self._sizes
        for _, key, value in records + [(p, k, None) for p, k in retired]:
            if value is None:
                if self._live.get(key, _GONE) is _GONE:
                    self._live.pop(key, None)
                data.pop(key, None)
                self._gauge.dec(sizes.pop(key, 0))
            else:
                data[key] = value
                if isinstance(self._live.get(key), Encoded):  # read back from the table, as stored
                    del self._live[key]
                self._gauge.inc(len(value) - sizes.get(key, 0))
                sizes[key] = len(value)
        self._changed.clear()

    async def _send(self, records: list[tuple[int, bytes, bytes | None]], timeout_s: float) -> None:
        """``records`` onto the changelog, awaited until the broker has every one."""
        if not records:
            return
        try:
            await asyncio.wait_for(self.changelog(records), timeout_s)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(f"{len(records)} changelog writes unacknowledged after {timeout_s:.0f} s") from None
