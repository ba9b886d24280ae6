"""The per-symbol core in a Quix Streams application: the peer a user would pick to run
``SymbolProcessor`` without faust. Run by bench_pipeline.py in a process of its own:

    python tests/bench/_quix_core.py BOOTSTRAP TOPIC OUT_TOPIC PARTITIONS COUNT RESULT_FILE

Stateful, as Quix Streams is meant to be used: each symbol's ``SymbolState`` lives in
Quix's RocksDB state store under the message key (msgpack bytes, read and written on
every bar, since the store keeps serialised values, not objects), with its changelog
topic; ``processing_guarantee="exactly-once"``; everything else at Quix's defaults
(confluent-kafka client, 5 s commit interval). The outputs go to OUT_TOPIC, created with
PARTITIONS partitions. It writes the bars/s from the first bar to the COUNT-th one to
RESULT_FILE and stops the application.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec  # noqa: E402
from quixstreams import Application  # noqa: E402
from quixstreams.models import TopicConfig  # noqa: E402

from tickwire.schemas.codec import Codec  # noqa: E402
from tickwire.schemas.market import Bar  # noqa: E402
from tickwire.streams.symbol import SymbolProcessor, SymbolState  # noqa: E402


def main() -> None:
    bootstrap, topic_name, out_name = sys.argv[1], sys.argv[2], sys.argv[3]
    partitions, count, result = int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6])
    codec, processor = Codec(Bar, max_future_skew_s=1e9), SymbolProcessor()
    encode, decode = msgspec.msgpack.Encoder().encode, msgspec.msgpack.Decoder(SymbolState).decode

    def core(value: bytes, state) -> list[bytes]:
        bar = codec.decode(value)
        stored = state.get_bytes("symbol")
        symbol_state = decode(stored) if stored is not None else SymbolState()
        produced, _ = processor.process(symbol_state, bar)
        state.set_bytes("symbol", encode(symbol_state))
        return [output for _, output in produced]

    seen, started = [0], []

    def processed(topic: str, partition: int, offset: int) -> None:
        if not started:
            started.append(time.perf_counter())
        seen[0] += 1
        if seen[0] == count:
            result.write_text(str(count / (time.perf_counter() - started[0])))
            app.stop()

    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=bootstrap, consumer_group=f"quix-core-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest", processing_guarantee="exactly-once", use_changelog_topics=True,
            state_dir=state_dir, loglevel="WARNING", on_message_processed=processed,
        )
        source = app.topic(topic_name, key_deserializer="bytes", value_deserializer="bytes")
        out = app.topic(out_name, key_serializer="bytes", value_serializer="bytes",
                        config=TopicConfig(num_partitions=partitions, replication_factor=1))
        sdf = app.dataframe(source)
        sdf = sdf.apply(core, stateful=True, expand=True)
        sdf.to_topic(out)
        app.run()
    if seen[0] < count:
        raise SystemExit(f"the Quix app stopped after {seen[0]} of {count} bars")


if __name__ == "__main__":
    main()
