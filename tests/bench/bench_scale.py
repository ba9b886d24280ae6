"""The worker across universes: bars/s, resident memory and state per symbol at 500,
2,000 and 10,000 symbols, every stage on; and the correlation step for its universe.

Baselines, measured in the same run: the 500-symbol worker (a ratio near 1 means the cost
per bar does not grow with the symbols), and the correlation step at 100 symbols (it costs
the square of them, which is why the universe is capped at 500 by default).

    python tests/bench/bench_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench._services import emit, local_settings  # noqa: E402
from tests.bench.bench_pipeline import preload, run_worker  # noqa: E402
from tickwire.streams.correlations import CorrelationConfig, Correlations  # noqa: E402


def sample(metrics: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))


def worker_at(symbols: int, count: int) -> tuple[float, float, float]:
    """(bars/s, resident bytes, state bytes per symbol) of a worker over ``count`` bars of ``symbols``."""
    settings = local_settings(topic_prefix=f"scale{uuid.uuid4().hex[:8]}.")
    asyncio.run(preload(settings, count, symbols))
    rate, metrics = run_worker(settings, count)
    state = sample(metrics, 'tickwire_state_bytes{table="symbol-record"}')
    return rate, sample(metrics, "process_resident_memory_bytes"), state / symbols


def correlation_step_ms(symbols: int, steps: int = 30) -> float:
    """Milliseconds per step of one timeframe's core, a snapshot at every step."""
    core, rng = Correlations(CorrelationConfig(timeframe="1m", snapshot_every=1)), random.Random(1)
    closes = {f"S{i:05d}": 100.0 for i in range(symbols)}
    started = None
    for step in range(steps + 5):
        if step == 5:  # past the first steps' slot growth
            started = time.perf_counter()
        for symbol in closes:
            closes[symbol] *= 1 + rng.gauss(0, 0.01)
        core.step(step * 60_000_000, closes)
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40k bars at 500 and 2,000 symbols only")
    args = parser.parse_args()
    count, universes = (40_000, (500, 2_000)) if args.quick else (200_000, (500, 2_000, 10_000))
    runs = {symbols: worker_at(symbols, count) for symbols in universes}
    base_rate, base_rss, base_state = runs[universes[0]]
    for symbols, (rate, rss, state) in runs.items():
        emit("scale", f"worker_throughput_{symbols}_symbols", rate, "bars/s", "the same worker at 500 symbols", base_rate)
        emit("scale", f"worker_rss_{symbols}_symbols", rss / 2**20, "MiB", "the same worker at 500 symbols", base_rss / 2**20)
        emit("scale", f"state_bytes_per_symbol_{symbols}_symbols", state, "bytes", "the same worker at 500 symbols", base_state)
    base_step = correlation_step_ms(100)
    for symbols in (500,) if args.quick else (500, 1_000):
        emit("scale", f"correlation_step_{symbols}_symbols", correlation_step_ms(symbols), "ms", "the step at 100 symbols", base_step)


if __name__ == "__main__":
    main()
