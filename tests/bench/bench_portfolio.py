"""Portfolio update latency on the real broker: a fill or a bar published, to the portfolio
update the worker publishes for it (seed 003's goal: under 50 ms).

50 portfolios hold 500 symbols (10 each), whose prices walk at random with a shared market
factor (pairs correlate about 0.3). A warm-up fill opens each position; then, for
``--seconds``, 2,000 bars/s (each symbol's bars a minute apart in event time) and 1,000
fills/s (each held pair in turn, opening and closing small trades) are published at a
steady rate, while a consumer reads ``exec.positions.v1`` and ``exec.portfolios.v1``. A
portfolio's update of version k holds its first k position rows (one partition holds a
portfolio's rows, in order, the consumer reads both topics from their beginning, and a
batch publishes a portfolio's last update only), and a position row names its cause (a
fill's or a bar's time), so each cause is matched to the first update that holds it. Latency: the update's broker timestamp (set by the worker's
producer) minus the cause's send time; the warm-up is not counted.

Baseline, the same run: the transport alone, the send of each bar to its receipt by a
plain aiokafka consumer of ``md.bars.v1`` (one hop; the worker's path is two).

To the committed row: a sink writes ``portfolio_snapshots`` (a fresh migrated database);
its ``tickwire_publish_latency_seconds`` histogram (a batch's oldest record, from the
worker's publish to the commit) gives that hop's p99 as a bucket bound, and the figure
printed is the update's p99 plus that bound: an upper bound.

Four deployments are measured: every stage in one worker (the default); the correlations
apart, in a worker of a processor group of its own (``TICKWIRE_WORKER_STAGES``: their step
over 500 symbols holds a worker's event loop); the correlations off; and the correlations
off with the portfolios apart (they read back a position row for every bar and fill).

    python tests/bench/bench_portfolio.py [--quick] [--seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from tickwire.schemas.execution import PortfolioRow, PositionRow  # noqa: E402
from tickwire.schemas.market import Bar  # noqa: E402
from tickwire.schemas.signals import Fill  # noqa: E402
from tickwire.schemas.topics import BARS, FILLS, PORTFOLIOS, POSITIONS  # noqa: E402
from tickwire.streams.simulator import default_symbols  # noqa: E402
from tickwire.streams.topics import ensure_topics  # noqa: E402
from tests.bench._services import ROOT, emit, local_env, local_settings  # noqa: E402
from tests.bench.bench_sink import drop_database, fresh_database  # noqa: E402

PORTFOLIO_COUNT, SYMBOL_COUNT, TICK_S = 50, 500, 0.01
# label -> each worker's settings: every stage in one worker; the correlations apart, in a
# worker of a group of its own (their step over 500 symbols holds its event loop); off; or off
# with the portfolios apart, in a group of their own.
_EXECUTION = "symbols,candles,model_statistics,strategy_statistics,portfolios"
VARIANTS = {
    "every_stage": [{}],
    "correlations_apart": [{"TICKWIRE_WORKER_STAGES": _EXECUTION}, {"TICKWIRE_WORKER_STAGES": "correlations", "TICKWIRE_PROCESSOR_GROUP": "{group}-correlations"}],
    "execution_only": [{"TICKWIRE_CORRELATION_TIMEFRAMES": ""}],
    "portfolios_apart": [
        {"TICKWIRE_CORRELATION_TIMEFRAMES": "", "TICKWIRE_WORKER_STAGES": "symbols,candles,model_statistics,strategy_statistics"},
        {"TICKWIRE_CORRELATION_TIMEFRAMES": "", "TICKWIRE_WORKER_STAGES": "portfolios", "TICKWIRE_PROCESSOR_GROUP": "{group}-portfolios"},
    ],
}
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
_encode = msgspec.json.Encoder().encode


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Feed:
    """Bars and fills of the held pairs, with each message's send time by its cause."""

    def __init__(self) -> None:
        self.symbols = default_symbols(SYMBOL_COUNT)
        self.owner = {s: f"pf{i % PORTFOLIO_COUNT:02d}" for i, s in enumerate(self.symbols)}
        self.clock = {s: START for s in self.symbols}  # each symbol's event time: its last bar's close
        self.open_trade: dict[str, uuid.UUID | None] = dict.fromkeys(self.symbols)
        self.sent: dict[tuple[str, str, datetime], float] = {}  # (kind, symbol, event time) -> send time
        self.bar_no = self.fill_no = 0
        self.random, self.market = random.Random(3), 0.0
        self.price = dict.fromkeys(self.symbols, 100.0)
        self.steady_from = float("inf")  # send time of the first message measured

    def bar(self) -> Bar:
        """The symbol's next minute: a random walk with a market factor shared by every symbol's
        same minute, so pairs correlate as stocks do (about 0.3), not all at once."""
        symbol = self.symbols[self.bar_no % SYMBOL_COUNT]
        if self.bar_no % SYMBOL_COUNT == 0:
            self.market = self.random.gauss(0.0, 0.001)
        self.bar_no += 1
        ts = self.clock[symbol]
        self.clock[symbol] = ts + timedelta(minutes=1)
        before = self.price[symbol]
        close = self.price[symbol] = before * math.exp(self.market + self.random.gauss(0.0, 0.0015))
        return Bar(symbol=symbol, ts=ts, open=before, high=max(before, close) * 1.0005, low=min(before, close) * 0.9995, close=close,
                   volume=1000)

    def fill(self, symbol: str | None = None, quantity: int = 10) -> Fill:
        if symbol is None:
            symbol = self.symbols[self.fill_no % SYMBOL_COUNT]
            self.fill_no += 1
        trade, side = self.open_trade[symbol], "SELL"
        if trade is None:
            trade, side = uuid.uuid4(), "BUY"
        self.open_trade[symbol] = trade if side == "BUY" else None
        return Fill(
            fill_id=uuid.uuid4().hex[:16], trade_id=trade, strategy_id="bench", model_version="b1", symbol=symbol, side=side,
            ts=self.clock[symbol], price=self.price[symbol], quantity=quantity, portfolio_id=self.owner[symbol],
        )


