"""Rolling cross-symbol correlations for one timeframe: pairs, benchmark, sector, groups.

Definitions:

- A *step* is one closed timestamp. A symbol's return at a step is the log return from
  its previous bar (whenever that was) to its bar at this step; no bar, no return.
- A window of ``W`` bars is the last ``W`` steps. A pair's correlation is the Pearson
  correlation over the steps where both symbols have a return (pandas' pairwise-complete
  rolling ``corr``); ``None`` with fewer than ``min_common`` such steps or when either
  series is constant over them. *Active* symbols have at least one return in the window.
- Benchmark correlation: with ``benchmark``'s returns. Sector correlation: with the
  equal-weight mean of the returns the *other* members of the symbol's sector have at
  each step (the symbol itself excluded; steps where no other member has one are gaps).
  Both over the smallest window, for every symbol (``Context``: linear in the symbols,
  about 0.2 KB each at a 20-bar window), where the pairs (``Correlations``) are kept for a
  capped universe. A symbol without a return for a whole window leaves ``Context``; its
  first bar back has no return.
- Groups: connected components of the graph whose edges are pairs with
  ``|corr| >= threshold`` (seed 000's groups of mutually related instruments; a chain
  A~B~C is one group even when A and C are not related). Components of one symbol are
  not reported. Threshold events: a pair entering or leaving that edge set between two
  snapshots.
- Threshold by regime: the threshold of groups and threshold events is
  ``thresholds[regime]`` for the benchmark's regime on this timeframe (the last one its
  bars carried, kept while a step has none), else ``threshold``
  (:func:`threshold_in_force`); a change of it is a ``CorrelationThreshold`` record at the
  step it takes effect, and it applies from the next snapshot on.
- Daily history: a UTC day's close is its last step (the day of a step is its bar's,
  ``ts // DAY_US``); the first step of a later day publishes, before it moves the window,
  every active pair's value of every window at that close (``CorrelationHistory``, one
  record per window), then read off the state as it stands: no state of its own.
- Analysis: per snapshot and window, the mean and population standard deviation of the
  pairs' values, the group count, and the pairs of the highest and lowest value
  (``CorrelationAnalysis``).

Speed: per window, ``G = W * sum(z z^T) - sum(z) sum(z)^T`` over the window (``z`` the
return minus a per-symbol shift, zero where missing) and ``sum(z)`` are the only things a
step updates: one rank-4 product for the row entering the window and the row leaving
it, O(S^2) instead of O(S^2 W). Only G's upper block triangle is kept, as contiguous row
blocks, each updated by a BLAS product into a cached scratch block and an in-place add;
a step allocates no S x S temporary and has no per-symbol Python loop (the previous
closes are a per-slot array). The matrix is built lazily, when a matrix or snapshot is
read: the window's exact per-symbol sums and counts (O(S W)), then ``G * (u u^T)``
with ``u = 1 / sqrt(V)``; for two symbols with a return at every step of the window,
``G_ij / sqrt(V_i V_j)`` is their correlation. Pairs with a gap are computed exactly
from the window's masked sums (O(S W) per symbol with gaps); with no gaps that path is
skipped entirely. Every ``recompute_every`` steps ``G`` is recomputed exactly, which
bounds rounding drift and lets the serialized state stay small: it keeps the returns
since the last recompute and rebuilds ``G`` by replaying them, bit for bit as the live
object computed it.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import date, timedelta
from pathlib import Path
from itertools import repeat
from typing import Mapping

import msgspec
import numpy as np

from tickwire.schemas.correlations import (
    CorrelationAnalysis,
    CorrelationConflict,
    CorrelationEntry,
    CorrelationGroup,
    CorrelationGroupMember,
    CorrelationHistory,
    CorrelationMatrix,
    CorrelationRecord,
    CorrelationThreshold,
)
from tickwire.schemas.market import DAY_US, EPOCH, EPOCH_ORDINAL, REGIMES

# A series whose centred sum of squares is below this share of its raw sum of squares
# is constant up to rounding (std/|mean| below about 1e-6).
_FLAT = 1e-12
_SLOT_ROUND = 32
_BLOCK = 64  # rows per block of G's upper triangle (a scratch block of 64 x S stays in L2)


class CorrelationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """``snapshot_every``: publish every N steps (1 = every bar close). ``thresholds``:
    (regime, threshold) pairs overriding ``threshold`` in those regimes of the benchmark."""

    timeframe: str = "1d"
    windows: tuple[int, ...] = (20, 60)
    min_common: int = 10
    benchmark: str = "SPY"
    threshold: float = 0.7
    thresholds: tuple[tuple[str, float], ...] = ()
    snapshot_every: int = 1
    recompute_every: int = 32

    def __post_init__(self) -> None:
        if not self.windows or min(self.windows) < 2 or len(set(self.windows)) != len(self.windows):
            raise ValueError("windows must be distinct and at least 2 bars")
        if not 2 <= self.min_common <= min(self.windows):
            raise ValueError("need 2 <= min_common <= the smallest window")
        if not 0 < self.threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        regimes = [regime for regime, _ in self.thresholds]
        if len(set(regimes)) != len(regimes) or not set(regimes) <= set(REGIMES):
            raise ValueError(f"thresholds must name distinct regimes of {', '.join(REGIMES)}")
        if not all(0 < t <= 1 for _, t in self.thresholds):
            raise ValueError("every regime's threshold must be in (0, 1]")
        if self.snapshot_every < 1 or self.recompute_every < 1:
            raise ValueError("snapshot_every and recompute_every must be at least 1")


class CorrelationState(msgspec.Struct, array_like=True):
    """Everything needed to continue after a restart; O(symbols * (max window + recompute_every))."""

    symbols: list[str | None] = []  # slot -> symbol; None is a free slot
    returns: bytes = b""  # ring of rows (float64, NaN = no return), row of step s at (s - 1) % rows
    timestamps: list[int] = []  # epoch µs of the steps in the ring, oldest first
    steps: int = 0
    anchor: int = 0  # step of the last exact recompute
    last_close: dict[str, float] = {}  # symbol -> last close; complete after snapshot_state()
    above: dict[int, dict[str, float]] = {}  # window -> "a\tb" -> value, pairs above threshold at the last snapshot
    regime: str | None = None  # the benchmark's last regime (None: none seen)
    threshold: float | None = None  # the threshold in force, as last recorded (None: none yet)


def threshold_in_force(regime: str | None, thresholds: Mapping[str, float], default: float) -> float:
    """``thresholds[regime]`` when the regime has one, else ``default`` (no regime known included)."""
    return thresholds.get(regime, default) if regime is not None else default


def load_sectors(path: str | Path) -> dict[str, str]:
    """Symbol -> sector from a JSON object or a CSV with ``symbol`` and ``sector`` columns
    (none without a path: the setting left empty)."""
    if not path:
        return {}
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"sector file {path}: {exc.strerror}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"sector file {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"sector file {path}: expected an object symbol -> sector")
        rows = list(data.items())
        where = lambda i: f"key {rows[i][0]!r}"  # noqa: E731
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"symbol", "sector"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"sector file {path}: missing column(s) {', '.join(sorted(missing))}")
        rows = [(r["symbol"], r["sector"]) for r in reader]
        where = lambda i: f"line {i + 2}"  # noqa: E731
    else:
        raise ValueError(f"sector file {path}: expected a .csv or .json file")
    sectors: dict[str, str] = {}
    for i, (symbol, sector) in enumerate(rows):
        if not isinstance(symbol, str) or not isinstance(sector, str) or not symbol.strip() or not sector.strip():
            raise ValueError(f"sector file {path}: {where(i)}: symbol and sector must be non-empty strings")
        if symbol.strip() in sectors:
            raise ValueError(f"sector file {path}: {where(i)}: symbol {symbol.strip()!r} listed twice")
        sectors[symbol.strip()] = sector.strip()
    return sectors


class Correlations:
    """Feed bars in event order; read matrices and snapshot records."""

    def __init__(self, config: CorrelationConfig | None = None, state: CorrelationState | None = None) -> None:
        self.config = config or CorrelationConfig()
        self.state = state or CorrelationState()
        cfg, s = self.config, self.state
        self._by_regime = dict(cfg.thresholds)
        self._rows = max(cfg.windows) + cfg.recompute_every
        n = len(s.symbols)
        self._ring = np.frombuffer(s.returns, dtype=np.float64).reshape(self._rows, n).copy() if s.returns else np.full((self._rows, 0), np.nan)
        self._slot = {sym: i for i, sym in enumerate(s.symbols) if sym is not None}
        self._free = s.symbols.count(None)
        self._keys: list[str] | None = None  # the last step's symbols and their slots (_slots_of)
        self._keys_slots = np.empty(0, dtype=np.intp)
        # Per-slot last close (NaN for a free slot): the step's previous closes in one gather.
        # ``state.last_close`` keeps the symbols without a slot live; the slotted ones'
        # entries are written back by snapshot_state() and when a slot is freed.
        self._close = np.full(n, np.nan)
        for sym, i in self._slot.items():
            self._close[i] = s.last_close[sym]
        self._shift = np.zeros(n)
        self._buffers(n)
        self._g = {w: [np.zeros((r.stop - r.start, n - r.start)) for r, _, _, _ in self._blocks] for w in cfg.windows}
        self._sx = {w: np.zeros(n) for w in cfg.windows}  # sum(z) over the window, rolled like G
        if s.steps:
            self._replay()

    def _buffers(self, n: int) -> None:
        """Scratch arrays sized to the slot count, reused by every step and read."""
        self._n = n
        self._corr = np.empty((n, n))  # the lazily built correlation matrix
        self._counts = np.empty((n, n), dtype=np.int64)
        self._u = np.empty((4, n))  # G += U V, the rank-4 update of a step: U's columns ...
        self._v = np.empty((4, n))  # ... and V's rows (see _roll)
        # G is symmetric: only its upper block triangle is kept, as contiguous row blocks
        # (rows r, columns r.start..n). Per block: the row range, U's rows, V's columns and
        # a scratch block small enough to stay in cache between the product and the add.
        # A second set (_u2, _v2 and their scratch) serves the second product of a read.
        self._u2, self._v2 = np.zeros((2, n)), np.zeros((2, n))
        self._blocks, self._blocks2 = [], []
        scratch, scratch2 = np.empty(min(n, _BLOCK) * n), np.empty(min(n, _BLOCK) * n)
        for r in (slice(i, min(i + _BLOCK, n)) for i in range(0, n, _BLOCK)):
            shape = (r.stop - r.start, n - r.start)
            size = shape[0] * shape[1]
            self._blocks.append((r, self._u.T[r], self._v[:, r.start :], scratch[:size].reshape(shape)))
            self._blocks2.append((self._u2.T[r], self._v2[:, r.start :], scratch2[:size].reshape(shape)))

    # ---- input -------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """The group and conflict threshold in force (see the module docstring)."""
        return threshold_in_force(self.state.regime, self._by_regime, self.config.threshold)

    def step(self, ts: int, closes: Mapping[str, float], regime: str | None = None) -> list[CorrelationRecord]:
        """Close timestamp ``ts`` (epoch µs, after the last step) with every bar it has;
        ``regime`` is the benchmark's at this step (None: no bar or no regime, the last kept)."""
        s, cfg = self.state, self.config
        if s.timestamps and ts <= s.timestamps[-1]:
            raise ValueError(f"step {ts} is not after the last step {s.timestamps[-1]}")
        head: list[CorrelationRecord] = []
        if s.timestamps and ts // DAY_US > s.timestamps[-1] // DAY_US:
            head = self.day_close()
        if regime is not None:
            s.regime = regime
        if (threshold := self.threshold) != s.threshold:
            head.append(CorrelationThreshold(
                timeframe=cfg.timeframe, timestamp=EPOCH + timedelta(microseconds=ts), regime=s.regime,
                threshold=threshold, previous_threshold=s.threshold,
            ))
            s.threshold = threshold
        k = len(closes)
        now = np.fromiter(closes.values(), np.float64, k)
        idx = self._slots_of(closes)
        joining: list[str] = []
        unslotted = bool(k) and idx.min() < 0
        if unslotted:  # a symbol without a slot: first bar ever, joining, or back after being freed
            names = list(closes)
            prev = np.full(k, np.nan)
            slotted = idx >= 0
            prev[slotted] = self._close[idx[slotted]]
            last = s.last_close
            for j in np.flatnonzero(~slotted).tolist():
                p = last.get(names[j])
                if p is not None:
                    prev[j] = p
                    joining.append(names[j])
                last[names[j]] = closes[names[j]]
        else:  # every symbol has a slot, hence a previous close
            prev = self._close[idx]
        s.steps += 1
        exact = s.steps - s.anchor >= cfg.recompute_every or len(joining) > self._free
        if exact:
            self._free_quiet_slots(keep=closes)
            short = len(joining) - self._free
            if short > 0:
                self._grow(_capacity(len(s.symbols) + short) - len(s.symbols))
        if unslotted:  # joiners get their slot; first bars (no return) stay out
            for sym in joining:
                self._assign(sym)
            idx = self._slots_of(closes)
            known = idx >= 0
            idx, now, prev = idx[known], now[known], prev[known]
        self._close[idx] = now
        row = self._ring[(s.steps - 1) % self._rows]
        row.fill(np.nan)
        if len(idx):
            np.divide(now, prev, out=now)
            row[idx] = np.log(now, out=now)
        s.timestamps.append(ts)
        if len(s.timestamps) > self._rows:
            del s.timestamps[: -self._rows]
        if exact:
            self._recompute(s.steps)
        else:
            self._roll(s.steps)
        s.returns = b""  # rebuilt by snapshot_state(); avoids a copy per step
        if s.steps % cfg.snapshot_every == 0:
            return head + self.snapshot()
        return head

    def snapshot_state(self) -> CorrelationState:
        """The state with its returns ring and slotted symbols' last closes filled in,
        ready for msgpack."""
        s = self.state
        s.returns = self._ring.tobytes()
        s.last_close.update(zip(self._slot, self._close[list(self._slot.values())].tolist()))
        return s

    def _slots_of(self, closes: Mapping[str, float]) -> np.ndarray:
        """Slot of each symbol of ``closes`` in order, -1 without one. The symbol list is
        usually the same step after step: its slots are then reused, not looked up."""
        keys = list(closes)
        if keys != self._keys:
            self._keys = keys
            self._keys_slots = np.fromiter(map(self._slot.get, keys, repeat(-1)), np.intp, len(keys))
        return self._keys_slots

    # ---- slots -------------------------------------------------------------------

    def _free_quiet_slots(self, keep: Mapping[str, float]) -> None:
        """At a recompute only (so G holds no residue of it): a slot with no return in
        the largest window, and no bar now (a slotted symbol's bar is a return), is freed
        and its column cleared."""
        s = self.state
        window = self._window_rows(max(self.config.windows), s.steps - 1)
        quiet = [int(i) for i in np.flatnonzero(np.isnan(window).all(axis=0)) if s.symbols[i] not in keep]
        for i in quiet:
            if s.symbols[i] is not None:
                s.last_close[s.symbols[i]] = float(self._close[i])
                del self._slot[s.symbols[i]]
                s.symbols[i] = None
                self._free += 1
        self._ring[:, quiet] = np.nan
        self._close[quiet] = np.nan
        self._keys = None

    def _grow(self, count: int) -> None:
        """More slots, at a recompute only (G changes shape there)."""
        self.state.symbols += [None] * count
        self._free += count
        self._ring = np.hstack([self._ring, np.full((self._rows, count), np.nan)])
        self._close = np.concatenate([self._close, np.full(count, np.nan)])

    def _assign(self, symbol: str) -> None:
        s = self.state
        i = s.symbols.index(None)
        s.symbols[i] = symbol
        self._slot[symbol] = i
        self._free -= 1
        self._keys = None

    # ---- numeric core ------------------------------------------------------------

    def _window_rows(self, window: int, step: int) -> np.ndarray:
        """Rows of steps ``max(1, step - window + 1) .. step`` (a copy, oldest first)."""
        idx = [(t - 1) % self._rows for t in range(max(1, step - window + 1), step + 1)]
        return self._ring[idx]

    def _recompute(self, step: int) -> None:
        """Exact G at ``step``; resets the shift to the window means (better conditioning)."""
        n = len(self.state.symbols)
        if self._n != n:
            self._buffers(n)
        big = self._window_rows(max(self.config.windows), step)
        present = ~np.isnan(big)
        counts = present.sum(axis=0)
        self._shift = np.divide(np.where(present, big, 0.0).sum(axis=0), counts, out=np.zeros(n), where=counts > 0)
        for w in self.config.windows:
            z = np.nan_to_num(self._window_rows(w, step) - self._shift, nan=0.0)
            q = z.T @ z  # numpy uses syrk here: symmetric, half the work
            sx = self._sx[w] = z.sum(axis=0)
            self._g[w] = [np.subtract(np.multiply(q[r, r.start :], w), np.multiply.outer(sx[r], sx[r.start :])) for r, _, _, _ in self._blocks]
        self.state.anchor = step

    def _roll(self, step: int) -> None:
        """Every window's G and sum(z) for the row of ``step`` entering (``n``) and the row
        ``window`` steps back leaving (``o``): with ``s`` the sum before and ``d = n - o``,
        ``G += W n n^T - W o o^T - s d^T - d (s + d)^T``, one rank-4 product. Per block of
        G's upper triangle, one BLAS product into a cached scratch block and one in-place
        add; no other O(S^2) work and no allocation."""
        u, v, shift = self._u, self._v, self._shift
        new, old, s, d = u
        np.subtract(self._ring[(step - 1) % self._rows], shift, out=new)
        np.copyto(new, 0.0, where=np.isnan(new))
        blocks = self._blocks
        for w, g in self._g.items():
            if step > w:
                np.subtract(self._ring[(step - w - 1) % self._rows], shift, out=old)
                np.copyto(old, 0.0, where=np.isnan(old))
            else:
                old.fill(0.0)
            sx = self._sx[w]
            s[:] = sx
            np.subtract(new, old, out=d)
            np.multiply(new, w, out=v[0])
            np.multiply(old, -w, out=v[1])
            np.negative(d, out=v[2])
            np.add(s, d, out=sx)  # the sum after the step
            np.negative(sx, out=v[3])
            for (_, ub, vb, tb), gb in zip(blocks, g):
                np.matmul(ub, vb, out=tb)  # ub: (rows, 4) Fortran-ordered view of u, no copy
                np.add(gb, tb, out=gb)

    def _replay(self) -> None:
        """Rebuild G as the live object had it: exact at the anchor, then rolled."""
        s = self.state
        self._recompute(s.anchor)
        for step in range(s.anchor + 1, s.steps + 1):
            self._roll(step)

    def _memory(self) -> int:
        """Bytes held in numpy arrays (G per window, scratch, the returns ring)."""
        scratch = [b[3].base for b in self._blocks[:1]] + [b[2].base for b in self._blocks2[:1]]
        arrays = [*(b for g in self._g.values() for b in g), *self._sx.values(), *scratch, self._corr, self._counts, self._u, self._v, self._u2, self._v2, self._ring, self._close, self._shift]
        return sum(a.nbytes for a in arrays)

    # ---- reading -----------------------------------------------------------------

    def matrix(self, window: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(symbols, correlations, common counts) over the active symbols, in slot order;
        NaN where the value is None."""
        corr, counts, active = self._matrix(window)
        syms = [self.state.symbols[i] for i in active]
        return syms, _take(corr, active), _take_counts(counts, active, window)

    def _matrix(self, window: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Slot-by-slot correlation and common-count matrices, and the active slots (the
        rows and columns of the others are left undefined). The matrices are scratch
        buffers, valid until the next read or step; counts is None when every active
        symbol has a return at every step of the window (every count is ``window``)."""
        s, cfg = self.state, self.config
        n = len(s.symbols)
        rows = self._window_rows(window, s.steps)
        present = ~np.isnan(rows)
        cnt = present.sum(axis=0)
        complete = cnt == window
        z = np.subtract(rows, self._shift, out=rows)
        np.copyto(z, 0.0, where=~present)
        sx, sxx = z.sum(axis=0), (z * z).sum(axis=0)
        var = window * sxx - sx * sx
        flat = var <= _FLAT * window * sxx
        u = np.zeros(n)
        good = complete & ~flat
        u[good] = 1.0 / np.sqrt(var[good])
        # corr = G * (u u^T), block by block over G's upper block triangle, u u^T as a
        # BLAS product into a contiguous scratch block (elementwise ops with
        # broadcasting, or on strided views, are several times slower), then copied in
        # place and mirrored below the diagonal blocks.
        corr = self._corr
        self._u2[0], self._v2[0] = u, u
        for (r, _, _, _), (ub, vb, tb), gb in zip(self._blocks, self._blocks2, self._g[window]):
            np.matmul(ub, vb, out=tb)
            np.multiply(gb, tb, out=tb)
            corr[r, r.start :] = tb
            corr[r.stop :, r] = tb[:, r.stop - r.start :].T
        bad = np.flatnonzero(~good & complete)
        if len(bad):
            corr[bad, :] = np.nan
            corr[:, bad] = np.nan
        gaps = np.flatnonzero(~complete & (cnt > 0))
        if not len(gaps):  # the masked path only for symbols with a missing return in the window
            return corr, None, np.flatnonzero(cnt > 0)
        counts = self._counts
        counts.fill(window)
        r, c = _masked(z[:, gaps], present[:, gaps], z, present, cfg.min_common)
        corr[gaps, :] = r
        corr[:, gaps] = r.T
        counts[gaps, :] = c
        counts[:, gaps] = c.T
        return corr, counts, np.flatnonzero(cnt > 0)

    # ---- snapshots ---------------------------------------------------------------

    def _pairs(self, window: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The active symbols in name order, their correlation matrix, and per pair (upper
        triangle, row-major): row, column, value (NaN for None), common count, has a value."""
        s = self.state
        corr, counts, active = self._matrix(window)
        order = active[np.argsort([s.symbols[i] for i in active], kind="stable")]
        names = [s.symbols[i] for i in order]
        c, n = _take(corr, order), _take_counts(counts, order, window)
        ia, ib = np.triu_indices(len(order), 1)
        values = c[ia, ib]
        return names, c, ia, ib, values, n[ia, ib], ~np.isnan(values)

    def snapshot(self) -> list[CorrelationRecord]:
        """Matrix, entries, groups, members, threshold events and analysis of every window, now."""
        s, cfg = self.state, self.config
        ts = EPOCH + timedelta(microseconds=s.timestamps[-1])
        threshold = self.threshold
        out: list[CorrelationRecord] = []
        for w in cfg.windows:
            names, c, ia, ib, values, counts, valid = self._pairs(w)
            common = dict(timeframe=cfg.timeframe, window_bars=w, timestamp=ts)
            out.append(_summary(values[valid], len(names), threshold, common))
            vals = np.clip(values, -1.0, 1.0).tolist()
            for a, b, v, k, ok in zip(ia.tolist(), ib.tolist(), vals, counts.tolist(), valid.tolist()):
                out.append(CorrelationEntry(**common, symbol_a=names[a], symbol_b=names[b], value=v if ok else None, common_bars=k))
            strong = valid & (np.abs(values) >= threshold)
            groups = _groups(names, c, strong, ia, ib, threshold, common)
            out += groups
            group_count = sum(isinstance(g, CorrelationGroup) for g in groups)
            out.append(analysis(names, ia, ib, values, group_count, threshold, s.regime, common))
            now = {f"{names[a]}\t{names[b]}": v for a, b, v in zip(ia[strong].tolist(), ib[strong].tolist(), np.clip(values[strong], -1, 1).tolist())}
            out += self._events(w, now, names, c, common, threshold)
        return out

    def day_close(self) -> list[CorrelationRecord]:
        """Every active pair's value of every window at the last step, as the close of its
        UTC day (called by ``step`` on a later day's first step, before it moves the window)."""
        s, cfg = self.state, self.config
        last = s.timestamps[-1]
        ts, day = EPOCH + timedelta(microseconds=last), date.fromordinal(EPOCH_ORDINAL + last // DAY_US)
        out: list[CorrelationRecord] = []
        for w in cfg.windows:
            names, _, ia, ib, values, counts, valid = self._pairs(w)
            vals = np.clip(values, -1.0, 1.0).tolist()
            for a, b, v, k, ok in zip(ia.tolist(), ib.tolist(), vals, counts.tolist(), valid.tolist()):
                out.append(CorrelationHistory(
                    timeframe=cfg.timeframe, window_bars=w, day=day, timestamp=ts,
                    symbol_a=names[a], symbol_b=names[b], value=v if ok else None, common_bars=k,
                ))
        return out

    def _events(self, window: int, now: dict[str, float], names: list[str], corr: np.ndarray, common: dict,
                threshold: float) -> list[CorrelationRecord]:
        before = self.state.above.get(window, {})
        where = {sym: i for i, sym in enumerate(names)}
        out: list[CorrelationRecord] = []
        for key in sorted(now.keys() - before.keys()):
            a, b = key.split("\t")
            out.append(CorrelationConflict(**common, symbol_a=a, symbol_b=b, crossing="above", threshold=threshold, value=now[key]))
        for key in sorted(before.keys() - now.keys()):
            a, b = key.split("\t")
            value = corr[where[a], where[b]] if a in where and b in where else np.nan
            out.append(CorrelationConflict(
                **common, symbol_a=a, symbol_b=b, crossing="below", threshold=threshold,
                value=_value(max(-1.0, min(1.0, value))), previous_value=before[key],
            ))
        self.state.above[window] = now
        return out


class ContextState(msgspec.Struct, array_like=True):
    """``Context``'s state: O(symbols * window)."""

    symbols: list[str | None] = []  # slot -> symbol; None is a free slot
    returns: bytes = b""  # ring of ``window`` rows (float64, NaN = no return), row of step s at s % window
    closes: bytes = b""  # per slot, its symbol's last close (float64, NaN for a free slot)
    steps: int = 0


class Context:
    """Every symbol's benchmark and sector correlation over the smallest window (see the
    module docstring): one step per closed timestamp, O(symbols * window) each."""

    def __init__(self, config: CorrelationConfig, state: ContextState | None = None, *, sectors: Mapping[str, str] | None = None) -> None:
        self.window, self.min_common, self.benchmark = min(config.windows), config.min_common, config.benchmark
        self.sectors = dict(sectors or {})
        self.state = s = state or ContextState()
        n = len(s.symbols)
        self._ring = np.frombuffer(s.returns).reshape(self.window, n).copy() if s.returns else np.full((self.window, n), np.nan)
        self._close = np.frombuffer(s.closes).copy() if s.closes else np.full(n, np.nan)
        self._slot = {sym: i for i, sym in enumerate(s.symbols) if sym is not None}
        self._by_sector: list[np.ndarray] | None = None  # slots per sector of two or more, rebuilt when slots change

    def step(self, closes: Mapping[str, float]) -> dict[str, tuple[float | None, float | None]]:
        """Close one timestamp with its bars' closes; return (benchmark, sector) correlation
        of each of its symbols with a return (``None`` where undefined)."""
        s = self.state
        if s.steps % self.window == 0:
            self._free_quiet(closes)
        if new := [sym for sym in closes if sym not in self._slot]:
            self._assign(new)
        idx = np.fromiter(map(self._slot.__getitem__, closes), np.intp, len(closes))
        now = np.fromiter(closes.values(), np.float64, len(closes))
        row = self._ring[s.steps % self.window]
        row.fill(np.nan)
        with np.errstate(invalid="ignore"):
            row[idx] = np.log(now / self._close[idx])  # NaN without a previous close
        self._close[idx] = now
        s.steps += 1
        present = ~np.isnan(self._ring)
        x = np.where(present, self._ring, 0.0)
        bench = np.full(len(s.symbols), np.nan)
        if (b := self._slot.get(self.benchmark)) is not None:
            bench = _masked(x[:, [b]], present[:, [b]], x, present, self.min_common)[0][0]
        sector = np.full(len(s.symbols), np.nan)
        for members in self._sector_slots():
            xm, pm = x[:, members], present[:, members]
            total, n = xm.sum(axis=1, keepdims=True), pm.sum(axis=1, keepdims=True)
            others = n - pm  # members other than the symbol itself with a return
            mean = np.divide(total - xm, others, out=np.zeros_like(xm), where=others > 0)
            sector[members] = _paired(xm, pm, mean, pm & (others > 0), self.min_common)
        return {sym: (_value(bench[i]), _value(sector[i])) for sym, i in zip(closes, idx.tolist()) if present[(s.steps - 1) % self.window, i]}

    def snapshot_state(self) -> ContextState:
        s = self.state
        s.returns, s.closes = self._ring.tobytes(), self._close.tobytes()
        return s

    def _sector_slots(self) -> list[np.ndarray]:
        if self._by_sector is None:
            by_sector: dict[str, list[int]] = {}
            for sym, i in self._slot.items():
                if sym in self.sectors:
                    by_sector.setdefault(self.sectors[sym], []).append(i)
            self._by_sector = [np.array(m, dtype=np.intp) for m in by_sector.values() if len(m) > 1]
        return self._by_sector

    def _free_quiet(self, keep: Mapping[str, float]) -> None:
        """Slots without a return for the whole window, and no bar now, are freed."""
        s = self.state
        for i in np.flatnonzero(np.isnan(self._ring).all(axis=0)).tolist():
            if (sym := s.symbols[i]) is not None and sym not in keep:
                del self._slot[sym]
                s.symbols[i] = None
                self._close[i] = np.nan
                self._by_sector = None

    def _assign(self, symbols: list[str]) -> None:
        s = self.state
        free = [i for i, sym in enumerate(s.symbols) if sym is None]
        if len(free) < len(symbols):
            grow = _capacity(len(s.symbols) + len(symbols) - len(free)) - len(s.symbols)
            free += range(len(s.symbols), len(s.symbols) + grow)
            s.symbols += [None] * grow
            self._ring = np.hstack([self._ring, np.full((self.window, grow), np.nan)])
            self._close = np.concatenate([self._close, np.full(grow, np.nan)])
        for sym, i in zip(symbols, free):
            s.symbols[i] = sym
            self._slot[sym] = i
        self._by_sector = None


def _capacity(n: int) -> int:
    """Slot count for ``n`` symbols: a multiple of ``_SLOT_ROUND``, plus 8 when that is a
    multiple of 256, so the S x S matrices' row stride is not a large power of two (which
    makes every row land in the same cache sets and slows the BLAS products several
    times over)."""
    n = -(-n // _SLOT_ROUND) * _SLOT_ROUND
    return n + 8 if n % 256 == 0 else n


def _take(m: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``m[np.ix_(idx, idx)]``; a plain slice copy when ``idx`` is ``0 .. k-1``."""
    k = len(idx)
    if k == 0 or (idx[0] == 0 and idx[-1] == k - 1 and (k < 2 or bool((np.diff(idx) == 1).all()))):
        return m[:k, :k].copy()
    return m[np.ix_(idx, idx)]


def _take_counts(counts: np.ndarray | None, idx: np.ndarray, window: int) -> np.ndarray:
    """``_take`` for ``_matrix``'s counts (None: all ``window``)."""
    return np.full((len(idx), len(idx)), window, dtype=np.int64) if counts is None else _take(counts, idx)


def _value(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _masked(xa: np.ndarray, pa: np.ndarray, xb: np.ndarray, pb: np.ndarray, min_common: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise-complete correlation of every column of ``xa`` with every column of ``xb``
    (zero-filled values, boolean presence): (values with NaN for None, common counts)."""
    ma, mb = pa.astype(np.float64), pb.astype(np.float64)
    n = ma.T @ mb
    sa, sb = xa.T @ mb, ma.T @ xb
    saa, sbb = (xa * xa).T @ mb, ma.T @ (xb * xb)
    sab = xa.T @ xb
    va, vb = n * saa - sa * sa, n * sbb - sb * sb
    ok = (n >= min_common) & (va > _FLAT * n * saa) & (vb > _FLAT * n * sbb)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, (n * sab - sa * sb) / np.sqrt(np.where(ok, va * vb, 1.0)), np.nan)
    return r, n.astype(np.int64)


def _paired(x: np.ndarray, px: np.ndarray, y: np.ndarray, py: np.ndarray, min_common: int) -> np.ndarray:
    """Column-wise pairwise-complete correlation of ``x[:, j]`` with ``y[:, j]``."""
    m = (px & py).astype(np.float64)
    n = m.sum(axis=0)
    xm, ym = x * m, y * m
    sx, sy = xm.sum(axis=0), ym.sum(axis=0)
    sxx, syy, sxy = (xm * xm).sum(axis=0), (ym * ym).sum(axis=0), (xm * ym).sum(axis=0)
    vx, vy = n * sxx - sx * sx, n * syy - sy * sy
    ok = (n >= min_common) & (vx > _FLAT * n * sxx) & (vy > _FLAT * n * syy)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, (n * sxy - sx * sy) / np.sqrt(np.where(ok, vx * vy, 1.0)), np.nan)


def _summary(values: np.ndarray, symbols: int, threshold: float, common: dict) -> CorrelationMatrix:
    if not len(values):
        return CorrelationMatrix(**common, symbol_count=symbols, pair_count=0, threshold=threshold, pairs_above_threshold=0)
    v = np.clip(values, -1.0, 1.0)
    return CorrelationMatrix(
        **common, symbol_count=symbols, pair_count=len(v),
        mean_correlation=float(v.mean()), median_correlation=float(np.median(v)), stddev_correlation=float(v.std()),
        min_correlation=float(v.min()), max_correlation=float(v.max()), mean_abs_correlation=float(np.abs(v).mean()),
        threshold=threshold, pairs_above_threshold=int((np.abs(v) >= threshold).sum()),
    )


def analysis(names: list[str], ia: np.ndarray, ib: np.ndarray, values: np.ndarray, group_count: int, threshold: float,
             regime: str | None, common: dict) -> CorrelationAnalysis:
    """A snapshot's summary for one window of the symbols ``names``: over the pairs
    ``(names[ia[k]], names[ib[k]])`` with a value (``values[k]`` not NaN, clipped to
    [-1, 1]), the mean, the population standard deviation ``sqrt(mean((v - mean)^2))``,
    and the pairs of the highest and the lowest value (the first in the given order on a
    tie)."""
    valid = np.flatnonzero(~np.isnan(values))
    head = dict(common, symbol_count=len(names), pair_count=len(valid), group_count=group_count, threshold=threshold, regime=regime)
    if not len(valid):
        return CorrelationAnalysis(**head)
    v = np.clip(values[valid], -1.0, 1.0)
    hi, lo = valid[int(np.argmax(v))], valid[int(np.argmin(v))]
    return CorrelationAnalysis(
        **head, mean_correlation=float(v.mean()), stddev_correlation=float(v.std()),
        most_correlated_a=names[ia[hi]], most_correlated_b=names[ib[hi]], most_correlated_value=float(v.max()),
        least_correlated_a=names[ia[lo]], least_correlated_b=names[ib[lo]], least_correlated_value=float(v.min()),
    )


def _groups(names: list[str], corr: np.ndarray, strong: np.ndarray, ia: np.ndarray, ib: np.ndarray, threshold: float, common: dict) -> list[CorrelationRecord]:
    """Connected components of the strong pairs, numbered by size (largest first), then name."""
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(ia[strong].tolist(), ib[strong].tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, list[int]] = {}
    for i in range(len(names)):
        comps.setdefault(root(i), []).append(i)
    groups = sorted((m for m in comps.values() if len(m) > 1), key=lambda m: (-len(m), names[m[0]]))
    out: list[CorrelationRecord] = []
    for no, members in enumerate(groups):
        sub = np.abs(corr[np.ix_(members, members)])
        pairs = sub[np.triu_indices(len(members), 1)]
        pairs = np.minimum(pairs[~np.isnan(pairs)], 1.0)
        out.append(CorrelationGroup(
            **common, group_no=no, threshold=threshold, member_count=len(members),
            mean_abs_correlation=float(pairs.mean()) if len(pairs) else None,
            min_abs_correlation=float(pairs.min()) if len(pairs) else None,
        ))
        np.fill_diagonal(sub, np.nan)
        for k, i in enumerate(members):
            row = np.minimum(sub[k][~np.isnan(sub[k])], 1.0)
            out.append(CorrelationGroupMember(**common, group_no=no, symbol=names[i], mean_abs_correlation=float(row.mean()) if len(row) else None))
    return out
