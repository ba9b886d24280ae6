"""The worker runtime's pieces that need no broker: packing, partitioning, per-batch state
writes, versioned state layouts, the checkpoint's DLQ handling and redelivery."""

from __future__ import annotations

import asyncio
import random
import zlib
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from tickwire.schemas.correlations import CorrelationThreshold
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.metrics import Metrics
from tickwire.schemas.settings import Settings
from tickwire.schemas.topics import ALL, TRADES
from tickwire.streams.correlations import CorrelationConfig, Correlations
from tickwire.streams.stages.candles import Candles, TradeState, _TradeStateV1
from tickwire.streams.stages.correlations import _CorrelationStateV1, _PartsCodec, restore_window
from tickwire.streams.worker.batch import Checkpoint
from tickwire.streams.worker.outbox import PACK_BYTES, Outbox, pack
from tickwire.streams.worker.stage import Stage, StageContext, StateTable
from tickwire.streams.worker.state import KeyedStates, StateCodec

ANY = StateCodec(object, dict)


class _Table:
    """What KeyedStates uses of a faust Table (its store), and the changelog it writes to."""

    name = "t"

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.sent: list[tuple[int, bytes, bytes | None]] = []

    async def write(self, records: list[tuple[int, bytes, bytes | None]]) -> None:
        self.sent += records


def states(table: _Table, codec: StateCodec = ANY, metrics: Metrics | None = None) -> KeyedStates:
    return KeyedStates(table, codec, metrics or Metrics(CollectorRegistry()), table.write)


def test_pack_keeps_order_per_key_and_bounds_each_message():
    big = b"x" * (PACK_BYTES // 3)
    messages = [("c", b"1m", big + bytes([i]), []) for i in range(7)] + [("other", b"k", b"v", [])] + [("c", b"1h", b"h", [])]
    packed = pack(messages, "c")
    assert packed[0] == ("other", b"k", b"v", [])
    minute = [m for m in packed if m[0] == "c" and m[1] == b"1m"]
    assert len(minute) == 4  # a third of the limit and a byte each: two to a message
    values = [v for m in minute for v in msgspec.msgpack.decode(m[2])]
    assert values == [big + bytes([i]) for i in range(7)]
    assert all(sum(map(len, msgspec.msgpack.decode(m[2]))) <= PACK_BYTES for m in minute)
    assert [msgspec.msgpack.decode(m[2]) for m in packed if m[1] == b"1h"] == [[b"h"]]


async def test_a_batch_writes_each_changed_key_once_with_its_partition():
    table = _Table()
    keyed = states(table)
    for n in range(3):
        keyed.get(b"a")[n] = n
        keyed.changed(b"a", 4)
    keyed.get(b"b")["x"] = 1  # read and changed in place, but never marked: not written
    await keyed.write(5)
    assert table.sent == [(4, b"a", b"\x01" + msgspec.msgpack.encode({0: 0, 1: 1, 2: 2}))]
    assert ANY.decode(table.data[b"a"]) == {0: 0, 1: 1, 2: 2}
    await keyed.write(5)
    assert len(table.sent) == 1  # nothing changed since


async def test_forget_returns_a_key_to_its_last_written_value():
    table = _Table()
    keyed = states(table)
    keyed.get(b"a")["n"] = 1
    keyed.changed(b"a", 0)
    await keyed.write(5)
    keyed.get(b"a")["n"] = 2  # a failed message half-changed it
    keyed.changed(b"a", 0)
    keyed.forget(lambda key: key == b"a")
    assert keyed.get(b"a") == {"n": 1}
    await keyed.write(5)
    assert len(table.sent) == 1


async def test_release_keeps_what_waits_to_be_written_and_delete_sends_a_tombstone():
    table = _Table()
    keyed = states(table)
    kept = keyed.get(b"kept")
    kept["n"] = 1
    keyed.changed(b"kept", 1)
    clean = keyed.get(b"clean")
    keyed.release()
    assert keyed.get(b"kept") is kept and keyed.get(b"clean") is not clean  # decoded again
    await keyed.write(5)
    keyed.delete(b"kept", 1)
    await keyed.write(5)
    assert table.sent[-1] == (1, b"kept", None) and b"kept" not in table.data
    assert keyed.get(b"kept") == {}


async def test_a_stored_state_that_cannot_be_decoded_starts_afresh_and_is_counted():
    table = _Table()
    table.data[b"old"] = b"\xc1"  # never valid msgpack: a record of another format, or damage
    table.data[b"good"] = msgspec.msgpack.encode({"bars": 3})
    metrics = Metrics(CollectorRegistry())
    keyed = states(table, metrics=metrics)
    assert keyed.get(b"old") == {}
    assert keyed.get(b"good") == {"bars": 3}
    assert metrics.registry.get_sample_value("tickwire_state_resets_total", {"table": "t"}) == 1
    keyed.get(b"old")["bars"] = 1  # the fresh state is live and written like any other
    keyed.changed(b"old", 0)
    await keyed.write(5)
    assert ANY.decode(table.data[b"old"]) == {"bars": 1}


def test_a_correlation_window_restores_what_it_can_decode():
    table = _Table()
    table.data.update({
        b"1m/core": b"\xc1", b"1m/latest": msgspec.msgpack.encode({"SPY": 60_000_000}),
        b"1m/60000000": b"\xc1", b"1m/120000000": msgspec.msgpack.encode({"SPY": (1.0, 2.0, 0.5, 1.5, 10)}),
    })
    metrics = Metrics(CollectorRegistry())
    window = restore_window(states(table, _PartsCodec(object, dict), metrics), CorrelationConfig(timeframe="1m"), {})
    assert window.latest == {"SPY": 60_000_000}
    assert window.open == {120_000_000: {"SPY": (1.0, 2.0, 0.5, 1.5, 10)}}
    assert metrics.registry.get_sample_value("tickwire_state_resets_total", {"table": "t"}) == 2


async def test_a_correlation_core_of_the_first_layout_is_read_and_written_in_the_second():
    config = CorrelationConfig(timeframe="1m", windows=(3,), min_common=2, threshold=0.5)
    core = Correlations(config)
    for step in range(1, 6):
        core.step(step, {"SPY": 100.0 + step, "AAPL": 50.0 + step * (1 + step % 2), "MSFT": 80.0 - step})
    now = core.snapshot_state()
    old = _CorrelationStateV1(now.symbols, now.returns, now.timestamps, now.steps, now.anchor, now.last_close,
                              pending={9: {"X": 9.0}}, above=now.above, late_bars=3)
    table = _Table()
    table.data[b"1m/core"] = msgspec.msgpack.encode(old)  # layout 1: no version byte
    keyed = states(table, _PartsCodec(object, dict))
    window = restore_window(keyed, config, {})
    # Layout 1 kept no threshold in force: the next step records it again, and is otherwise the same.
    assert msgspec.msgpack.encode(window.core.snapshot_state()) == msgspec.msgpack.encode(msgspec.structs.replace(now, threshold=None))
    keyed.changed(b"1m/core", 0, window.core)
    await keyed.write(5)
    assert StateCodec.split(table.data[b"1m/core"])[0] == 2
    again = restore_window(states(table, _PartsCodec(object, dict)), config, {})
    recorded = CorrelationThreshold(timeframe="1m", timestamp=datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=6),
                                    regime=None, threshold=0.5)
    bars = {"SPY": 107.0, "AAPL": 57.0, "MSFT": 73.0}
    assert again.core.step(6, bars) == [recorded, *core.step(6, bars)]


def test_a_state_codec_reads_its_earlier_layouts_and_refuses_unknown_ones():
    codec = Candles.table.codec
    v1 = _TradeStateV1(TradeState().aggregator, last_trade_id="7", outputs=[b"bar"])
    assert codec.decode(msgspec.msgpack.encode(v1)) == TradeState()  # unversioned: layout 1, upgraded
    current = TradeState(offsets={"md.trades.v1": 41})
    assert codec.encode(current)[0] == 2 and codec.decode(codec.encode(current)) == current
    with pytest.raises(ValueError, match="version 9"):
        codec.decode(b"\x09" + msgspec.msgpack.encode(current))
    with pytest.raises(ValueError):
        StateCodec(TradeState, TradeState, version=0x20)  # its byte would read as a compressed layout 0
    # A large state is written compressed (lz4), its layout's byte marked, and read back whole;
    # one an earlier worker deflated (zlib) still reads.
    large = TradeState(offsets={f"topic-{i}": i for i in range(200)})
    compressed = codec.encode(large)
    assert compressed[0] == 2 | 0x20 and len(compressed) < len(msgspec.msgpack.encode(large)) * 0.6
    assert codec.decode(compressed) == large
    assert codec.decode(bytes([2 | 0x40]) + zlib.compress(msgspec.msgpack.encode(large), 1)) == large
    for damaged in (compressed[:40], bytes([2 | 0x40]) + compressed[1:40]):
        with pytest.raises(ValueError, match="does not decompress"):
            codec.decode(damaged)


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