async def send(producer: AIOKafkaProducer, settings, feed: Feed, message: Bar | Fill) -> None:
    if isinstance(message, Bar):
        cause, topic = ("MARK", message.symbol, message.ts + timedelta(minutes=1)), BARS
    else:
        cause, topic = ("FILL", message.symbol, message.ts), FILLS
    feed.sent[cause] = time.time()
    await producer.send(settings.topic(topic.name), key=message.symbol.encode(), value=_encode(message))


async def watch(settings, feed: Feed, stop: asyncio.Event, latencies: dict[str, list[float]], transport: list[float]) -> None:
    """Match each portfolio update with its cause; time the bars' plain transport."""
    consumer = AIOKafkaConsumer(
        settings.topic(POSITIONS.name), settings.topic(PORTFOLIOS.name), settings.topic(BARS.name),
        **settings.kafka_options(), auto_offset_reset="earliest", group_id=None,
    )
    await consumer.start()
    position_of, portfolio_of = msgspec.json.Decoder(PositionRow), msgspec.json.Decoder(PortfolioRow)
    causes: dict[str, list[tuple[str, str, datetime]]] = {}  # portfolio -> causes of its rows, in order
    updates: dict[str, list[tuple[int, float]]] = {}  # portfolio -> (version, broker time)
    bars_topic, positions_topic = settings.topic(BARS.name), settings.topic(POSITIONS.name)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    if record.topic == bars_topic:
                        bar = msgspec.json.decode(record.value)
                        sent = feed.sent.get(("MARK", bar["symbol"], datetime.fromisoformat(bar["ts"]) + timedelta(minutes=1)))
                        if sent and sent >= feed.steady_from:
                            transport.append(now - sent)
                    elif record.topic == positions_topic:
                        row = position_of.decode(record.value)
                        causes.setdefault(row.portfolio_id, []).append((row.cause, row.symbol, row.ts))
                    else:
                        row = portfolio_of.decode(record.value)
                        updates.setdefault(row.portfolio_id, []).append((row.version, record.timestamp / 1000))
    finally:
        await consumer.stop()
    for portfolio, rows in updates.items():
        mine, done = causes.get(portfolio, []), 0
        for version, at in rows:  # an update holds every position row up to its version
            for cause in mine[done:version]:
                sent = feed.sent.get(cause)
                if sent is not None and sent >= feed.steady_from:
                    latencies[cause[0]].append(at - sent)
            done = max(done, version)


def commit_p99(metrics: str) -> float:
    """The p99 bucket bound (seconds) of a sink's publish -> commit histogram."""
    buckets = sorted(
        (float(line.split('le="')[1].split('"')[0]), float(line.split()[-1]))
        for line in metrics.splitlines()
        if line.startswith("tickwire_publish_latency_seconds_bucket") and 'le="+Inf"' not in line
    )
    total = buckets[-1][1] if buckets else 0.0
    return next((bound for bound, count in buckets if count >= 0.99 * total), float("inf")) if total else float("nan")


