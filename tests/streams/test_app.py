"""The worker's batching pieces that need no broker: packing, partitioning and per-batch state writes."""

from __future__ import annotations

import msgspec
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from tickwire.schemas.metrics import Metrics
from tickwire.schemas.settings import Settings
from tickwire.streams.app import _PACK_BYTES, KeyedStates, Outbox, _pack, _restore_window


class _Table:
    """What KeyedStates uses of a faust Table: its store and its changelog sends."""

    name = "t"

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.sent: list[tuple[int, bytes, bytes | None]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes | None, value_serializer: str | None = None) -> None:
        self.sent.append((partition, key, value))


def states(table: _Table) -> KeyedStates:
    return KeyedStates(table, msgspec.msgpack.decode, msgspec.msgpack.encode, dict, Metrics(CollectorRegistry()))


def test_pack_keeps_order_per_key_and_bounds_each_message():
    big = b"x" * (_PACK_BYTES // 3)
    messages = [("c", b"1m", big + bytes([i]), []) for i in range(7)] + [("other", b"k", b"v", [])] + [("c", b"1h", b"h", [])]
    packed = _pack(messages, "c")
    assert packed[0] == ("other", b"k", b"v", [])
    minute = [m for m in packed if m[0] == "c" and m[1] == b"1m"]
    assert len(minute) == 4  # a third of the limit and a byte each: two to a message
    values = [v for m in minute for v in msgspec.msgpack.decode(m[2])]
    assert values == [big + bytes([i]) for i in range(7)]
    assert all(sum(map(len, msgspec.msgpack.decode(m[2]))) <= _PACK_BYTES for m in minute)
    assert [msgspec.msgpack.decode(m[2]) for m in packed if m[1] == b"1h"] == [[b"h"]]


def test_a_batch_writes_each_changed_key_once_with_its_partition():
    table = _Table()
    keyed = states(table)
    for n in range(3):
        keyed.get(b"a")[n] = n
        keyed.changed(b"a", 4)
    keyed.get(b"b")["x"] = 1  # read and changed in place, but never marked: not written
    keyed.write()
    assert table.sent == [(4, b"a", msgspec.msgpack.encode({0: 0, 1: 1, 2: 2}))]
    assert msgspec.msgpack.decode(table.data[b"a"]) == {0: 0, 1: 1, 2: 2}
    keyed.write()
    assert len(table.sent) == 1  # nothing changed since


def test_forget_returns_a_key_to_its_last_written_value():
    table = _Table()
    keyed = states(table)
    keyed.get(b"a")["n"] = 1
    keyed.changed(b"a", 0)
    keyed.write()
    keyed.get(b"a")["n"] = 2  # a failed message half-changed it
    keyed.changed(b"a", 0)
    keyed.forget(lambda key: key == b"a")
    assert keyed.get(b"a") == {"n": 1}
    keyed.write()
    assert len(table.sent) == 1


def test_release_keeps_what_waits_to_be_written_and_delete_sends_a_tombstone():
    table = _Table()
    keyed = states(table)
    kept = keyed.get(b"kept")
    kept["n"] = 1
    keyed.changed(b"kept", 1)
    clean = keyed.get(b"clean")
    keyed.release()
    assert keyed.get(b"kept") is kept and keyed.get(b"clean") is not clean  # decoded again
    keyed.write()
    keyed.delete(b"kept", 1)
    keyed.write()
    assert table.sent[-1] == (1, b"kept", None) and b"kept" not in table.data
    assert keyed.get(b"kept") == {}


def test_a_stored_state_that_cannot_be_decoded_starts_afresh_and_is_counted():
    table = _Table()
    table.data[b"old"] = b"\xc1"  # never valid msgpack: a record of another format, or damage
    table.data[b"good"] = msgspec.msgpack.encode({"bars": 3})
    metrics = Metrics(CollectorRegistry())
    keyed = KeyedStates(table, msgspec.msgpack.decode, msgspec.msgpack.encode, dict, metrics)
    assert keyed.get(b"old") == {}
    assert keyed.get(b"good") == {"bars": 3}
    assert metrics.registry.get_sample_value("tickwire_state_resets_total", {"table": "t"}) == 1
    keyed.get(b"old")["bars"] = 1  # the fresh state is live and written like any other
    keyed.changed(b"old", 0)
    keyed.write()
    assert msgspec.msgpack.decode(table.data[b"old"]) == {"bars": 1}


def test_a_correlation_window_restores_what_it_can_decode():
    table = _Table()
    table.data.update({
        b"1m/core": b"\xc1", b"1m/latest": msgspec.msgpack.encode({"SPY": 60_000_000}),
        b"1m/60000000": b"\xc1", b"1m/120000000": msgspec.msgpack.encode({"SPY": (1.0, 2.0, 0.5, 1.5, 10)}),
    })
    metrics = Metrics(CollectorRegistry())
    keyed = KeyedStates(table, msgspec.msgpack.decode, msgspec.msgpack.encode, dict, metrics)
    window = _restore_window(keyed, Settings(), "1m", {})
    assert window.latest == {"SPY": 60_000_000}
    assert window.open == {120_000_000: {"SPY": (1.0, 2.0, 0.5, 1.5, 10)}}
    assert metrics.registry.get_sample_value("tickwire_state_resets_total", {"table": "t"}) == 2


async def test_outbox_partitions_keys_as_the_client_does_and_turns_keyless_messages_round():
    outbox = Outbox(Settings())
    partitions = [0, 1, 2, 3, 4, 5]
    outbox._partitions["t"] = partitions  # what the broker's metadata would say
    client = DefaultPartitioner()
    for key in (b"AAPL", b"MSFT", b"1m", b"\xff" * 40):
        assert await outbox._partition("t", key) == client(key, partitions, partitions)
    keyless = set()
    for _ in partitions:
        outbox._deliveries += 1  # one delivery (a batch's outputs) after another
        keyless.add(await outbox._partition("t", None))
    assert keyless == set(partitions)