def event(value: bytes, offset: int, key: bytes = b"k", topic: str = "in") -> SimpleNamespace:
    return SimpleNamespace(value=value, message=SimpleNamespace(
        topic=topic, partition=0, offset=offset, key=key, headers=[("trace", b"t-1")], timestamp=1_767_225_600.25
    ))


def context(metrics: Metrics) -> StageContext:
    settings = Settings()
    return StageContext(settings, metrics, {t: settings.topic(t.name) for t in ALL}, msgspec.json.encode, lambda spec: None)


class _Summing(Stage):
    """Adds each message's number to its key's total; "bad" is refused, "bug" fails half-way."""

    name, inputs = "summing", (TRADES,)
    table = StateTable("sums", TRADES, ANY)

    def handle(self, event, out):
        total = self.states.get(event.message.key)
        if event.value == b"bad":
            raise InvalidMessage("invalid_value", "not a number")
        total["sum"] = total.get("sum", 0) + (1000 if event.value == b"bug" else int(event.value))
        if event.value == b"bug":
            raise ZeroDivisionError("half-way")
        self.states.changed(event.message.key, 0)
        out.append(("out", event.message.key, str(total["sum"]).encode(), []))


async def test_a_checkpoint_dead_letters_refused_and_failing_messages_and_keeps_the_rest():
    metrics = Metrics(CollectorRegistry())
    table = _Table()
    stage = _Summing(context(metrics), states(table, metrics=metrics))
    checkpoint = Checkpoint(stage, outbox=None, dlq_topic="dlq", metrics=metrics)
    out = checkpoint.handle([event(b"1", 0), event(b"bad", 1), event(b"2", 2), event(b"bug", 3), event(b"4", 4)])
    assert [(topic, value) for topic, _, value, _ in out if topic == "out"] == [("out", b"1"), ("out", b"3"), ("out", b"7")]
    dead = [headers for topic, _, _, headers in out if topic == "dlq"]
    assert [dict(h)["tickwire.reason"] for h in dead] == [b"invalid_value", b"internal"]
    assert [dict(h)["__connect.errors.exception.class.name"] for h in dead] == [b"InvalidMessage", b"ZeroDivisionError"]
    assert all(("trace", b"t-1") in h and dict(h)["__connect.errors.stage"] == b"summing" for h in dead)
    await stage.states.write(5)  # the bug's half-change was forgotten and the key's earlier messages applied again
    assert ANY.decode(table.data[b"k"]) == {"sum": 7}
    assert metrics.registry.get_sample_value("tickwire_dlq_messages_total", {"topic": "in", "reason": "internal"}) == 1


def test_the_candles_stage_skips_a_redelivered_trade_by_its_offset():
    metrics = Metrics(CollectorRegistry())
    stage = Candles(context(metrics), states(_Table(), Candles.table.codec, metrics))
    topic = stage.context.names[TRADES]
    trade = b'{"symbol":"AAPL","ts":"2026-01-05T14:30:10Z","price":10.0,"size":5,"trade_id":"1"}'
    later = b'{"symbol":"AAPL","ts":"2026-01-05T14:31:10Z","price":11.0,"size":5,"trade_id":"2"}'
    out: list = []
    stage.handle(event(trade, 10, b"AAPL", topic), out)
    stage.handle(event(later, 11, b"AAPL", topic), out)
    assert len(out) == 1  # the second trade closed the first minute
    stage.handle(event(later, 11, b"AAPL", topic), out)  # redelivered after a crash: already applied
    assert len(out) == 1
    assert metrics.registry.get_sample_value("tickwire_duplicates_dropped_total", {"topic": topic}) == 1
    assert stage.states.get(b"AAPL").offsets == {topic: 11}


class _FlakyOutbox:
    """Fails its first ``failures`` deliveries with ``error``, then takes them."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.delivered = failures, error, []

    async def deliver(self, messages):
        if self.failures:
            self.failures -= 1
            raise self.error
        self.delivered.append(list(messages))


def _checkpoint(outbox, metrics: Metrics, table: _Table | None = None, stop=None) -> Checkpoint:
    stage = _Summing(context(metrics), states(table or _Table(), metrics=metrics))
    return Checkpoint(stage, outbox, "dlq", metrics, **({"stop": stop} if stop else {}))


async def test_a_batch_whose_delivery_fails_is_retried_until_it_goes_through(monkeypatch):
    from aiokafka.errors import KafkaTimeoutError

    monkeypatch.setattr("tickwire.streams.worker.batch.MAX_BACKOFF_S", 0.01)
    metrics, table = Metrics(CollectorRegistry()), _Table()
    outbox = _FlakyOutbox(3, KafkaTimeoutError())
    checkpoint = _checkpoint(outbox, metrics, table)
    await checkpoint.run([event(b"5", 0)])
    assert outbox.delivered == [[("out", b"k", b"5", [])]]  # returned only once delivered: faust commits after
    assert ANY.decode(table.data[b"k"]) == {"sum": 5}
    assert metrics.registry.get_sample_value(
        "tickwire_worker_batch_retries_total", {"stage": "summing", "step": "deliver outputs"}) == 3
    assert metrics.is_ready is True


async def test_a_state_write_the_broker_does_not_acknowledge_is_retried(monkeypatch):
    monkeypatch.setattr("tickwire.streams.worker.batch.MAX_BACKOFF_S", 0.01)
    monkeypatch.setattr("tickwire.streams.worker.batch.STATE_WRITE_TIMEOUT_S", 0.05)
    metrics, table = Metrics(CollectorRegistry()), _Table()
    lost = [True]
    acknowledge = table.write

    async def write(records):
        if lost.pop() if lost else False:
            table.sent += records
            await asyncio.get_running_loop().create_future()  # never acknowledged
        await acknowledge(records)

    table.write = write
    checkpoint = _checkpoint(_FlakyOutbox(0, None), metrics, table)
    await checkpoint.run([event(b"2", 0)])
    assert len(table.sent) == 2  # written again after the first write timed out
    assert metrics.registry.get_sample_value(
        "tickwire_worker_batch_retries_total", {"stage": "summing", "step": "write state"}) == 1


async def test_a_failure_no_retry_mends_stops_the_worker_before_anything_is_committed():
    from aiokafka.errors import MessageSizeTooLargeError

    class Stopped(Exception):
        pass

    def stop(reason: str):
        raise Stopped(reason)

    metrics, table = Metrics(CollectorRegistry()), _Table()
    checkpoint = _checkpoint(_FlakyOutbox(1, MessageSizeTooLargeError()), metrics, table, stop)
    with pytest.raises(Stopped, match="summing: cannot deliver outputs: MessageSizeTooLargeError"):
        await checkpoint.run([event(b"2", 0)])
    assert table.sent == []  # the state was not written either


def test_a_hostile_key_is_shown_short_in_the_rejection():
    stage = Candles(context(Metrics(CollectorRegistry())), states(_Table(), Candles.table.codec))
    trade = b'{"symbol":"AAPL","ts":"2026-01-05T14:30:10Z","price":10.0,"size":5,"trade_id":"1"}'
    with pytest.raises(InvalidMessage) as refused:
        stage.handle(event(trade, 0, b"K" * 100_000, stage.context.names[TRADES]), [])
    assert len(refused.value.detail) < 120 and refused.value.reason == "invalid_value"


def test_a_symbol_record_of_the_first_layout_is_read_through_the_codec():
    from tickwire.streams.stages.symbols import SymbolRecord, Symbols, _SymbolRecordV1
    from tickwire.streams.symbol import SymbolStateV1

    v1 = _SymbolRecordV1(SymbolStateV1(), offsets={"md.bars.v1": 9})
    record = Symbols.table.codec.decode(msgspec.msgpack.encode(v1))  # unversioned bytes: layout 1
    assert record == SymbolRecord(offsets={"md.bars.v1": 9})
    assert Symbols.table.codec.encode(record)[0] == 2


def test_each_symbol_counts_once_in_its_timeframes_current_regime():
    from tickwire.schemas.topics import BARS
    from tickwire.streams.simulator import MarketSimulator
    from tickwire.streams.stages.symbols import Symbols

    metrics = Metrics(CollectorRegistry())
    stage = Symbols(context(metrics), states(_Table(), Symbols.table.codec, metrics))
    topic = stage.context.names[BARS]
    bars = list(MarketSimulator(["AAA", "BBB"], seed=5, start=datetime(2026, 1, 5, tzinfo=timezone.utc)).bars(1500))
    for offset, bar in enumerate(bars):
        stage.handle(event(msgspec.json.encode(bar), offset, bar.symbol.encode(), topic), [])

    def in_regimes(timeframe: str) -> float:
        return sum(metrics.registry.get_sample_value("tickwire_symbols_by_regime", {"timeframe": timeframe, "regime": r}) or 0
                   for r in ("trending_up", "trending_down", "ranging", "volatile"))

    assert in_regimes("1m") == 2 and in_regimes("5m") == 2
    assert len({r for (_, tf), r in stage.shown_regimes.items() if tf == "1m"}) >= 1
    stage.assigned()
    assert in_regimes("1m") == 0  # counted again from the next bars this worker gets


def test_a_partitions_records_are_applied_in_offset_order_whatever_order_a_batch_holds():
    from tickwire.streams.worker.batch import in_partition_order

    # A record fetched before a seek (offset 9) ahead of those the seek fetched again (7, 8),
    # interleaved with another partition's and another topic's records.
    batch = [event(b"", 6), event(b"", 9), event(b"", 100, topic="other"), event(b"", 7), event(b"", 8)]
    batch[2].message.partition = 3
    ordered = in_partition_order(batch)
    assert [(e.message.topic, e.message.offset) for e in ordered] == [("in", 6), ("in", 7), ("other", 100), ("in", 8), ("in", 9)]
    in_order = [event(b"", n) for n in range(5)]
    assert in_partition_order(in_order) is in_order  # the usual case costs one pass


async def test_the_symbols_stage_loses_no_bar_of_a_batch_holding_a_later_one_first():
    from tickwire.schemas.topics import BARS
    from tickwire.streams.simulator import MarketSimulator
    from tickwire.streams.stages.symbols import Symbols

    metrics = Metrics(CollectorRegistry())
    stage = Symbols(context(metrics), states(_Table(), Symbols.table.codec, metrics))
    topic = stage.context.names[BARS]
    bars = list(MarketSimulator(["AAA"], seed=5, start=datetime(2026, 1, 5, tzinfo=timezone.utc)).bars(12))
    events = [event(msgspec.json.encode(b), n, b"AAA", topic) for n, b in enumerate(bars)]
    shuffled = events[:4] + [events[11]] + events[4:11]
    delivered = []

    class Outbox:
        async def deliver(self, messages):
            delivered.extend(messages)

    await Checkpoint(stage, Outbox(), "dlq", metrics).run(shuffled)
    minutes = {msgspec.json.decode(v)["timestamp"] for t, _, v, _ in delivered if t.endswith("md.conditions.v1")
               and msgspec.json.decode(v)["timeframe"] == "1m"}
    assert len(minutes) == 12


async def test_stages_delivering_at_once_share_one_started_producer(monkeypatch):
    started = []

    class Producer:
        def __init__(self, **options):
            started.append(self)

        async def start(self):
            await asyncio.sleep(0.01)

    monkeypatch.setattr("tickwire.streams.worker.outbox.AIOKafkaProducer", Producer)
    outbox = Outbox(Settings())
    producers = await asyncio.gather(*(outbox._start() for _ in range(5)))
    assert len(started) == 1 and all(p is started[0] for p in producers)


class _Unacked(list):
    """faust's WeakSet of records handed over and not yet acknowledged (the test's records are not hashable)."""

    def discard(self, message) -> None:
        self[:] = [m for m in self if m is not message]


class _Consumer:
    """What ``Sequence`` uses of faust's consumer: its committed offsets, its unacknowledged records and seeks."""

    def __init__(self, committed: dict) -> None:
        self._committed_offset, self.sought = committed, []
        self._unacked_messages = _Unacked()  # what faust's rebalance waits to see acknowledged

    async def seek_wait(self, partitions):
        self.sought.append(partitions)


