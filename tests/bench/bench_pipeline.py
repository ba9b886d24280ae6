"""Worker throughput on the real broker: the faust worker against plain aiokafka loops
and against the same core in a Quix Streams application.

All read the same pre-loaded bars from md.bars.v1. Baselines: a consume-and-produce
passthrough of the same messages (the client's own limit); faust's own ceiling, an
agent that takes the same messages in batches and does nothing with them
(``_faust_ceiling.py``); the per-symbol core (decode, validate, resample,
indicators, regime, encode, produce) in a getmany loop, which skips faust's stream
machinery, the changelogs and the other stages; and the same per-symbol core in a
Quix Streams application (``_quix_core.py``, the ``bench`` extra), the peer a user
would pick: each symbol's state in Quix's RocksDB store with its changelog,
exactly-once, outputs produced to a topic. Prints bars/s for each, the worker's ratio
to each, and the Quix app's ratio to the passthrough (medians). Without quixstreams
installed the Quix baseline is skipped, with a note on stderr.

Scaling out: two workers in one consumer group beside one, the way Tickwire reaches more
bars/s than one process gives (the ratio is bounded by the machine's cores, which the
broker shares; a record consumed twice around the group's first rebalance counts twice).

    python tests/bench/bench_pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from tickwire.schemas.codec import Codec  # noqa: E402
from tickwire.schemas.market import Bar  # noqa: E402
from tickwire.schemas.topics import BARS, CONDITIONS  # noqa: E402
from tickwire.streams.symbol import SymbolProcessor, SymbolState  # noqa: E402
from tickwire.streams.topics import ensure_topics  # noqa: E402
from tickwire.streams.simulator import MarketSimulator, default_symbols  # noqa: E402
from tests.bench._services import ROOT, emit, local_settings  # noqa: E402


async def preload(settings, count: int, symbols: int) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**settings.kafka_options(), linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    encode = msgspec.json.Encoder().encode
    topic = settings.topic(BARS.name)
    for bar in MarketSimulator(default_symbols(symbols), seed=1).bars(count // symbols):
        await producer.send(topic, key=bar.symbol.encode(), value=encode(bar))
    await producer.flush()
    await producer.stop()


async def getmany_loop(settings, count: int, group: str, outputs) -> float:
    """Consume ``count`` bars in getmany batches, produce ``outputs(record)`` for each; bars/s."""
    consumer = AIOKafkaConsumer(
        settings.topic(BARS.name), **settings.kafka_options(), group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**settings.kafka_options(), linger_ms=5)
    await consumer.start()
    await producer.start()
    out = settings.topic(CONDITIONS.name) + "." + group
    done = 0
    started = time.perf_counter()
    while done < count:
        for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
            for record in records:
                for value in outputs(record):
                    await producer.send(out, key=record.key, value=value)
            done += len(records)
        await consumer.commit()
    await producer.flush()
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await producer.stop()
    return count / elapsed


async def passthrough(settings, count: int) -> float:
    """The same bytes out as in, nothing else: what the Kafka client can do."""
    return await getmany_loop(settings, count, "passthrough", lambda record: (record.value,))


async def aiokafka_baseline(settings, count: int) -> float:
    """The per-symbol core in a getmany loop, without faust's machinery or the other stages."""
    codec, processor, states = Codec(Bar, max_future_skew_s=1e9), SymbolProcessor(), {}

    def outputs(record):
        bar = codec.decode(record.value)
        produced, _ = processor.process(states.setdefault(bar.symbol, SymbolState()), bar)
        return [value for _, value in produced]

    return await getmany_loop(settings, count, "core", outputs)


