"""Correlation stage: one update step for 500 symbols, window 60, against numpy corrcoef.

Same run, same data, one core (BLAS threads pinned to 1). Each measured step is timed
interleaved with its baseline, numpy ``corrcoef`` over the same window recomputed from
scratch, so both see the same machine load. Metrics, each as a median over the measured
steps and as a mean (which includes the periodic exact recompute, every
``recompute_every`` = 32 steps), side by side with the corrcoef figure of the same
statistic (``ratio`` = ours / corrcoef; the speed-up is its inverse, also printed on
stderr):

- ``step_update_ms``: a new bar for every symbol, every pair's rolling sums updated
  (what a step costs when no snapshot is due; a pair's value is then O(1) away);
- ``step_plus_matrix_ms``: the same step plus the full correlation and common-count
  matrices materialized (``matrix(window)``: what a step costs with a snapshot of the
  matrix at every bar, before the records are built);
- ``state_bytes_per_1000_symbols`` / ``memory_bytes_per_1000_symbols``: serialized
  state and in-memory arrays for 1,000 symbols with the default windows (20, 60).

    python tests/bench/bench_correlations.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from tickwire.streams.correlations import CorrelationConfig, Correlations  # noqa: E402
from tests.bench._services import emit  # noqa: E402


def prices(steps: int, symbols: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (steps, symbols)), axis=0))


def measure(symbols: int, window: int, measured: int, with_matrix: bool) -> tuple[list[float], list[float]]:
    """(ours, corrcoef) milliseconds per step, interleaved step by step."""
    closes = prices(window + 2 + measured, symbols)
    names = [f"S{i:03d}" for i in range(symbols)]
    core = Correlations(CorrelationConfig(windows=(window,), snapshot_every=10**9))
    for t in range(window + 2):
        core.step(t, dict(zip(names, closes[t].tolist())))
    ours, full = [], []
    for t in range(window + 2, window + 2 + measured):
        bars = dict(zip(names, closes[t].tolist()))
        a = time.perf_counter()
        core.step(t, bars)
        if with_matrix:
            core.matrix(window)
        b = time.perf_counter()
        rets = np.log(closes[t - window + 1 : t + 1] / closes[t - window : t])
        c = time.perf_counter()
        np.corrcoef(rets, rowvar=False)
        d = time.perf_counter()
        ours.append((b - a) * 1e3)
        full.append((d - c) * 1e3)
    return ours, full


def report(metric: str, ours: list[float], full: list[float]) -> None:
    for stat, fn in (("median", statistics.median), ("mean", statistics.fmean)):
        value, base = fn(ours), fn(full)
        emit("correlations", f"{metric}_ms_{stat}", value, "ms", f"numpy_corrcoef_ms_{stat}", base)
        print(f"# {metric} {stat}: {value:.3f} ms vs corrcoef {base:.3f} ms: {base / value:.1f}x faster", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    symbols, window = 500, 60
    measured = 200 if args.quick else 1000
    report("step_update", *measure(symbols, window, measured, with_matrix=False))
    report("step_plus_matrix", *measure(symbols, window, measured, with_matrix=True))

    # Memory for 1,000 symbols, default windows (20, 60): G per window, the scratch
    # matrices and the returns ring; the serialized state is the ring and per-symbol scalars.
    n = 1000
    big = Correlations(CorrelationConfig())
    sample = prices(80, n, seed=2)
    big_names = [f"T{i:03d}" for i in range(n)]
    for t in range(80):
        big.step(t, dict(zip(big_names, sample[t].tolist())))
    big.matrix(60)
    state = len(msgspec.msgpack.encode(big.snapshot_state()))
    emit("correlations", "memory_bytes_per_1000_symbols", big._memory(), "bytes", "float64_pair_matrix_bytes", n * n * 8)
    emit("correlations", "state_bytes_per_1000_symbols", state, "bytes", "float64_pair_matrix_bytes", n * n * 8)


if __name__ == "__main__":
    main()