def _fetched(*offsets: int, partition: int = 0) -> list:
    events = []
    for offset in offsets:
        e = event(str(offset).encode(), offset)
        e.message.partition, e.message.refs = partition, 1
        e.message.incref = lambda m=e.message: setattr(m, "refs", m.refs + 1)
        events.append(e)
    return events


async def _admitted(sequence, *offsets: int, partition: int = 0) -> list[int]:
    events = _fetched(*offsets, partition=partition)
    await sequence.start(events)
    admitted, seeks = sequence.admit(events)
    await sequence.seek(seeks)
    return [e.message.offset for e in admitted]


def _sequence(committed: dict, beginnings: dict | None = None, rebalancing: bool = False):
    from tickwire.streams.worker.sequence import Sequence

    consumer = _Consumer(committed)

    async def begin(partitions):
        return {where: (beginnings or {})[where] for where in partitions}

    return consumer, Sequence(lambda: consumer, begin, lambda: rebalancing)


async def test_records_fetched_before_a_seek_are_withheld_and_the_partition_fetched_again():
    from faust.types import TP

    consumer, sequence = _sequence({TP("in", 0): 10})
    # After a rebalance the committed offset is 10; faust hands over 15 and 16 first (fetched before its seek).
    stale = _fetched(15, 16)
    consumer._unacked_messages += [e.message for e in stale]
    await sequence.start(stale)
    admitted, seeks = sequence.admit(stale)
    assert admitted == [] and seeks == {("in", 0): 10}
    assert [e.message.refs for e in stale] == [2, 2]  # never acknowledged, so never committed
    assert not consumer._unacked_messages  # nor waited for by a rebalance: it would wait forever
    await sequence.seek(seeks)
    assert consumer.sought == [{TP("in", 0): 10}]
    assert await _admitted(sequence, 17, 18) == [] and len(consumer.sought) == 1  # more of the old fetch: no seek storm
    assert await _admitted(sequence, 10, 11, 12, 11, 13, 14, 15, 16) == [10, 11, 12, 13, 14, 15, 16]  # fetched again
    assert await _admitted(sequence, 9, 16) == []  # applied already


async def test_a_partition_without_a_commit_starts_at_its_beginning_not_at_the_first_record_handed_over():
    # A worker killed before its group committed anything for this partition: the next one's
    # first record may be one fetched before faust's seek, far ahead of the partition's start.
    _, sequence = _sequence({}, beginnings={("in", 0): 0})
    assert await _admitted(sequence, 382) == []
    assert await _admitted(sequence, 0, 1, 2) == [0, 1, 2]


async def test_a_stalled_partition_is_sought_again_by_the_timer_and_a_real_hole_crossed(monkeypatch):
    from faust.types import TP

    from tickwire.streams.worker import sequence as module

    consumer, sequence = _sequence({}, beginnings={("in", 0): 3, ("in", 1): 40})
    assert await _admitted(sequence, 3, 4) == [3, 4]
    assert await _admitted(sequence, 6, 7) == [] and consumer.sought == [{TP("in", 0): 5}]
    assert sequence.overdue() == {}  # not yet
    monkeypatch.setattr(module, "RESEEK_S", 0.0)
    await sequence.seek(sequence.overdue())  # no record came for it: the timer seeks again
    assert consumer.sought == [{TP("in", 0): 5}] * 2
    assert await _admitted(sequence, 6, 7, 8) == [6, 7, 8]  # the log starts again at 6: 5 is a transaction marker
    assert sequence.overdue() == {}
    assert await _admitted(sequence, 40, partition=1) == [40]  # partitions are sequenced apart
    consumer._committed_offset[TP("in", 0)] = 2
    sequence.reset()
    assert await _admitted(sequence, 2, 3) == [2, 3]  # due again from the committed offset


async def test_no_seek_starts_while_faust_rebalances():
    consumer, sequence = _sequence({}, beginnings={("in", 0): 0}, rebalancing=True)
    assert await _admitted(sequence, 9) == [] and consumer.sought == []  # faust seeks to the committed offsets itself


def test_no_topic_feeds_two_stages():
    """A seek moves a partition for every agent reading it (see worker/sequence.py)."""
    from tickwire.streams.stages import STAGES

    inputs = [topic for stage in STAGES for topic in stage.inputs]
    assert len(inputs) == len(set(inputs))


def test_faust_hands_over_every_record_of_the_stages_inputs_and_filters_changelogs_as_before():
    from faust.types import TP

    from tickwire.streams.worker.sequence import ReadOffsets, hand_over_every_record

    consumer = SimpleNamespace(_read_offset={TP("in", 0): 15, TP("app-t-changelog", 0): 7})
    hand_over_every_record(consumer, ["in"])
    offsets = consumer._read_offset
    assert isinstance(offsets, ReadOffsets)
    assert offsets[TP("in", 0)] is None  # faust's drain loop then neither drops 10..14 nor marks them done
    assert offsets[TP("app-t-changelog", 0)] == 7 and offsets[TP("app-t-changelog", 1)] is None
    hand_over_every_record(consumer, ["in"])
    assert consumer._read_offset is offsets  # installed once