def faust_ceiling(settings, count: int) -> float:
    """Messages/s of a faust agent that does nothing with them (its own process, run in a
    temporary directory: faust keeps an '<app id>-data' directory in its working one)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rate"
        subprocess.run(
            [sys.executable, str(Path(__file__).with_name("_faust_ceiling.py")), settings.kafka_bootstrap,
             settings.topic(BARS.name), str(count), str(result)],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=True,
        )
        return float(result.read_text())


def quix_core(settings, count: int) -> float:
    """Bars/s of the per-symbol core in a Quix Streams application (its own process), from
    its first bar: RocksDB state per symbol with changelog, exactly-once."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rate"
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("_quix_core.py")), settings.kafka_bootstrap,
             settings.topic(BARS.name), settings.topic(CONDITIONS.name) + ".quix", str(CONDITIONS.partitions),
             str(count), str(result)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600,
        )
        if proc.returncode:
            raise SystemExit(f"the Quix app failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return float(result.read_text())


def faust_worker(settings, count: int, replicas: int = 1, **overrides: str) -> float:
    """Bars/s of ``tickwire worker`` (its own consumer group each time), from its first bar."""
    return run_worker(settings, count, replicas, **overrides)[0]


def run_worker(settings, count: int, replicas: int = 1, **overrides: str) -> tuple[float, str]:
    """(bars/s of ``replicas`` ``tickwire worker`` processes in one group, from the first bar
    any of them consumes to the ``count``-th all of them have, the first one's /metrics then)."""
    group = f"bench-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, TICKWIRE_TOPIC_PREFIX=settings.topic_prefix, TICKWIRE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
               TICKWIRE_LOG_LEVEL="WARNING", TICKWIRE_MAX_FUTURE_SKEW_S="1e9", TICKWIRE_PROCESSOR_GROUP=group, **overrides)
    ports = [19400 + (os.getpid() + n) % 500 for n in range(replicas)]
    procs = [subprocess.Popen([sys.executable, "-m", "tickwire.streams.cli", "worker", "--metrics-port", str(port)], env=env,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    metric = f'tickwire_messages_consumed_total{{topic="{settings.topic(BARS.name)}"}}'
    first_at, texts = None, [""] * replicas
    try:
        while True:
            time.sleep(0.5)  # a scrape costs the worker CPU: poll gently
            for n, port in enumerate(ports):
                try:
                    texts[n] = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                except OSError:
                    pass
            consumed = sum(next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(metric)), 0.0)
                           for text in texts)
            if consumed and first_at is None:
                first_at, first = time.perf_counter(), consumed
            if consumed >= count:
                return (consumed - first) / (time.perf_counter() - first_at), texts[0]
            if any(proc.poll() is not None for proc in procs):
                raise SystemExit("a worker exited early")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k bars, one repeat")
    args = parser.parse_args()
    count, repeats = (20_000, 1) if args.quick else (200_000, 3)
    with_quix = importlib.util.find_spec("quixstreams") is not None
    if not with_quix:
        print("quixstreams is not installed (pip install -e '.[bench]'): skipping the Quix Streams baseline",
              file=sys.stderr)
    faust_rates, base_rates, pass_rates, ceiling_rates, lean_rates, quix_rates, pair_rates = [], [], [], [], [], [], []
    for _ in range(repeats):
        settings = local_settings(topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
        asyncio.run(preload(settings, count, 50))
        pass_rates.append(asyncio.run(passthrough(settings, count)))
        base_rates.append(asyncio.run(aiokafka_baseline(settings, count)))
        ceiling_rates.append(faust_ceiling(settings, count))
        if with_quix:
            quix_rates.append(quix_core(settings, count))
        faust_rates.append(faust_worker(settings, count))
        lean_rates.append(faust_worker(settings, count, TICKWIRE_CORRELATION_TIMEFRAMES=""))
        pair_rates.append(faust_worker(settings, count, replicas=2))
    worker = statistics.median(faust_rates)
    emit("pipeline", "worker_throughput", worker, "bars/s", "aiokafka consume-and-produce passthrough", statistics.median(pass_rates))
    emit("pipeline", "worker_throughput", worker, "bars/s", "faust agent doing nothing (faust's own ceiling)", statistics.median(ceiling_rates))
    emit("pipeline", "worker_throughput", worker, "bars/s", "aiokafka getmany loop, per-symbol core only", statistics.median(base_rates))
    if quix_rates:
        emit("pipeline", "worker_throughput", worker, "bars/s", "Quix Streams 3.28 app, per-symbol core, RocksDB state, exactly-once",
             statistics.median(quix_rates))
    emit("pipeline", "worker_throughput_without_correlations", statistics.median(lean_rates), "bars/s",
         "faust agent doing nothing (faust's own ceiling)", statistics.median(ceiling_rates))
    emit("pipeline", "worker_throughput_two_replicas", statistics.median(pair_rates), "bars/s", "one worker", worker)
    emit("pipeline", "faust_ceiling", statistics.median(ceiling_rates), "msgs/s", "aiokafka consume-and-produce passthrough", statistics.median(pass_rates))
    if quix_rates:
        emit("pipeline", "quix_core", statistics.median(quix_rates), "bars/s", "aiokafka consume-and-produce passthrough",
             statistics.median(pass_rates))


if __name__ == "__main__":
    main()
