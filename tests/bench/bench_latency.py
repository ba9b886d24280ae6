"""End-to-end latency of the sink: a row's publish to its commit in ``market_conditions``.

    python tests/bench/bench_latency.py [--quick] [--repeats N] [--warmup S] [--seconds N] [--rate N] [--flush-interval S]

Publishes ``md.conditions.v1`` rows (valid ``Condition`` values, 100 symbols) into a fresh
topic prefix at a steady 10,000 rows/s for 60 s (``--quick``: 10 s) while a
``tickwire sink --tables market_conditions`` child process writes them into a fresh
database with the default flush settings. Prints p50 and p99 (ms) against the transport's
own latency measured in the same run on the same rows.

How the two ends are timed (all clocks are this machine's wall clock, ``time.time()``):

* Publish: the moment this process hands the row to the producer (taken just before
  ``send_batch``; a tick's rows go out as one batch per partition, in the partition the
  default partitioner picks for their key). Rows are sent on an absolute schedule (a
  tick every 10 ms) so a slow tick does not shift the ones after it; ``late_ticks``
  (stderr) counts ticks that started more than a tick late.
* Commit: when the row's transaction became visible to other sessions. ``created_at``
  (``DEFAULT NOW()``) is not used: it is the transaction's *start*, before the COPY and
  the merge, so it would leave the write itself out. Polling the table for new rows would
  load the database under test. Instead a separate process asks PostgreSQL for
  ``pg_current_snapshot()`` about every 5 ms (no table access)
  and logs when each snapshot was first seen; after the run, each row's ``xmin`` (its
  inserting transaction) is looked up in that log: the row counts as committed at the
  first poll whose snapshot shows that transaction finished (``xid < xmax`` and not in
  ``xip``), stamped when that poll's answer arrived. That is an upper bound, late by at
  most one poll interval (reported as ``poll_interval_ms`` on stderr), never early.
* Baseline: a plain aiokafka consumer in its own process (assigned every partition, no
  group, default fetch settings) stamps each record when ``getmany`` hands it over: the
  transport's own publish-to-receive latency for the same rows. It decodes only a row's
  key: the harness shares the machine's two cores with what it measures.

Each run first sends the same rate for ``--warmup`` seconds (the minutes just before
the measured rows, so into the same partitions of the table; not timed) and waits for
the sink to write them: a broker just started compiles its hot paths for the first
minute or so of load, and the sink joins its group. The measured phase is run
``--repeats`` times (3; ``--quick`` 1) on fresh topics and databases, and the medians
of the runs' p50 and p99 are printed; stderr has each run's figures and the seconds in
which some row missed 250 ms (``seconds_over_goal``). The sink ends a batch as soon as
no write is in flight, so ``flush_interval_s`` (0.5 s by default) only
bounds how long a batch keeps growing behind a slow write.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg  # noqa: E402
import msgspec  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from tickwire.schemas.market import Condition  # noqa: E402
from tickwire.schemas.settings import Settings  # noqa: E402
from tickwire.schemas.topics import CONDITIONS  # noqa: E402
from tickwire.streams.topics import ensure_topics  # noqa: E402
from tests.bench._services import ROOT, emit, local_env, local_settings  # noqa: E402

T0 = datetime(2026, 5, 4, tzinfo=timezone.utc)
SYMBOLS = 100
GOAL_P99_MS = 250.0
# Between two snapshot polls: each poll costs a database backend and this process CPU
# on the two cores the sink runs on; the commit times are late by up to one interval.
POLL_PAUSE_S = 0.004
REGIMES = ("trending_up", "trending_down", "ranging", "volatile")


def condition(i: int, *, base: datetime = T0) -> Condition:
    """Row ``i``: symbol ``i % 100``, one minute apart per symbol; every value in range."""
    p = 100.0 + (i % 13) * 0.25
    return Condition(
        symbol=f"S{i % SYMBOLS:03d}", timeframe="1m", timestamp=base + timedelta(minutes=i // SYMBOLS),
        open=p, high=p + 1.5, low=p - 0.75, close=p + 0.5, volume=1000 + i % 5000, vwap=p + 0.25,
        atr_14=1.25, rsi_14=55.5, ema_20=p + 0.1, ema_50=p - 0.1, bb_upper=p + 2.0, bb_middle=p, bb_lower=p - 2.0,
        macd_line=0.1, macd_signal=0.05, macd_hist=0.05, adx_14=27.5, plus_di_14=22.0, minus_di_14=18.0,
        volatility_20d=0.0123, vix=17.5, detected_regime=REGIMES[i % 4], regime_confidence=0.75,
    )


class RowKey(msgspec.Struct):
    """What the baseline consumer reads of a row: its key (the other fields are skipped)."""

    symbol: str
    timestamp: datetime


def row_id(symbol: str, ts: datetime) -> str:
    return f"{symbol}|{ts.astimezone(timezone.utc).isoformat()}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]  # nearest rank


# --- child roles -----------------------------------------------------------------------


async def role_consumer(settings: Settings, out: Path, expected: int) -> None:
    """Plain aiokafka consumer: every partition from its end, receive time per measured row."""
    topic = settings.topic(CONDITIONS.name)
    consumer = AIOKafkaConsumer(**settings.kafka_options(), enable_auto_commit=False)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(CONDITIONS.partitions)]  # created so by ensure_topics
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)
    Path(str(out) + ".ready").touch()
    decode = msgspec.json.Decoder(RowKey).decode
    received: dict[str, float] = {}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while len(received) < expected and not stop.is_set():
        polled = await consumer.getmany(timeout_ms=200)
        now = time.time()
        for records in polled.values():
            for r in records:
                c = decode(r.value)
                if c.timestamp >= T0:
                    received.setdefault(row_id(c.symbol, c.timestamp), now)
    await consumer.stop()
    await stop.wait()  # writing 600,000 entries takes a core for a second: not while the sink is timed
    out.write_text(json.dumps(received))


async def role_poller(settings: Settings, out: Path) -> None:
    """Log (arrival time, snapshot) each time ``pg_current_snapshot()`` changes."""
    conn = await asyncpg.connect(**settings.pg_options())
    stmt = await conn.prepare("SELECT pg_current_snapshot()::text")
    log: list[tuple[float, str]] = []
    polls, started, last = 0, time.time(), None
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    Path(str(out) + ".ready").touch()
    while not stop.is_set():
        snap = await stmt.fetchval()
        now = time.time()
        polls += 1
        if snap != last:
            log.append((now, snap))
            last = snap
        await asyncio.sleep(POLL_PAUSE_S)
    await conn.close()
    out.write_text(json.dumps({"log": log, "polls": polls, "seconds": time.time() - started}))


async def send_steady(producer: AIOKafkaProducer, topic: str, rows: list[Condition], rate: int) -> tuple[dict[str, float], float, int]:
    """Send ``rows`` at ``rate`` per second; return each row's publish time, the seconds it
    took and the ticks that started late.

    Rows are pre-encoded and pre-partitioned (the default partitioner's choice for their
    key) and sent on an absolute 10 ms tick schedule as one producer batch per partition
    and tick: a send() per row costs this process about a core at 10,000 rows/s, and a
    producer that falls behind would not keep the rate."""
    encode = msgspec.json.Encoder().encode
    partitions = list(range(CONDITIONS.partitions))
    partitioner = DefaultPartitioner()
    partition_of = {key: partitioner(key, partitions, partitions) for key in {c.symbol.encode() for c in rows}}
    payloads = [(c.symbol.encode(), encode(c), row_id(c.symbol, c.timestamp)) for c in rows]
    gc.freeze()  # the payloads stay till the end: collections would scan them again and again
    sent: dict[str, float] = {}
    tick_s, per_tick = 0.01, max(1, round(rate * 0.01))
    started = time.monotonic()
    late_ticks = 0
    deliveries = []
    for n, i in enumerate(range(0, len(payloads), per_tick)):
        due = started + n * tick_s
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -tick_s:
            late_ticks += 1
        batches: dict[int, list] = {}
        for key, value, rid in payloads[i:i + per_tick]:
            batches.setdefault(partition_of[key], []).append((key, value, rid))
        for partition, items in batches.items():
            while items:  # as many batches as the rows need (a batch holds 16 KB)
                batch, taken = producer.create_batch(), 0
                while taken < len(items) and batch.append(key=items[taken][0], value=items[taken][1], timestamp=None):
                    taken += 1
                now = time.time()  # publish time: the batch is handed to the producer now
                for _, _, rid in items[:taken]:
                    sent[rid] = now
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                items = items[taken:]
    elapsed = time.monotonic() - started
    await asyncio.gather(*deliveries)
    return sent, elapsed, late_ticks


# --- the run ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_child(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


async def wait_file(path: Path, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args} not ready in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.05)


async def wait_rows(
    conn: asyncpg.Connection, expected: int, sink: subprocess.Popen, sink_log: Path, what: str, *, poll_s: float
) -> None:
    """Until ``market_conditions`` holds ``expected`` rows; fails if the sink exits or 120 s pass."""
    deadline = time.monotonic() + 120
    while await conn.fetchval("SELECT count(*) FROM market_conditions") < expected:
        if sink.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sink did not write {what}:\n{sink_log.read_text()[-3000:]}")
        await asyncio.sleep(poll_s)


def stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def commit_times(poll_log: list[tuple[float, str]], xids: set[int]) -> dict[int, float]:
    """Per 64-bit xid: the arrival time of the first logged snapshot showing it finished."""
    pending, found = sorted(xids), {}
    for seen, snap in poll_log:
        xmin_s, xmax_s, xip_s = snap.split(":")
        xmax, xip = int(xmax_s), {int(x) for x in xip_s.split(",") if x}
        still = []
        for xid in pending:
            if xid < xmax and xid not in xip:
                found[xid] = seen
            else:
                still.append(xid)
        pending = still
        if not pending:
            break
    return found


async def run(
    settings: Settings, *, rate: int, seconds: float, warmup_s: float, flush_interval_s: float | None, work: Path
) -> dict:
    """One measured run; returns the latencies (ms) of the sink and of the baseline."""
    from tests.bench.bench_sink import drop_database, fresh_database

    db, name = await fresh_database(settings)
    await ensure_topics(db)
    topic = db.topic(CONDITIONS.name)
    env = local_env()
    env.update(TICKWIRE_TOPIC_PREFIX=db.topic_prefix, TICKWIRE_PG_DSN=db.pg_dsn, TICKWIRE_LOG_LEVEL="WARNING")
    env.pop("TICKWIRE_FLUSH_INTERVAL_S", None)
    env.pop("TICKWIRE_MAX_BATCH_ROWS", None)
    if flush_interval_s is not None:
        env["TICKWIRE_FLUSH_INTERVAL_S"] = str(flush_interval_s)
    tag = f"{name}-{flush_interval_s}"
    me = [sys.executable, str(Path(__file__).resolve())]
    role_env = dict(env, BENCH_LATENCY_PREFIX=db.topic_prefix, BENCH_LATENCY_DSN=db.pg_dsn)
    count = int(rate * seconds)
    children = []
    try:
        sink_log = work / f"sink-{tag}.log"
        sink = start_child([sys.executable, "-m", "tickwire.streams.cli", "sink", "--tables", "market_conditions",
                            "--metrics-port", str(free_port())], env, sink_log)
        children.append(sink)
        cons_out, poll_out = work / f"consumer-{tag}.json", work / f"poller-{tag}.json"
        cons = start_child(me + ["--role", "consumer", "--out", str(cons_out), "--expected", str(count)],
                           role_env, work / f"consumer-{tag}.log")
        children.append(cons)
        poller = start_child(me + ["--role", "poller", "--out", str(poll_out)], role_env, work / f"poller-{tag}.log")
        children.append(poller)
        await wait_file(Path(str(cons_out) + ".ready"), cons, work / f"consumer-{tag}.log")
        await wait_file(Path(str(poll_out) + ".ready"), poller, work / f"poller-{tag}.log")

        producer = AIOKafkaProducer(**db.kafka_options(), acks="all")
        await producer.start()
        conn = await asyncpg.connect(**db.pg_options())
        # Warm-up: the same rate, the minutes before T0 (the baseline consumer ignores them),
        # until the sink has joined its group and written them: a broker just started runs its JIT
        # compiler for the first minute or so of load, which is not the sink's latency.
        warm_count = max(SYMBOLS, int(rate * warmup_s))
        warm_base = T0 - timedelta(minutes=-(-warm_count // SYMBOLS))
        await send_steady(producer, topic, [condition(i, base=warm_base) for i in range(warm_count)], rate)
        await wait_rows(conn, warm_count, sink, sink_log, "the warm-up rows", poll_s=0.1)

        sent, send_elapsed, late_ticks = await send_steady(producer, topic, [condition(i) for i in range(count)], rate)
        await producer.stop()

        # Counting rows is a scan of the table: give the sink a second for the last rows first,
        # so that the scans do not compete with the writes being timed.
        await asyncio.sleep(1.0)
        await wait_rows(conn, warm_count + count, sink, sink_log, "every row", poll_s=0.2)
        await asyncio.sleep(0.2)  # a few more snapshot polls past the last commit
        stop_child(poller)
        stop_child(cons)
        xmins = await conn.fetch(
            'SELECT symbol, "timestamp", xmin::text::bigint AS xmin FROM market_conditions WHERE "timestamp" >= $1', T0
        )
        xmax_now = int((await conn.fetchval("SELECT pg_current_snapshot()::text")).split(":")[1])
        await conn.close()
    finally:
        for proc in children:
            stop_child(proc)
    await drop_database(settings, name)

    # 32-bit xmin -> 64-bit xid (the epoch of the current xmax; one wrap at most).
    epoch, low = xmax_now >> 32, xmax_now & 0xFFFFFFFF
    row_xid = {row_id(r["symbol"], r["timestamp"]): ((epoch - (r["xmin"] > low)) << 32) | r["xmin"] for r in xmins}
    poll = json.loads(poll_out.read_text())
    committed_at = commit_times([tuple(e) for e in poll["log"]], set(row_xid.values()))
    received = json.loads(cons_out.read_text())
    sink_ms = [(committed_at[row_xid[rid]] - t) * 1000 for rid, t in sent.items() if row_xid.get(rid) in committed_at]
    base_ms = [(received[rid] - t) * 1000 for rid, t in sent.items() if rid in received]
    # Where the tail comes from: the seconds of the run in which some row missed the goal.
    first_sent = min(sent.values())
    worst: dict[int, float] = {}
    for rid, t in sent.items():
        if row_xid.get(rid) in committed_at:
            second = int(t - first_sent)
            worst[second] = max(worst.get(second, 0.0), (committed_at[row_xid[rid]] - t) * 1000)
    info = {
        "flush_interval_s": flush_interval_s, "rows": count, "send_seconds": round(send_elapsed, 2), "late_ticks": late_ticks,
        "rows_timed_sink": len(sink_ms), "rows_timed_baseline": len(base_ms), "transactions": len(set(row_xid.values())),
        "poll_interval_ms": round(poll["seconds"] / max(1, poll["polls"]) * 1000, 2),
        "p50_ms": round(percentile(sink_ms, 50), 1), "p99_ms": round(percentile(sink_ms, 99), 1),
        "seconds_over_goal": sorted(s for s, ms in worst.items() if ms > GOAL_P99_MS),
    }
    if len(sink_ms) < count or len(base_ms) < count:
        raise RuntimeError(f"not every row was timed: {info}")
    print(json.dumps(info), file=sys.stderr, flush=True)
    return {"sink": sink_ms, "baseline": base_ms}


def report(results: list[dict], flush_label: str) -> None:
    """p50 and p99 of each run; the medians over the runs are printed."""
    for q in (50, 99):
        emit(
            "latency", f"market_conditions_publish_to_commit_p{q}_{flush_label}",
            statistics.median(percentile(r["sink"], q) for r in results), "ms",
            f"plain aiokafka consumer, publish to receive, p{q}",
            statistics.median(percentile(r["baseline"], q) for r in results),
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    parser.add_argument("--rate", type=int, default=10_000, help="rows per second (default 10,000)")
    parser.add_argument("--seconds", type=float, help="steady phase length (default 60, --quick 10)")
    parser.add_argument("--warmup", type=float, help="seconds at the same rate before the measured phase (default 20, --quick 3)")
    parser.add_argument("--repeats", type=int, help="measured runs, medians printed (default 3, --quick 1)")
    parser.add_argument("--flush-interval", type=float, help="the sink's flush_interval_s (default: its own default)")
    parser.add_argument("--role", choices=("consumer", "poller"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:
        settings = Settings.from_env(
            local_env(), topic_prefix=os.environ["BENCH_LATENCY_PREFIX"], pg_dsn=os.environ["BENCH_LATENCY_DSN"]
        )
        if args.role == "consumer":
            await role_consumer(settings, args.out, args.expected)
        else:
            await role_poller(settings, args.out)
        return

    seconds = args.seconds or (10.0 if args.quick else 60.0)
    warmup_s = args.warmup if args.warmup is not None else (3.0 if args.quick else 20.0)
    repeats = args.repeats or (1 if args.quick else 3)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for _ in range(repeats):
            settings = local_settings(topic_prefix=f"blat{uuid.uuid4().hex[:8]}.")
            results.append(await run(
                settings, rate=args.rate, seconds=seconds, warmup_s=warmup_s, flush_interval_s=args.flush_interval, work=Path(tmp)
            ))
    report(results, "default_flush" if args.flush_interval is None else f"flush_{args.flush_interval:g}s")


if __name__ == "__main__":
    asyncio.run(main())
