"""Correlation stage: one update step for 500 symbols, window 60, against numpy corrcoef.

Same run, same data, one core (BLAS threads pinned to 1). Metrics:
- ``step_ms``: a new bar for every symbol, every pair's rolling sums updated (a pair's
  value is then one multiply away); median, and mean (which includes the periodic
  exact recompute);
- ``step_matrix_ms``: the same plus the full correlation matrix materialized;
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
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from streams.correlations import CorrelationConfig, Correlations  # noqa: E402
from tests.bench._services import emit  # noqa: E402


def prices(steps: int, symbols: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (steps, symbols)), axis=0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    symbols, window = 500, 60
    measured = 100 if args.quick else 600
    closes = prices(window + 2 + measured, symbols)
    names = [f"S{i:03d}" for i in range(symbols)]
    core = Correlations(CorrelationConfig(windows=(window,), snapshot_every=10**9))
    for t in range(window + 2):
        core.step(t, dict(zip(names, closes[t].tolist())))
    step, step_matrix, full = [], [], []
    for t in range(window + 2, window + 2 + measured):
        bars = dict(zip(names, closes[t].tolist()))
        a = time.perf_counter()
        core.step(t, bars)
        b = time.perf_counter()
        core.matrix(window)
        c = time.perf_counter()
        rets = np.log(closes[t - window + 1 : t + 1] / closes[t - window : t])
        d = time.perf_counter()
        np.corrcoef(rets, rowvar=False)
        e = time.perf_counter()
        step.append((b - a) * 1e3)
        step_matrix.append((c - a) * 1e3)
        full.append((e - d) * 1e3)
    baseline = statistics.median(full)
    emit("correlations", "step_ms_median", statistics.median(step), "ms", "numpy_corrcoef_ms_median", baseline)
    emit("correlations", "step_ms_mean", statistics.fmean(step), "ms", "numpy_corrcoef_ms_mean", statistics.fmean(full))
    emit("correlations", "step_matrix_ms_median", statistics.median(step_matrix), "ms", "numpy_corrcoef_ms_median", baseline)

    # Memory for 1,000 symbols, default windows (20, 60): G per window + one scratch
    # matrix + the returns ring; the serialized state is the ring and per-symbol scalars.
    n = 1000
    big = Correlations(CorrelationConfig())
    sample = prices(80, n, seed=2)
    big_names = [f"T{i:03d}" for i in range(n)]
    for t in range(80):
        big.step(t, dict(zip(big_names, sample[t].tolist())))
    arrays = sum(g.nbytes for g in big._g.values()) + big._tmp.nbytes + big._ring.nbytes
    state = len(msgspec.msgpack.encode(big.snapshot_state()))
    emit("correlations", "memory_bytes_per_1000_symbols", arrays, "bytes", "float64_pair_matrix_bytes", n * n * 8)
    emit("correlations", "state_bytes_per_1000_symbols", state, "bytes", "float64_pair_matrix_bytes", n * n * 8)


if __name__ == "__main__":
    main()