async def test_a_value_above_the_record_bound_is_written_as_chunks_and_read_back_whole():
    from tickwire.streams.worker.state import MAX_RECORD_BYTES

    metrics = Metrics(CollectorRegistry())
    table = _Table()
    states = KeyedStates(table, StateCodec(bytes, bytes), metrics, table.write)
    big = random.Random(5).randbytes(MAX_RECORD_BYTES * 256 // 100)  # 2.56 records' worth, that no deflating shrinks
    states.changed(b"k", 3, big)
    await states.write(5)
    assert max(len(v) for _, _, v in table.sent) <= MAX_RECORD_BYTES
    assert [k for _, k, _ in table.sent][-1] == b"k" and len(table.sent) == 4  # three chunks, then the manifest
    assert KeyedStates(table, StateCodec(bytes, bytes), metrics, table.write).get(b"k") == big  # e.g. after a restart
    assert [k for k, _ in states.stored_items()] == [b"k"]

    table.sent.clear()
    states.changed(b"k", 3, b"small")
    await states.write(5)
    assert table.sent[0] == (3, b"k", StateCodec(bytes, bytes).encode(b"small"))
    assert [v for _, _, v in table.sent[1:]] == [None, None, None]  # the old chunks, once the new value is in
    assert list(table.data) == [b"k"]

    states.changed(b"k", 3, big + b"!")
    await states.write(5)
    chunk = next(k for k in table.data if k != b"k")
    table.data[chunk] = b"\x00" * len(table.data[chunk])  # a damaged chunk: the key starts afresh, counted
    assert KeyedStates(table, StateCodec(bytes, bytes), metrics, table.write).get(b"k") == b""
    assert metrics.registry.get_sample_value("tickwire_state_resets_total", {"table": "t"}) == 1


def _pack_of(symbols: list[str], minute: int, topic: str, regimes: dict[str, str] | None = None) -> SimpleNamespace:
    from tickwire.schemas.market import Condition

    conditions = [msgspec.json.encode(Condition(
        symbol=s, timeframe="1m", timestamp=datetime(2026, 1, 5, tzinfo=timezone.utc) + timedelta(minutes=minute),
        open=10.0, high=11.0, low=9.0, close=10.0 + (minute * (i + 1)) % 7, volume=100, detected_regime=(regimes or {}).get(s),
    )) for i, s in enumerate(symbols)]
    return event(msgspec.msgpack.encode(conditions), minute, b"1m", topic)


@pytest.mark.parametrize("universe", ["", "SPY,A,C"])
def test_the_correlation_universe_holds_at_most_its_maximum_besides_the_benchmark(universe, caplog):
    from tickwire.schemas.topics import CONDITIONS_BY_TIMEFRAME, CORRELATION_CONTEXT
    from tickwire.streams.stages.correlations import CorrelationsStage

    settings = Settings(correlation_timeframes="1m", correlation_max_symbols=3, correlation_quiet_bars=5, correlation_universe=universe)
    metrics = Metrics(CollectorRegistry())
    stage = CorrelationsStage(
        StageContext(settings, metrics, {t: settings.topic(t.name) for t in ALL}, msgspec.json.encode, lambda spec: None),
        states(_Table(), CorrelationsStage.table.codec, metrics),
    )
    topic, out = settings.topic(CONDITIONS_BY_TIMEFRAME.name), []

    def published(kind) -> list[dict]:
        return [msgspec.json.decode(v) for t, _, v, _ in out if t == settings.topic(kind.name)]

    def paired() -> set[str]:  # the symbols the pairs' core follows
        return {s for s in stage.windows["1m"].core.state.symbols if s is not None}

    for minute in range(4):
        stage.handle(_pack_of(["A", "B", "C", "D", "SPY"], minute, topic), out)
    # the benchmark and sector context for every symbol; the pairs for the universe only
    assert {m["symbol"] for m in published(CORRELATION_CONTEXT)} == {"A", "B", "C", "D", "SPY"}
    assert paired() == ({"A", "B", "C", "SPY"} if not universe else {"A", "C", "SPY"})
    assert ("universe is full" in caplog.text) is (not universe)
    if universe:
        return
    out.clear()
    for minute in range(4, 14):  # B goes quiet for longer than the quiet bars: D takes its place
        stage.handle(_pack_of(["A", "C", "D", "SPY"], minute, topic), out)
    assert "D" in paired() and "B" not in stage.windows["1m"].latest and "B" not in stage.windows["1m"].universe


def test_the_benchmarks_regime_waits_with_its_timestamp_and_sets_the_threshold_when_it_closes():
    from tickwire.schemas.topics import CONDITIONS_BY_TIMEFRAME, CORRELATIONS
    from tickwire.streams.stages.correlations import CorrelationsStage

    settings = Settings(correlation_timeframes="1m", correlation_windows="3", correlation_min_common=2,
                        correlation_snapshot_every=1, correlation_thresholds="volatile=0.4")
    metrics, table = Metrics(CollectorRegistry()), _Table()
    context = StageContext(settings, metrics, {t: settings.topic(t.name) for t in ALL}, msgspec.json.encode, lambda spec: None)
    stage = CorrelationsStage(context, states(table, CorrelationsStage.table.codec, metrics))
    topic, out = settings.topic(CONDITIONS_BY_TIMEFRAME.name), []

    def thresholds() -> list[tuple[str, str | None, float]]:
        return [(r["timestamp"][11:16], r["regime"], r["threshold"]) for r in map(msgspec.json.decode, (v for t, _, v, _ in out
                if t == settings.topic(CORRELATIONS.name))) if r["record"] == "threshold"]

    for minute in range(3):
        stage.handle(_pack_of(["SPY", "A", "B"], minute, topic), out)
    stage.handle(_pack_of(["SPY", "A"], 3, topic, {"SPY": "volatile", "A": "ranging"}), out)  # minute 3 stays open (B)
    assert thresholds() == [("00:00", None, 0.7)]  # the single threshold, no regime known yet
    minute_3 = int(datetime(2026, 1, 5, 0, 3, tzinfo=timezone.utc).timestamp()) * 1_000_000
    assert stage.windows["1m"].regimes == {minute_3: "volatile"}  # the benchmark's only, waiting with its minute
    # Restarted from what was written: the waiting regime is read back and applies when minute 3 closes.
    asyncio.run(stage.states.write(5))
    stage = CorrelationsStage(context, states(table, CorrelationsStage.table.codec, metrics))
    stage.handle(_pack_of(["B"], 3, topic), out)
    stage.handle(_pack_of(["SPY", "A", "B"], 4, topic), out)
    assert thresholds() == [("00:00", None, 0.7), ("00:03", "volatile", 0.4)]
    assert stage.windows["1m"].regimes == {}  # nothing kept for closed minutes


def test_one_symbol_far_ahead_does_not_black_out_the_others():
    from tickwire.schemas.topics import CONDITIONS_BY_TIMEFRAME, CORRELATION_CONTEXT
    from tickwire.streams.stages.correlations import CorrelationsStage

    settings = Settings(correlation_timeframes="1m")
    metrics = Metrics(CollectorRegistry())
    stage = CorrelationsStage(
        StageContext(settings, metrics, {t: settings.topic(t.name) for t in ALL}, msgspec.json.encode, lambda spec: None),
        states(_Table(), CorrelationsStage.table.codec, metrics),
    )
    topic, out = settings.topic(CONDITIONS_BY_TIMEFRAME.name), []
    for minute in range(5):
        stage.handle(_pack_of(["SPY", "A", "B", "C"], minute, topic), out)
    stage.handle(_pack_of(["C"], 5 + 1440, topic), out)  # a day ahead: inside the allowed skew, past the quiet bars
    for minute in range(5, 12):
        stage.handle(_pack_of(["SPY", "A", "B"], minute, topic), out)
    closed = {msgspec.json.decode(v)["timestamp"] for t, _, v, _ in out if t == settings.topic(CORRELATION_CONTEXT.name)}
    # Minutes 1..10 closed as usual (0 has no returns yet, 11 waits for the next bar), C's day-ahead bar not yet.
    assert closed == {f"2026-01-05T00:{m:02d}:00Z" for m in range(1, 11)}
    assert metrics.registry.get_sample_value("tickwire_late_bars_total", {"topic": topic}) is None


async def test_outputs_carry_their_topics_schema_version_and_dlq_records_their_own_headers():
    appended = []

    class Batch:
        def append(self, timestamp, key, value, headers):
            appended.append((key, headers))
            return True

    class Producer:
        def create_batch(self):
            return Batch()

        async def send_batch(self, batch, topic, partition):
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    outbox = Outbox(Settings())
    outbox._producer = Producer()
    outbox._partitions = {"p.md.conditions.v1": [0], "p.tickwire.dlq.v1": [0]}
    await outbox.deliver([("p.md.conditions.v1", b"A", b"{}", []), ("p.tickwire.dlq.v1", b"B", b"x", [("tickwire.reason", b"schema")])])
    assert appended == [(b"A", [("tickwire.schema.version", b"1")]), (b"B", [("tickwire.reason", b"schema")])]


async def test_stages_asking_where_partitions_begin_at_once_share_one_client(monkeypatch):
    from tickwire.streams.worker.sequence import Beginnings

    started = []

    class Client:
        def __init__(self, **options):
            started.append(self)

        async def start(self):
            await asyncio.sleep(0.01)

        async def beginning_offsets(self, partitions):
            return {tp: 0 for tp in partitions}

    monkeypatch.setattr("tickwire.streams.worker.sequence.AIOKafkaConsumer", Client)
    beginnings = Beginnings(Settings())
    answers = await asyncio.gather(*(beginnings([("in", n)]) for n in range(5)))
    assert len(started) == 1 and answers[3] == {("in", 3): 0}


async def test_a_partition_that_lags_yet_hands_nothing_over_is_fetched_again(monkeypatch):
    from faust.types import TP

    from tickwire.streams.worker import sequence as module

    class Consumer(_Consumer):
        dropped: list = []
        _buffered_partitions = {TP("in", 0)}
        _paused_partitions: set = set()

        def assignment(self):
            return {TP("in", 0), TP("in", 1), TP("other", 0)}

        def _get_active_partitions(self):
            return {TP("in", 1)}

        def on_buffer_drop(self, tp):
            self.dropped.append(tp)

    consumer = Consumer({TP("in", 0): 24, TP("in", 1): 50})

    async def ends(partitions):
        return {("in", 0): 129, ("in", 1): 50}  # partition 1 is at its end: caught up, not stalled

    sequence = module.Sequence(lambda: consumer, None, lambda: False, ends, ["in"])
    assert await sequence.stalled() == {}  # first look: the clock starts
    monkeypatch.setattr(module, "STALL_S", 0.0)
    assert await sequence.stalled() == {("in", 0): 24} and consumer.dropped == [TP("in", 0)]
    assert await _admitted(sequence, 24, 25) == [24, 25]
    assert await sequence.stalled() == {}  # it moved


async def test_a_partition_never_committed_nor_handed_over_is_watched_from_its_beginning(monkeypatch):
    """The crash test's last worker never fetched two md.bars.v1 partitions its killed
    predecessors had not committed: with no offset due they were invisible to the watch."""
    from faust.types import TP

    from tickwire.streams.worker import sequence as module

    class Consumer(_Consumer):
        _buffered_partitions: set = set()
        _paused_partitions: set = set()

        def assignment(self):
            return {TP("in", 5)}

        def _get_active_partitions(self):
            return set()

        def on_buffer_drop(self, tp):
            pass

    async def beginnings(partitions):
        return {where: 0 for where in partitions}

    async def ends(partitions):
        return {("in", 5): 3000}

    sequence = module.Sequence(lambda: Consumer({}), beginnings, lambda: False, ends, ["in"])
    assert await sequence.stalled() == {}
    monkeypatch.setattr(module, "STALL_S", 0.0)
    assert await sequence.stalled() == {("in", 5): 0}


async def test_a_recovery_stopped_with_its_tables_read_is_finished_after_a_while(monkeypatch):
    from types import SimpleNamespace

    from tickwire.streams.worker import sequence as module

    finished = []

    class Recovery:
        in_recovery, remaining = True, False

        def need_recovery(self):
            return self.remaining

        async def on_recovery_completed(self, generation):
            finished.append(generation)

    recovery = Recovery()
    app = SimpleNamespace(rebalancing=True, consumer_generation_id=4, tables=SimpleNamespace(recovery=recovery),
                          consumer=SimpleNamespace(assignment=lambda: {("md.bars.v1", 5)}))
    watch = module.StuckRecovery(app)
    await watch()
    await watch()
    assert finished == []  # not stuck for RECOVERY_STUCK_S yet
    monkeypatch.setattr(module, "RECOVERY_STUCK_S", 0.0)
    recovery.remaining = True  # still reading the changelogs: a recovery, not a stuck one
    await watch()
    await watch()
    assert finished == []
    recovery.remaining = False
    await watch()
    app.consumer_generation_id = 5  # another rebalance: its own clock
    await watch()
    assert finished == []
    await watch()
    assert finished == [5]


async def test_each_input_partitions_lag_is_exported_and_dropped_when_it_goes():
    from faust.types import TP
    from prometheus_client import CollectorRegistry

    from tickwire.schemas.metrics import Metrics
    from tickwire.streams.worker import sequence as module

    assigned = {TP("in", 0), TP("in", 1), TP("other", 0)}

    class Consumer(_Consumer):
        _buffered_partitions: set = set()
        _paused_partitions: set = set()

        def assignment(self):
            return assigned

    async def ends(partitions):
        return {where: {("in", 0): 129, ("in", 1): 50}[where] for where in partitions}

    metrics = Metrics(CollectorRegistry())
    sequence = module.Sequence(lambda: Consumer({TP("in", 0): 24, TP("in", 1): 50}), None, lambda: False, ends, ["in"],
                               lag=metrics.lag)
    await sequence.stalled()
    value = lambda p: metrics.registry.get_sample_value("tickwire_consumer_lag_messages", {"topic": "in", "partition": p})
    assert (value("0"), value("1")) == (105.0, 0.0)
    assert await _admitted(sequence, 24, 25) == [24, 25]
    assigned.discard(TP("in", 1))  # revoked: its series goes
    await sequence.stalled()
    assert (value("0"), value("1")) == (103.0, None)


async def test_the_portfolio_stage_values_a_portfolio_against_its_partitions_benchmark():
    from tickwire.schemas.execution import BenchmarkClose, PositionRow
    from tickwire.schemas.topics import PORTFOLIO_CONTEXT, PORTFOLIO_PERFORMANCE, PORTFOLIOS, POSITIONS
    from tickwire.streams.stages.portfolios import CONTEXT_KEYS, PortfolioStage

    metrics = Metrics(CollectorRegistry())
    table = _Table()
    stage = PortfolioStage(context(metrics), states(table, PortfolioStage.table.codec, metrics))
    settings, out = Settings(), []
    monday = datetime(2026, 3, 2, 16, tzinfo=timezone.utc)
    for day in range(4):  # the benchmark, into the portfolio's partition (2), closing each day at 16:00
        close = BenchmarkClose(int((monday + timedelta(days=day)).timestamp() * 1e6), 400.0 * (1.01, 0.99) [day % 2] ** day)
        stage.handle(SimpleNamespace(value=msgspec.msgpack.encode(close), message=SimpleNamespace(
            topic=settings.topic(PORTFOLIO_CONTEXT.name), partition=2, offset=day, key=CONTEXT_KEYS[2])), out)
    for day, value in enumerate([100.0, 110.0, 99.0, 108.9]):
        row = PositionRow(
            portfolio_id="P1", symbol="AAPL", ts=monday + timedelta(days=day), cause="MARK", quantity=1, avg_cost=1.0,
            mark_price=value, market_value=value, exposure=value, unrealized_pnl=0.0, realized_pnl=0.0, fees=0.0,
            cash_flow=-100_000.0, day_pnl=0.0, sector=None, opened_at=None, version=day + 1,
        )
        stage.handle(SimpleNamespace(value=msgspec.json.encode(row), message=SimpleNamespace(
            topic=settings.topic(POSITIONS.name), partition=2, offset=day, key=b"P1")), out)
    await stage.states.write(5)
    weeks = [msgspec.json.decode(v) for t, _, v, _ in out if t == settings.topic(PORTFOLIO_PERFORMANCE.name)]
    wednesday = [w for w in weeks if w["period_type"] == "WEEK" and w["period_end"] == "2026-03-04"]
    assert wednesday and wednesday[0]["beta"] is not None and wednesday[0]["benchmark_return"] is not None
    # After a restart the partition's benchmark is read back from the table.
    again = PortfolioStage(context(metrics), states(table, PortfolioStage.table.codec, metrics))
    assert again.states.get(CONTEXT_KEYS[2]).benchmark == stage.states.get(CONTEXT_KEYS[2]).benchmark != {}
    # The batch publishes one update per portfolio, its last, with every row applied in it;
    # the performance rows all go.
    portfolios_topic = settings.topic(PORTFOLIOS.name)
    delivered = stage.finish(out)
    updates = [msgspec.json.decode(v) for t, _, v, _ in delivered if t == portfolios_topic]
    assert len([m for m in out if m[0] == portfolios_topic]) == 4 and [u["version"] for u in updates] == [4]
    assert updates[0]["market_value"] == 108.9
    assert [m for m in delivered if m[0] != portfolios_topic] == [m for m in out if m[0] != portfolios_topic]


async def test_a_benchmark_close_sends_the_days_it_made_due_of_a_portfolio_that_stays_still():
    from tickwire.schemas.execution import BenchmarkClose, PositionRow
    from tickwire.schemas.topics import PORTFOLIO_CONTEXT, PORTFOLIO_PERFORMANCE, POSITIONS
    from tickwire.streams.stages.portfolios import CONTEXT_KEYS, PortfolioStage
    from tickwire.streams.worker.outbox import partition_of

    metrics = Metrics(CollectorRegistry())
    table = _Table()
    stage = PortfolioStage(context(metrics), states(table, PortfolioStage.table.codec, metrics))
    settings, out, partition = Settings(), [], partition_of(b"P1", POSITIONS.partitions)
    monday = datetime(2026, 3, 2, 16, tzinfo=timezone.utc)
    for day in range(4):  # Monday to Thursday; no benchmark close yet: Monday and Tuesday go out a day late
        row = PositionRow(
            portfolio_id="P1", symbol="AAPL", ts=monday + timedelta(days=day), cause="MARK", quantity=1, avg_cost=1.0,
            mark_price=100.0 + day, market_value=100.0 + day, exposure=100.0 + day, unrealized_pnl=0.0, realized_pnl=0.0,
            fees=0.0, cash_flow=-100_000.0, day_pnl=0.0, sector=None, opened_at=None, version=day + 1,
        )
        stage.handle(SimpleNamespace(value=msgspec.json.encode(row), message=SimpleNamespace(
            topic=settings.topic(POSITIONS.name), partition=partition, offset=day, key=b"P1")), out)
    await stage.states.write(5)
    performance_topic = settings.topic(PORTFOLIO_PERFORMANCE.name)
    ends = lambda messages: {msgspec.json.decode(v)["period_end"] for t, _, v, _ in messages if t == performance_topic}
    assert ends(out) == {"2026-03-02", "2026-03-03"}
    # Wednesday's benchmark close comes after P1's last update: it sends Wednesday's rows.
    close = BenchmarkClose(int((monday + timedelta(days=2)).timestamp() * 1e6), 400.0)
    later: list = []
    for p in range(PORTFOLIO_CONTEXT.partitions):  # to every partition; only P1's sends its rows
        stage.handle(SimpleNamespace(value=msgspec.msgpack.encode(close), message=SimpleNamespace(
            topic=settings.topic(PORTFOLIO_CONTEXT.name), partition=p, offset=9, key=CONTEXT_KEYS[p])), later)
    assert ends(later) == {"2026-03-04"}
    assert {k for t, k, _, _ in later if t == performance_topic} == {b"P1"}


def test_the_correlation_stage_sends_each_snapshots_correlated_pairs_to_every_portfolio_partition():
    from tickwire.schemas.execution import CorrelatedPairs
    from tickwire.schemas.topics import CONDITIONS_BY_TIMEFRAME, PORTFOLIO_CONTEXT
    from tickwire.streams.stages.correlations import CorrelationsStage
    from tickwire.streams.stages.portfolios import CONTEXT_KEYS

    settings = Settings(correlation_timeframes="1m", correlation_windows="5", correlation_min_common=3,
                        correlation_snapshot_every=1, correlation_threshold=0.5)
    metrics = Metrics(CollectorRegistry())
    stage = CorrelationsStage(
        StageContext(settings, metrics, {t: settings.topic(t.name) for t in ALL}, msgspec.json.encode, lambda spec: None),
        states(_Table(), CorrelationsStage.table.codec, metrics),
    )
    out = []
    for minute in range(8):
        stage.handle(_pack_of(["SPY", "A", "B", "C"], minute, settings.topic(CONDITIONS_BY_TIMEFRAME.name)), out)
    sent = [(key, msgspec.msgpack.decode(v, type=CorrelatedPairs)) for t, key, v, _ in out if t == settings.topic(PORTFOLIO_CONTEXT.name)]
    last = sent[-len(CONTEXT_KEYS):]
    assert [key for key, _ in last] == CONTEXT_KEYS and all(snapshot == last[0][1] for _, snapshot in last)
    snapshot = last[0][1]
    assert (snapshot.timeframe, snapshot.window_bars) == ("1m", 5)
    assert snapshot.pairs and all(abs(value) >= 0.5 for _, _, value in snapshot.pairs)


def test_the_benchmarks_day_close_goes_to_every_portfolio_partition_once_its_next_day_begins():
    from tickwire.schemas.execution import BenchmarkClose
    from tickwire.streams.stages.portfolios import CONTEXT_KEYS
    from tickwire.streams.stages.symbols import SymbolRecord, Symbols

    metrics = Metrics(CollectorRegistry())
    stage = Symbols(context(metrics), states(_Table(), Symbols.table.codec, metrics))
    record, out, minute, midnight = SymbolRecord(), [], 60_000_000, 20_000 * 86_400_000_000
    for close_us, close in [(midnight - 2 * minute, 10.0), (midnight, 11.0), (midnight - minute, 99.0),
                            (midnight + minute, 12.0), (midnight + 2 * minute, 13.0)]:
        stage.close_benchmark_day(record, close_us, close, out)
    # The bar closing at midnight is the day before's last; the one older than it changes nothing.
    sent = [(key, msgspec.msgpack.decode(value, type=BenchmarkClose)) for _, key, value, _ in out]
    assert [key for key, _ in sent] == CONTEXT_KEYS
    assert {close for _, close in sent} == {BenchmarkClose(midnight, 11.0)}
    assert record.last_close == (midnight + 2 * minute, 13.0)


async def test_an_archived_value_leaves_its_record_only_once_written_and_expires_after_partitions_move():
    from tickwire.streams.worker.archive import Archive

    table = _Table()
    store = states(table)
    archive = Archive(store, ANY, "item", lambda value: value["until"])
    assert archive.put(b"AAA", 3, "1", {"until": 100}) is False  # on its way: the record keeps it
    assert archive.put(b"AAA", 3, "1", {"until": 100}) is False
    archive.put(b"AAA", 3, "2", {"until": 200})
    await store.write(5)
    assert [key for _, key, _ in table.sent] == [archive.key(b"AAA", "1"), archive.key(b"AAA", "2")]  # each once
    assert archive.put(b"AAA", 3, "1", {"until": 100}) is True and not store.pending(archive.key(b"AAA", "1"))
    assert archive.get(b"AAA", "2") == {"until": 200} and archive.get(b"AAA", "3") is None
    held: dict = {}
    for item_id in ("2", "3", None):  # back in the record: what the archive has, nothing else
        archive.restore(b"AAA", held, item_id)
    assert held == {"2": {"until": 200}}
    held["2"] = {"until": 1}
    archive.restore(b"AAA", held, "2")
    assert held["2"] == {"until": 1}  # the record's own copy is the one kept
    assert archive.owns(archive.key(b"AAA", "1")) and not archive.owns(b"AAA")
    archive.reset()  # partitions moved: what expires when is read back from the table
    archive.expire(b"AAA", 3, 150)
    assert archive.put(b"AAA", 3, "1", {"until": 100}) is False  # its deletion waits: the record must keep it
    await store.write(5)
    assert (3, archive.key(b"AAA", "1"), None) in table.sent
    assert archive.get(b"AAA", "1") is None and archive.get(b"AAA", "2") == {"until": 200}


async def test_what_a_symbol_settled_leaves_its_record_and_expires_after_a_week_however_often_it_trades():
    """Nine days of a symbol closing a trade every 4 minutes, each of two orders, a sizing
    and an exit decision: the record written with each batch stays the size of what is
    open, each settled trade, ended order and joined decision sits under a key of its own
    until a week after its end, and a message naming one finds it there."""
    import uuid

    from tickwire.schemas.topics import BARS, DECISION_HISTORY, EXITS, FILLS, ORDER_UPDATES, ORDERS, SIZING, TRADE_OUTCOMES
    from tickwire.streams.stages.symbols import Symbols

    metrics, table = Metrics(CollectorRegistry()), _Table()
    stage = Symbols(context(metrics), states(table, Symbols.table.codec, metrics))
    names, start = stage.context.names, datetime(2026, 1, 5, tzinfo=timezone.utc)
    offsets = {names[BARS]: 0, names[FILLS]: 0, names[ORDERS]: 0, names[SIZING]: 0, names[EXITS]: 0}

    def send(topic: str, value: dict, out: list) -> None:
        offsets[topic] += 1
        stage.handle(event(msgspec.json.encode(value), offsets[topic], b"AAA", topic), out)

    def fill(trade: str, side: str, ts: datetime, fill_id: str | None = None) -> dict:
        return {"fill_id": fill_id or f"{trade}-{side}", "trade_id": trade, "strategy_id": "s1", "model_version": "v1",
                "symbol": "AAA", "side": side, "ts": ts.isoformat(), "price": 100.0, "quantity": 10,
                "portfolio_id": "P1", "order_id": f"{trade}-{side}"}

    def sizing(trade: str, ts: datetime) -> dict:
        return {"kind": "decision", "decision_id": trade, "strategy_id": "s1", "symbol": "AAA", "trade_id": trade,
                "portfolio_id": "P1", "ts": ts.isoformat(), "account_value": 1e5, "risk_per_trade": 0.01, "stop_distance": 2.0,
                "quantity": 10}

    def exit_(trade: str, ts: datetime) -> dict:
        return {"exit_id": trade, "trade_id": trade, "strategy_id": "s1", "symbol": "AAA", "ts": ts.isoformat(),
                "reason": "time", "price": 100.0, "quantity": 10}

    def placed(trade: str, side: str, ts: datetime) -> dict:
        return {"order_id": f"{trade}-{side}", "portfolio_id": "P1", "strategy_id": "s1", "symbol": "AAA", "event": "PLACED",
                "ts": ts.isoformat(), "side": side, "quantity": 10}

    exits, ended, rows, sizes, out = {}, {}, {}, [], []
    for minute in range(9 * 1440):
        ts = start + timedelta(minutes=minute)
        send(names[BARS], {"symbol": "AAA", "ts": ts.isoformat(), "open": 100.0, "high": 100.5, "low": 99.5,
                           "close": 100.0, "volume": 10}, out)
        if minute % 4 == 0:
            trade = str(uuid.UUID(int=minute + 1))
            send(names[SIZING], sizing(trade, ts), out)
            send(names[ORDERS], placed(trade, "BUY", ts), out)
            send(names[FILLS], fill(trade, "BUY", ts), out)
            ended[f"{trade}-BUY"] = ts
        elif minute % 4 == 2:
            send(names[ORDERS], placed(trade, "SELL", ts), out)
            send(names[EXITS], exit_(trade, ts), out)
            send(names[FILLS], fill(trade, "SELL", ts), out)
            exits[trade] = ended[f"{trade}-SELL"] = ts
        if minute % 10 == 9:  # a batch: its end (finish), then its state write
            out = stage.finish(out)
            await stage.states.write(5)
            sizes.append(len(table.data[b"AAA"]))
            for topic, _, value, _ in out:
                if topic == names[TRADE_OUTCOMES]:
                    rows[msgspec.json.decode(value)["trade_id"]] = value
            out.clear()
    record = stage.states.get(b"AAA")
    assert len(record.book.trades) <= 3  # those closed since the last write (10 minutes: 2-3 trades) and the open one
    # Orders, and decisions (which follow their trade out a write later): two writes' worth at most.
    assert len(record.orders.orders) <= 6 and len(record.decisions.sizing) <= 6 and len(record.decisions.exits) <= 6
    assert max(sizes[len(sizes) // 4:]) < 1.2 * min(sizes[len(sizes) // 4:])  # day 2 to day 9: no growth
    archived = {key.split(b"\x00trade/")[1].decode() for key in table.data if b"\x00trade/" in key}
    clock = start + timedelta(minutes=9 * 1440 - 1)
    assert archived == {t for t, at in exits.items() if at >= clock - timedelta(days=7)}  # a week's, the last few in the record too
    orders = {key.split(b"\x00order/")[1].decode() for key in table.data if b"\x00order/" in key}
    assert orders == {o for o, at in ended.items() if at >= max(ended.values()) - timedelta(days=7)}  # orders' own clock
    decisions_clock = datetime.fromtimestamp(record.decisions.clock_us / 1e6, timezone.utc)
    for kind, held in ((b"sizing", record.decisions.sizing), (b"exit", record.decisions.exits)):
        decided = {key.split(b"\x00" + kind + b"/")[1].decode() for key in table.data if b"\x00" + kind + b"/" in key}
        assert decided | set(held) == {t for t, at in exits.items() if at >= decisions_clock - timedelta(days=7)}
    # A fill of a settled trade: the same one again is a duplicate, its row re-sent; a new one is refused.
    oldest = min(archived, key=exits.get)
    send(names[FILLS], fill(oldest, "SELL", exits[oldest]), out)
    assert [v for t, _, v, _ in out if t == names[TRADE_OUTCOMES]] == [rows[oldest]]
    assert metrics.registry.get_sample_value("tickwire_duplicates_dropped_total", {"topic": names[FILLS]}) == 1
    with pytest.raises(InvalidMessage, match="already closed"):
        send(names[FILLS], fill(oldest, "BUY", clock + timedelta(minutes=1), fill_id="late") | {"order_id": None}, [])
    # The same decisions again: duplicates, nothing sent.
    out.clear()
    send(names[SIZING], sizing(oldest, exits[oldest] - timedelta(minutes=2)), out)
    send(names[EXITS], exit_(oldest, exits[oldest]), out)
    assert not [v for t, _, v, _ in out if t == names[DECISION_HISTORY]]
    assert metrics.registry.get_sample_value("tickwire_duplicates_dropped_total", {"topic": names[SIZING]}) == 1
    # An order event naming an ended order: the same PLACED is a duplicate, a cancel is refused.
    out.clear()
    send(names[ORDERS], placed(oldest, "SELL", exits[oldest]), out)
    assert not [v for t, _, v, _ in out if t == names[ORDER_UPDATES]]
    with pytest.raises(InvalidMessage, match="FILLED"):
        send(names[ORDERS], placed(oldest, "SELL", clock) | {"event": "CANCELLED"}, [])


def test_the_symbols_stage_joins_sizing_and_exit_decisions_with_their_trade_and_keeps_them_in_the_record():
    import uuid

    from tickwire.schemas.topics import DECISION_HISTORY, EXITS, FILLS, SIZING
    from tickwire.streams.stages.symbols import SymbolRecord, Symbols

    metrics = Metrics(CollectorRegistry())
    stage = Symbols(context(metrics), states(_Table(), Symbols.table.codec, metrics))
    names = stage.context.names
    trade, ts = str(uuid.UUID(int=7)), "2026-01-05T14:3{}:00Z"
    sizing = msgspec.json.encode({
        "kind": "decision", "decision_id": str(uuid.UUID(int=1)), "strategy_id": "s1", "symbol": "AAA", "trade_id": trade,
        "ts": ts.format(0), "account_value": 1e5, "risk_per_trade": 0.01, "stop_distance": 2.0, "quantity": 100,
    })

    def exit_(minute: int, exit_id: int) -> bytes:
        return msgspec.json.encode({"exit_id": str(uuid.UUID(int=exit_id)), "trade_id": trade, "strategy_id": "s1", "symbol": "AAA",
                                    "ts": ts.format(minute), "reason": "time", "price": 11.0, "quantity": 100})

    def fill(side: str, minute: int, price: float) -> bytes:
        return msgspec.json.encode({"fill_id": f"f{minute}", "trade_id": trade, "strategy_id": "s1", "model_version": "v1",
                                    "symbol": "AAA", "side": side, "ts": ts.format(minute), "price": price, "quantity": 100})

    def rows(out: list) -> list[dict]:
        return [msgspec.json.decode(v) for t, _, v, _ in out if t == names[DECISION_HISTORY]]

    out: list = []
    stage.handle(event(sizing, 0, b"AAA", names[SIZING]), out)
    stage.handle(event(sizing, 0, b"AAA", names[SIZING]), out)  # redelivered: skipped by its offset
    stage.handle(event(sizing, 1, b"AAA", names[SIZING]), out)  # the same decision again: nothing changes
    assert [(r["record"], r["version"], r["planned_risk"], r["realized_pnl"]) for r in rows(out)] == [("decision", 1, 200.0, None)]
    assert metrics.registry.get_sample_value("tickwire_duplicates_dropped_total", {"topic": names[SIZING]}) == 2
    out.clear()
    stage.handle(event(fill("BUY", 1, 10.0), 0, b"AAA", names[FILLS]), out)
    stage.handle(event(exit_(2, 1), 0, b"AAA", names[EXITS]), out)
    stage.handle(event(fill("SELL", 2, 11.0), 1, b"AAA", names[FILLS]), out)
    # The close joins both decisions: +1 x 100 = 100 realised, all of an MFE of 100 (the exit fill's price).
    joined = {r["record"]: r for r in rows(out)}
    assert (joined["decision"]["version"], joined["decision"]["realized_pnl"], joined["decision"]["realized_loss"]) == (2, 100.0, 0.0)
    assert (joined["exit"]["version"], joined["exit"]["exit_pnl"], joined["exit"]["exit_efficiency"]) == (2, 100.0, 1.0)
    with pytest.raises(InvalidMessage) as refused:  # decided after the trade it names had closed
        stage.handle(event(exit_(5, 2), 1, b"AAA", names[EXITS]), [])
    assert refused.value.reason == "unknown_trade"
    # A week on, an exit naming a trade that never came here is dropped, and counted.
    ghost = msgspec.json.decode(exit_(3, 3)) | {"trade_id": str(uuid.UUID(int=8)), "ts": "2026-01-05T14:33:00Z"}
    stage.handle(event(msgspec.json.encode(ghost), 2, b"AAA", names[EXITS]), [])
    later = msgspec.json.decode(exit_(0, 4)) | {"trade_id": str(uuid.UUID(int=9)), "ts": "2026-01-13T14:30:00Z"}
    stage.handle(event(msgspec.json.encode(later), 3, b"AAA", names[EXITS]), [])
    assert metrics.registry.get_sample_value("tickwire_decisions_unjoined_total", {"kind": "exit"}) == 1
    record = stage.states.get(b"AAA")
    assert Symbols.table.codec.decode(Symbols.table.codec.encode(record)) == record
    # A record written before the decisions were kept (one field fewer) reads with an empty book.
    older = Symbols.table.codec.encode(SymbolRecord())[:1] + msgspec.msgpack.encode(msgspec.structs.astuple(SymbolRecord())[:-1])
    assert Symbols.table.codec.decode(older) == SymbolRecord()


async def test_the_strategy_stage_makes_each_row_once_per_batch_and_reads_its_first_layout():
    from tickwire.schemas.topics import STRATEGY_PERFORMANCE, TRADE_OUTCOMES
    from tickwire.streams.performance import StrategyPerformance, StrategyPerformanceState, TradeSample
    from tickwire.streams.stages.statistics import StrategyStatistics, _StrategyPerformanceStateV1
    from tests.streams.test_performance import trade_row

    metrics, settings = Metrics(CollectorRegistry()), Settings()
    topic = settings.topic(TRADE_OUTCOMES.name)
    monday = datetime(2026, 3, 2, 15, tzinfo=timezone.utc)
    trades = [trade_row(i + 1, monday + timedelta(minutes=7 * i), (-1) ** i * (i + 1.0), ("WIN", "LOSS")[i % 2]) for i in range(40)]
    stage = StrategyStatistics(context(metrics), states(_Table(), StrategyStatistics.table.codec, metrics))
    out = []
    for offset, trade in enumerate(trades):
        stage.handle(SimpleNamespace(value=msgspec.json.encode(trade), message=SimpleNamespace(
            topic=topic, partition=1, offset=offset, key=b"s1")), out)
    assert out == []  # nothing closed: every row waits for the batch's end
    rows = [msgspec.json.decode(v) for t, _, v, _ in stage.finish(out) if t == settings.topic(STRATEGY_PERFORMANCE.name)]
    assert [(r["period_type"], r["total_trades"]) for r in rows] == [("DAY", 40), ("WEEK", 40), ("MONTH", 40)]
    core, state = StrategyPerformance(), StrategyPerformanceState()
    for trade in trades:
        expected = core.add(state, trade)
    assert rows == [msgspec.json.decode(msgspec.json.encode(row)) for row in expected]
    assert stage.finish([]) == []  # what a batch made due goes once

    # A state the first layout wrote (every trade kept) reads into the same totals.
    samples = {str(t.trade_id): TradeSample(str(t.trade_id), int(t.exit_time.timestamp() * 1e6), t.net_pnl, t.commission, t.outcome_type)
               for t in trades}
    groups = {f"s1\x1fv1\x1f{kind}\x1f{start}": samples for kind, start in (("DAY", "2026-03-02"), ("WEEK", "2026-03-02"), ("MONTH", "2026-03-01"))}
    table = _Table()
    table.data[b"s1"] = msgspec.msgpack.encode(_StrategyPerformanceStateV1(groups=groups, latest_day=monday.toordinal()))
    old = StrategyStatistics(context(metrics), states(table, StrategyStatistics.table.codec, metrics))
    assert old.states.get(b"s1") == state
    again = []
    old.handle(SimpleNamespace(value=msgspec.json.encode(trades[3]), message=SimpleNamespace(topic=topic, partition=1, offset=0, key=b"s1")), again)
    assert old.finish(again) == []  # its trades counted: a re-sent one changes nothing


def statistics_batch(stage: Stage, topic: str, key: bytes, records: list, rows_topic: str) -> list[dict]:
    """``records`` through a statistics stage as one batch; the rows it made on ``rows_topic``."""
    out: list = []
    for record in records:
        stage.handle(SimpleNamespace(value=msgspec.json.encode(record), message=SimpleNamespace(
            topic=topic, partition=1, offset=0, key=key)), out)
    return [msgspec.json.decode(v) for t, _, v, _ in stage.finish(out) if t == rows_topic]


async def test_a_strategys_counted_trades_leave_its_record_and_expire_with_the_late_window():
    """Twelve days of a strategy closing 300 trades a day: the record keeps only the ids not
    yet written beside it, the ids of the late window's days sit under keys of their own,
    and the rows are the core's own over every trade."""
    from tickwire.schemas.topics import STRATEGY_PERFORMANCE, TRADE_OUTCOMES
    from tickwire.streams.performance import StrategyPerformance, StrategyPerformanceState
    from tickwire.streams.stages.statistics import StrategyStatistics
    from tests.streams.test_performance import trade_row

    metrics, settings, table = Metrics(CollectorRegistry()), Settings(), _Table()
    topic = settings.topic(TRADE_OUTCOMES.name)
    stage = StrategyStatistics(context(metrics), states(table, StrategyStatistics.table.codec, metrics))
    start = datetime(2026, 3, 2, tzinfo=timezone.utc)
    trades = [trade_row(i + 1, start + timedelta(seconds=288 * i), (-1) ** i * (i % 7 + 1.0), ("WIN", "LOSS")[i % 2],
                        regimes={"1m": "ranging"}) for i in range(12 * 300)]
    core, expected, rows, sizes = StrategyPerformance(), StrategyPerformanceState(), {}, []

    def batch(chunk: list) -> list[dict]:
        return statistics_batch(stage, topic, b"s1", chunk, settings.topic(STRATEGY_PERFORMANCE.name))

    for n in range(0, len(trades), 50):
        for row in batch(trades[n:n + 50]):
            rows[row["period_type"], row["period_start"]] = row
        await stage.states.write(5)
        sizes.append(len(table.data[b"s1"]))
    for trade in trades:
        core.add(expected, trade)
    mine = {(r.period_type, r.period_start.isoformat()): r for r in core.rows(expected, {("period", k): "s1" for k in expected.groups})}
    assert {key: rows[key] for key in mine} == {key: msgspec.json.decode(msgspec.json.encode(r)) for key, r in mine.items()}
    assert len(stage.states.get(b"s1").counted) <= 100  # a batch's ids, written beside it a batch later
    assert max(sizes[len(sizes) // 2:]) < 1.5 * min(sizes[len(sizes) // 2:])  # days 6 to 12: no growth
    kept = {key.split(b"\x00counted/")[1].decode() for key in table.data if b"\x00counted/" in key}
    last_day = trades[-1].exit_time.toordinal()
    window = {str(t.trade_id) for t in trades if t.exit_time.toordinal() > last_day - 8}
    assert kept | set(stage.states.get(b"s1").counted) == window
    assert batch([trades[-1000]]) == [] and stage.finish([]) == []  # counted already: a re-sent one changes nothing


async def test_a_models_day_is_kept_as_sums_and_its_counted_ids_beside_its_record():
    """Four days of a model validating 2,000 predictions a day: the record written with
    each batch holds each day's sums, not its predictions; the ids of the days within
    the retention sit under keys of their own; each day's row is the figures over all of
    its predictions; and a state the first layout wrote (every prediction) reads into the
    same sums."""
    from tickwire.schemas.topics import MODEL_PERFORMANCE, OUTCOMES
    from tickwire.streams.performance import PredictionSample
    from tickwire.streams.stages.statistics import ModelStatistics, _ModelPerformanceStateV1
    from tests.streams.test_performance import outcome, reference_classification

    metrics, settings, table = Metrics(CollectorRegistry()), Settings(), _Table()
    topic = settings.topic(OUTCOMES.name)
    stage = ModelStatistics(context(metrics), states(table, ModelStatistics.table.codec, metrics))
    rng, start = random.Random(4), datetime(2026, 3, 2, tzinfo=timezone.utc)
    outcomes = [outcome(i + 1, start + timedelta(seconds=43.2 * i), rng.choice(("LONG", "SHORT")), rng.choice(("LONG", "SHORT")),
                        round(rng.random(), 2), "ranging") for i in range(4 * 2000)]
    rows, sizes = {}, []

    def batch(chunk: list) -> list[dict]:
        return statistics_batch(stage, topic, b"v1", chunk, settings.topic(MODEL_PERFORMANCE.name))

    for n in range(0, len(outcomes), 100):
        for row in batch(outcomes[n:n + 100]):
            rows[row["evaluation_date"]] = row
        await stage.states.write(5)
        sizes.append(len(table.data[b"v1"]))
    by_day: dict[str, list] = {}
    for item in outcomes:
        by_day.setdefault(item.predicted_at.date().isoformat(), []).append(
            PredictionSample(item.predicted_direction, item.actual_direction, item.confidence_score, item.regime))
    for day, samples in by_day.items():
        expected = {name: pytest.approx(value) for name, value in reference_classification(samples).items() if value is not None}
        assert rows[day]["testing_samples"] == len(samples) and {k: rows[day][k] for k in expected} == expected
    assert max(sizes) < 20_000  # three days of sums and a batch's ids; three days of predictions were about 400 KB
    state = stage.states.get(b"v1")
    kept = {key.split(b"\x00counted/")[1].decode() for key in table.data if b"\x00counted/" in key}
    assert kept | set(state.counted) == {str(o.prediction_id) for o in outcomes if o.predicted_at.date() >= date(2026, 3, 3)}
    assert batch([outcomes[-3000]]) == []  # counted already: a re-sent one changes nothing

    old = _ModelPerformanceStateV1(groups={f"v1\x1fdirection\x1f{day}": {f"{day}/{i}": s for i, s in enumerate(samples)}
                                           for day, samples in by_day.items()}, latest_day=state.latest_day)
    upgraded = ModelStatistics.table.codec.decode(msgspec.msgpack.encode(old))
    assert all(upgraded.groups[key] == totals for key, totals in state.groups.items()) and len(upgraded.counted) == 8000


def test_a_worker_runs_the_stages_it_is_given_and_refuses_unknown_ones():
    from tickwire.schemas.settings import SettingsError
    from tickwire.streams.stages import STAGES, selected
    from tickwire.streams.worker.app import changelog_topics

    assert selected(()) == STAGES
    assert [stage.name for stage in selected(("portfolios", "symbols"))] == ["symbols", "portfolios"]  # the registry's order
    with pytest.raises(SettingsError, match="no stage 'nope'; the stages are symbols, candles"):
        selected(("symbols", "nope"))
    own = Settings(worker_stages=" correlations ", processor_group="tickwire-correlations")
    assert [name for name, _ in changelog_topics(own)] == ["tickwire-correlations-correlation-state-changelog"]
