"""A batch's outputs, then its state, onto the broker through one producer, each awaited."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from tickwire.schemas.codec import VERSION_HEADER
from tickwire.schemas.contract import schema_version
from tickwire.schemas.settings import Settings

# (topic, key, value, headers): one output message.
Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]

# A packed message stays well under the broker's default 1 MiB record-batch limit.
PACK_BYTES = 256 * 1024


class Outbox:
    """Delivers a batch's outputs through one aiokafka producer, and waits for the broker.

    Messages are appended to per-partition record batches (partitioned like the
    client's default, murmur2 of the key), which skips the client's per-message
    futures; the wait means the outputs are on the broker before the state the
    batch changed is written and before faust may commit the batch's offsets. A message
    without headers of its own gets ``tickwire.schema.version`` (its topic's ``.vN``);
    a DLQ record keeps the refused message's.
    """

    def __init__(self, settings: Settings) -> None:
        self._options = settings.kafka_options()
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._hashes: dict[bytes, int] = {}
        self._deliveries = 0  # messages without a key go to one partition per delivery, in turn
        self._starting = asyncio.Lock()  # every stage delivers through this one producer
        self._versions: dict[str, list[tuple[str, bytes]]] = {}  # topic -> its version header

    async def deliver(self, messages: list[Message]) -> None:
        if not messages:
            return
        await self._start()
        self._deliveries += 1
        records = []
        for topic, key, value, headers in messages:
            if not headers:
                headers = self._versions.get(topic) or self._versions.setdefault(topic, [(VERSION_HEADER, schema_version(topic))])
            records.append((topic, await self._partition(topic, key), key, value, headers))
        await self._send(records)

    async def write(self, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
        """``records`` (partition, key, value; None deletes) onto a table's changelog
        ``topic``, in their partitions, awaited: the state's way to the broker, as fast as
        the outputs' (faust's own path costs a future and a thread hop per record)."""
        if records:
            await self._start()
            await self._send([(topic, partition, key, value, []) for partition, key, value in records])

    async def _send(self, records: list[tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> None:
        """Each record appended to its partition's batch, every batch sent, all awaited."""
        producer = self._producer
        batches: dict[tuple[str, int], Any] = {}
        sent = []
        for topic, partition, key, value, headers in records:
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[topic, partition] = producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                sent.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[topic, partition] = producer.create_batch()
                if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                    raise ValueError(f"a {len(value or b'')}-byte record does not fit a producer batch")
        for (topic, partition), batch in batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)

    async def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        if key is None:
            return partitions[self._deliveries % len(partitions)]
        digest = self._hashes.get(key)
        if digest is None:
            if len(self._hashes) > 100_000:  # keys of hostile producers: keep the cache bounded
                self._hashes.clear()
            digest = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[digest % len(partitions)]

    async def _start(self) -> AIOKafkaProducer:
        """The one producer, started by the first delivery; stages delivering at the same
        moment wait for it instead of each starting (and leaking) one of their own."""
        if self._producer is not None:
            return self._producer
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._options, acks="all", max_batch_size=512 * 1024, linger_ms=0)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def pack(messages: list[Message], topic: str) -> list[Message]:
    """``topic``'s messages packed per key, in order, into msgpack arrays of at most
    ``PACK_BYTES``: one message where a batch had hundreds."""
    kept: list[Message] = []
    packs: dict[bytes | None, list[list[bytes]]] = {}
    sizes: dict[bytes | None, int] = {}
    for message in messages:
        if message[0] != topic:
            kept.append(message)
            continue
        key, value = message[1], message[2]
        chunks = packs.setdefault(key, [[]])
        if chunks[-1] and sizes[key] + len(value) > PACK_BYTES:
            chunks.append([])
            sizes[key] = 0
        chunks[-1].append(value)
        sizes[key] = sizes.get(key, 0) + len(value)
    for key, chunks in packs.items():
        kept += [(topic, key, msgspec.msgpack.encode(chunk), []) for chunk in chunks]
    return kept


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the Outbox sends ``key`` to (murmur2, as the Java client)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def partition_keys(name: str, partitions: int) -> list[bytes]:
    """One key per partition, the i-th landing in partition i: a message sent under each
    reaches every partition of a keyed topic."""
    found: dict[int, bytes] = {}
    n = 0
    while len(found) < partitions:
        key = f"\x00{name}/{n}".encode()
        found.setdefault(partition_of(key, partitions), key)
        n += 1
    return [found[p] for p in range(partitions)]