async def measure(settings, seconds: float, bar_rate: int, fill_rate: int, workers: list[dict[str, str]]) -> tuple[dict[str, list[float]], list[float], float]:
    db, name = await fresh_database(settings)
    group = f"bench-{uuid.uuid4().hex[:6]}"
    env = dict(local_env(), TICKWIRE_TOPIC_PREFIX=settings.topic_prefix, TICKWIRE_PG_DSN=db.pg_dsn,
               TICKWIRE_LOG_LEVEL="WARNING", TICKWIRE_MAX_FUTURE_SKEW_S="1e9", TICKWIRE_PROCESSOR_GROUP=group)
    port = 19900 + os.getpid() % 80
    children = [
        subprocess.Popen([sys.executable, "-m", "tickwire.streams.cli", "worker", "--metrics-port", str(port + i)],
                         env=env | {key: value.format(group=group) for key, value in overrides.items()},
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i, overrides in enumerate(workers)
    ]
    children.append(subprocess.Popen([sys.executable, "-m", "tickwire.streams.cli", "sink", "--tables", "portfolio_snapshots",
                                      "--metrics-port", str(port + 90)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    feed, producer = Feed(), AIOKafkaProducer(**settings.kafka_options(), linger_ms=1, acks="all")
    await producer.start()
    latencies: dict[str, list[float]] = {"FILL": [], "MARK": []}
    transport: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(settings, feed, stop, latencies, transport))
    try:
        for symbol in feed.symbols:  # every pair held before the clock starts
            await send(producer, settings, feed, feed.fill(symbol, quantity=100))
        await producer.flush()
        await asyncio.sleep(20)  # the worker joins its group, recovers and takes the warm-up
        feed.steady_from = time.time()
        started, tick = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            tick += 1  # each tick sends its share of both rates, fractions carried over
            for _ in range(int(bar_rate * tick * TICK_S) - int(bar_rate * (tick - 1) * TICK_S)):
                await send(producer, settings, feed, feed.bar())
            for _ in range(int(fill_rate * tick * TICK_S) - int(fill_rate * (tick - 1) * TICK_S)):
                await send(producer, settings, feed, feed.fill())
            await asyncio.sleep(max(0.0, started + tick * TICK_S - time.monotonic()))
        await producer.flush()
        await asyncio.sleep(5)
        sink_metrics = urllib.request.urlopen(f"http://127.0.0.1:{port + 90}/metrics", timeout=5).read().decode()
    finally:
        stop.set()
        await watcher
        await producer.stop()
        for child in children:
            child.terminate()
            child.wait(timeout=30)
        await drop_database(settings, name)
    return latencies, transport, commit_p99(sink_metrics)


def report(label: str, runs: list[tuple[dict[str, list[float]], list[float], float]]) -> None:
    for cause, name in (("FILL", "fill"), ("MARK", "bar")):
        for q, tag in ((0.5, "p50"), (0.99, "p99")):
            value = statistics.median(percentile(r[0][cause], q) * 1000 for r in runs)
            base = statistics.median(percentile(r[1], q) * 1000 for r in runs)
            emit("portfolio", f"{name}_to_portfolio_update_{tag}_{label}", value, "ms", f"transport alone (bar send to receipt) {tag}", base)
        committed = statistics.median((percentile(r[0][cause], 0.99) + r[2]) * 1000 for r in runs)
        base = statistics.median(percentile(r[1], 0.99) * 1000 for r in runs)
        emit("portfolio", f"{name}_to_committed_row_p99_upper_bound_{label}", committed, "ms", "transport alone (bar send to receipt) p99", base)
    matched = statistics.median(len(r[0]["FILL"]) + len(r[0]["MARK"]) for r in runs)
    print(f"# {label}: {matched:.0f} portfolio updates matched to their cause per run", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 s of load, one run each")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--bar-rate", type=int, default=2000, help="bars/s over the 500 symbols (default: the issue's 2,000)")
    parser.add_argument("--fill-rate", type=int, default=1000, help="fills/s (default: the issue's 1,000)")
    parser.add_argument("--only", choices=VARIANTS, help="measure one worker only")
    args = parser.parse_args()
    seconds, repeats = (args.seconds or 20, 1) if args.quick else (args.seconds or 60, 3)
    rates = f"{args.bar_rate}_bars_{args.fill_rate}_fills"
    for label, workers in VARIANTS.items():
        if args.only not in (None, label):
            continue
        runs = []
        for _ in range(repeats):
            settings = local_settings(topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
            asyncio.run(ensure_topics(settings))
            runs.append(asyncio.run(measure(settings, seconds, args.bar_rate, args.fill_rate, workers)))
        report(f"{label}_{rates}", runs)


if __name__ == "__main__":
    main()
