"""Market regime per (symbol, timeframe): deterministic, configurable, with hysteresis.

The rule, evaluated on every bar from that bar's indicator values:

1. **Raw regime** (the thresholds depend on the regime currently held: hysteresis):
   - ``volatile`` when ``volatility_20d`` ranks at or above ``volatile_percentile``
     among the last ``volatility_window_bars`` values (rank = share of the window at
     or below the current value, the current value included) and is at least
     ``volatile_min_ratio`` times the window's median (so that a market of steady
     noise, whose rank is high one bar in ten, is not called volatile); a
     ``volatile`` regime holds while the rank stays at or above
     ``volatile_percentile - percentile_margin``;
   - else ``trending_up`` when ``adx_14 >= trend_adx``, ``plus_di_14 > minus_di_14``
     and the EMA(20) rose over the last ``slope_bars`` bars by more than
     ``min_slope_per_bar`` (relative change per bar); ``trending_down`` mirrored; a
     trend holds while ``adx_14 >= trend_adx - adx_margin`` and its direction holds;
   - else ``ranging``.
2. **Confirmation.** The first raw regime after warm-up is taken at once. After that
   a different raw regime replaces the held one only once it has been the raw regime
   for ``confirm_bars`` bars in a row. With the margins above, a value hovering at a
   threshold cannot flip the regime bar to bar.
3. **Confidence** in [0, 1] of the held regime on this bar: 0.5 at its entry
   threshold, linear to 1 at ``full_confidence_adx`` (trending), at
   ``ranging_full_confidence_adx`` (ranging, counting down from ``trend_adx``) or at
   rank 1 (volatile), and below 0.5 down to 0 while a regime is only held by its
   margin or awaits confirmation of its successor.

No reading (``regime=None``) until ADX, the DIs, ``slope_bars + 1`` EMA values and
``min_volatility_samples`` volatility values exist. Only event order matters, so
replays, batches and restarts (state restored from msgpack) give the same readings.

The numeric rule is one numba kernel (like ``streams.indicators``) over the state's
bytes, which keep the volatility window in its ring and its sorted order, so that a
detector built from a state for every bar costs no sort; ``streams.frame`` runs it in
the same compiled call as the indicators.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec
import numpy as np
from numba import njit, types

from tickwire.schemas.market import REGIMES
# Indicator values a change of regime carries, for market_regime_history.
DECIDING = ("adx_14", "plus_di_14", "minus_di_14", "ema_20", "ema_50", "atr_14", "rsi_14", "volatility_20d")
CODES = {None: -1, **{name: code for code, name in enumerate(REGIMES)}}
_UP, _DOWN, _RANGING, _VOLATILE = range(4)  # the kernel's codes: indices into REGIMES
_MAX_WINDOW = 65_536  # the sorted order is stored as uint16 ring slots

# Layout of RegimeState.data: float64 header, EMA ring, volatility ring, then the
# volatility ring's slots in ascending order of value (uint16, padded to whole float64s).
# A ring is kept as its next slot and how many values it holds: no division per bar.
_EMA_SLOTS = 0  # slope_bars + 1
_WINDOW = 1  # volatility_window_bars
_EMA_NEXT = 2
_EMA_COUNT = 3
_VOLATILITY_NEXT = 4
_VOLATILITY_COUNT = 5
_CANDIDATE = 6  # code of the raw regime awaiting confirmation, -1 for none
_CANDIDATE_BARS = 7
_HEADER = 8
# RegimeConfig as the kernel's array (``compiled_config``).
_TREND_ADX, _ADX_MARGIN, _FULL_ADX, _RANGING_FULL_ADX, _SLOPE_BARS, _MIN_SLOPE = range(6)
_WINDOW_BARS, _MIN_SAMPLES, _VOLATILE_PERCENTILE, _PERCENTILE_MARGIN, _VOLATILE_MIN_RATIO, _CONFIRM_BARS = range(6, 12)


class RegimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the rule above; ADX in points (0..100), ranks in 0..1."""

    trend_adx: float = 25.0
    adx_margin: float = 5.0
    full_confidence_adx: float = 45.0
    ranging_full_confidence_adx: float = 15.0
    slope_bars: int = 5
    min_slope_per_bar: float = 0.0
    volatility_window_bars: int = 100
    min_volatility_samples: int = 20
    volatile_percentile: float = 0.9
    percentile_margin: float = 0.1
    volatile_min_ratio: float = 1.5
    confirm_bars: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.ranging_full_confidence_adx < self.trend_adx < self.full_confidence_adx <= 100:
            raise ValueError("need 0 < ranging_full_confidence_adx < trend_adx < full_confidence_adx <= 100")
        if not 0 <= self.adx_margin < self.trend_adx:
            raise ValueError("need 0 <= adx_margin < trend_adx")
        if self.slope_bars < 1 or self.confirm_bars < 1:
            raise ValueError("slope_bars and confirm_bars must be at least 1")
        if not 1 <= self.min_volatility_samples <= self.volatility_window_bars:
            raise ValueError("need 1 <= min_volatility_samples <= volatility_window_bars")
        if not 0 < self.volatile_percentile < 1 or not 0 <= self.percentile_margin < self.volatile_percentile:
            raise ValueError("need 0 < volatile_percentile < 1 and 0 <= percentile_margin < volatile_percentile")
        if self.volatile_min_ratio < 0:
            raise ValueError("volatile_min_ratio must not be negative")
        if self.volatility_window_bars > _MAX_WINDOW:
            raise ValueError(f"volatility_window_bars must be at most {_MAX_WINDOW}")

    def as_details(self) -> dict[str, float | int]:
        """The parameters, for the history row's ``details``: a row says which rule decided it."""
        return msgspec.structs.asdict(self)


class RegimeState(msgspec.Struct, array_like=True):
    """Bounded: ``slope_bars + 1`` EMAs and ``volatility_window_bars`` volatilities.

    ``data`` (layout above, native byte order) is laid out by the detector on its first
    bar, again if its configuration changes the window sizes; bytes keep it small and
    exact through msgpack.
    """

    regime: str | None = None
    since: datetime | None = None  # when the held regime took effect
    data: bytearray = msgspec.field(default_factory=bytearray)

    @property
    def emas(self) -> list[float]:
        """The EMAs kept for the slope, oldest first."""
        return self._ring(_EMA_SLOTS, _EMA_NEXT, _EMA_COUNT, _HEADER)

    @property
    def volatilities(self) -> list[float]:
        """The volatility window, oldest first."""
        return self._ring(_WINDOW, _VOLATILITY_NEXT, _VOLATILITY_COUNT, _HEADER + self._header()[_EMA_SLOTS] if self.data else 0)

    def _header(self) -> list[int]:
        return [int(x) for x in np.frombuffer(self.data, np.float64, _HEADER)]

    def _ring(self, size_at: int, next_at: int, count_at: int, start: int) -> list[float]:
        if not self.data:
            return []
        header = self._header()
        size, end, count = header[size_at], header[next_at], header[count_at]
        ring = np.frombuffer(self.data, np.float64, size, 8 * start).tolist()
        return [ring[i % size] for i in range(end - count, end)]


class RegimeReading(msgspec.Struct, frozen=True):
    """The regime after one bar.

    On a change (``changed``) it carries what a ``market_regime_history`` row needs:
    ``previous`` and ``previous_since`` (None for a symbol's first regime), the
    deciding indicator values (``DECIDING`` names, plus ``close`` and
    ``volatility_percentile``) and ``details`` (EMA slope and the rule's parameters).
    """

    ts: datetime
    regime: str | None
    confidence: float | None
    changed: bool = False
    previous: str | None = None
    previous_since: datetime | None = None
    values: dict[str, float | None] | None = None
    details: dict[str, float | int] | None = None


@njit(cache=True)
def _classify(cfg, held, adx, plus_di, minus_di, slope, rank, ratio):
    if held == _VOLATILE:
        if rank >= cfg[_VOLATILE_PERCENTILE] - cfg[_PERCENTILE_MARGIN]:
            return _VOLATILE
    elif rank >= cfg[_VOLATILE_PERCENTILE] and ratio >= cfg[_VOLATILE_MIN_RATIO]:
        return _VOLATILE
    up = plus_di > minus_di and slope > cfg[_MIN_SLOPE]
    down = minus_di > plus_di and slope < -cfg[_MIN_SLOPE]
    # The margin keeps a trend, never starts one, nor turns it round.
    threshold = cfg[_TREND_ADX] - cfg[_ADX_MARGIN] if (held == _UP and up) or (held == _DOWN and down) else cfg[_TREND_ADX]
    if adx >= threshold:
        if up:
            return _UP
        if down:
            return _DOWN
    return _RANGING


@njit(cache=True)
def _confidence(cfg, regime, adx, rank):
    if regime == _VOLATILE:
        excess = (rank - cfg[_VOLATILE_PERCENTILE]) / (1.0 - cfg[_VOLATILE_PERCENTILE])
    elif regime == _RANGING:
        excess = (cfg[_TREND_ADX] - adx) / (cfg[_TREND_ADX] - cfg[_RANGING_FULL_ADX])
    else:
        excess = (adx - cfg[_TREND_ADX]) / (cfg[_FULL_ADX] - cfg[_TREND_ADX])
    return min(1.0, max(0.0, 0.5 + 0.5 * excess))


@njit(cache=True)
def _nan(x):
    if x is None:
        return np.nan
    return x


@njit(cache=True)
def _views(data, cfg):
    """``data`` as (header, EMA ring, volatility ring, order); ``data`` must be laid out
    for ``cfg`` (``laid_out``): the kernels index it unchecked."""
    slots = np.int64(cfg[_SLOPE_BARS]) + 1
    floats = _HEADER + slots + np.int64(cfg[_WINDOW_BARS])
    f = np.frombuffer(data, np.float64)
    return f, f[_HEADER : _HEADER + slots], f[_HEADER + slots : floats], np.frombuffer(data, np.uint16)[4 * floats :]


@njit(cache=True)
def laid_out(data, cfg):
    slots = np.int64(cfg[_SLOPE_BARS]) + 1
    window = np.int64(cfg[_WINDOW_BARS])
    if len(data) != 8 * (_HEADER + slots + window) + 2 * _order_slots(window):
        return False
    f = np.frombuffer(data, np.float64)
    return f[_EMA_SLOTS] == slots and f[_WINDOW] == window


@njit(cache=True)
def _order_slots(window):
    """The order's length: whole float64s, so that ``data`` is an array of them."""
    return (window + 3) // 4 * 4


@njit(cache=True)
def _measures(f, emas, ring, order, cfg, volatility, at_or_below):
    """(rank of ``volatility`` in the window, given how many values are at or below it;
    its ratio to the window's median; EMA slope per bar)."""
    n = np.int64(f[_VOLATILITY_COUNT])
    median = ring[order[n // 2]]
    oldest = np.int64(f[_EMA_NEXT])  # the ring is full
    newest = (oldest if oldest else len(emas)) - 1
    slope = (emas[newest] / emas[oldest] - 1.0) / cfg[_SLOPE_BARS]
    return at_or_below / n, volatility / median if median != 0.0 else np.inf, slope


_VALUE = types.optional(types.float64)
_DATA = types.ByteArray(types.uint8, 1, "C")
CHANGED = 4  # added to the code of a regime this bar changed to


@njit(cache=True)
def rule(data, cfg, held, ema, volatility, adx, plus_di, minus_di):
    """``_step`` on NaN-for-None values, ``data`` already laid out for ``cfg``; also run by
    ``streams.frame`` on the same bar as the indicators."""
    nan = np.nan
    f, emas, ring, order = _views(data, cfg)
    slots, window = len(emas), len(ring)

    if ema == ema:
        slot = np.int64(f[_EMA_NEXT])
        emas[slot] = ema
        f[_EMA_NEXT] = slot + 1 if slot + 1 < slots else 0
        if f[_EMA_COUNT] < slots:
            f[_EMA_COUNT] += 1.0
    n = np.int64(f[_VOLATILITY_COUNT])
    k = 0  # where this volatility lands in the order, after any equal values: bisect_right - 1
    if volatility == volatility:
        slot = np.int64(f[_VOLATILITY_NEXT])
        f[_VOLATILITY_NEXT] = slot + 1 if slot + 1 < window else 0
        if n < window:
            k = n
            n += 1
            f[_VOLATILITY_COUNT] = n
        else:  # the oldest value's place in the order, found by its value
            old = ring[slot]
            below = 0
            above = n
            while below < above:
                middle = (below + above) // 2
                if ring[order[middle]] < old:
                    below = middle + 1
                else:
                    above = middle
            k = below
            while order[k] != slot and k + 1 < n:  # bounded even on a corrupt state
                k += 1
            while k + 1 < n and ring[order[k + 1]] <= volatility:
                order[k] = order[k + 1]
                k += 1
        ring[slot] = volatility
        while k > 0 and ring[order[k - 1]] > volatility:
            order[k] = order[k - 1]
            k -= 1
        order[k] = slot
    if adx != adx or plus_di != plus_di or minus_di != minus_di or volatility != volatility or f[_EMA_COUNT] < slots or n < cfg[_MIN_SAMPLES]:
        return -1, nan

    rank, ratio, slope = _measures(f, emas, ring, order, cfg, volatility, k + 1)
    raw = _classify(cfg, held, adx, plus_di, minus_di, slope, rank, ratio)
    if raw == held:
        f[_CANDIDATE] = -1.0
        f[_CANDIDATE_BARS] = 0.0
        return held, _confidence(cfg, held, adx, rank)
    bars = f[_CANDIDATE_BARS] + 1.0 if raw == f[_CANDIDATE] else 1.0
    if held != -1 and bars < cfg[_CONFIRM_BARS]:
        f[_CANDIDATE] = raw
        f[_CANDIDATE_BARS] = bars
        return held, _confidence(cfg, held, adx, rank)
    f[_CANDIDATE] = -1.0
    f[_CANDIDATE_BARS] = 0.0
    return raw + CHANGED, _confidence(cfg, raw, adx, rank)


@njit((_DATA, types.float64[::1], types.int64, _VALUE, _VALUE, _VALUE, _VALUE, _VALUE), cache=True)
def _step(data, cfg, held, ema, volatility, adx, plus_di, minus_di):
    """One bar. Returns (code, confidence): code the held regime's index, plus
    ``CHANGED`` if it changed on this bar; -1: no reading yet; -2: ``data`` is not laid
    out for ``cfg`` (and was left as it was). Two numbers only: boxing each returned
    value costs."""
    if not laid_out(data, cfg):
        return -2, np.nan
    return rule(data, cfg, held, _nan(ema), _nan(volatility), _nan(adx), _nan(plus_di), _nan(minus_di))


@njit((_DATA, types.float64[::1], types.float64), cache=True)
def _change_measures(data, cfg, volatility):
    """``_measures`` after the ``_step`` of a bar that changed the regime, for its history row."""
    f, emas, ring, order = _views(data, cfg)
    n = np.int64(f[_VOLATILITY_COUNT])
    below = 0  # bisect_right over the order
    above = n
    while below < above:
        middle = (below + above) // 2
        if volatility < ring[order[middle]]:
            above = middle
        else:
            below = middle + 1
    return _measures(f, emas, ring, order, cfg, volatility, below)


# The compiled function itself: the dispatcher's type matching would cost more than the bar.
_STEP = _step.overloads[_step.signatures[0]].entry_point
_CHANGE_MEASURES = _change_measures.overloads[_change_measures.signatures[0]].entry_point
_CONFIGS: dict[int, tuple[RegimeConfig, np.ndarray, dict[str, float | int]]] = {}


def compiled_config(config: RegimeConfig) -> tuple[RegimeConfig, np.ndarray, dict[str, float | int]]:
    """(config, the kernel's view of it, its ``as_details``), cached by identity (hashing
    a config costs more than a bar): the worker builds a detector for every bar."""
    cached = _CONFIGS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached
    if len(_CONFIGS) >= 64:
        _CONFIGS.clear()
    cfg = np.array([
        config.trend_adx, config.adx_margin, config.full_confidence_adx, config.ranging_full_confidence_adx,
        config.slope_bars, config.min_slope_per_bar, config.volatility_window_bars, config.min_volatility_samples,
        config.volatile_percentile, config.percentile_margin, config.volatile_min_ratio, config.confirm_bars,
    ], dtype=np.float64)
    cached = _CONFIGS[id(config)] = config, cfg, config.as_details()
    return cached


class RegimeDetector:
    """Feed each bar's indicator values in event order; read the regime."""

    __slots__ = ("config", "state", "_cfg", "_details")

    def __init__(self, config: RegimeConfig | None = None, state: RegimeState | None = None) -> None:
        self.config = config or RegimeConfig()
        self.state = state or RegimeState()
        # The kernel writes into these bytes (and checks their layout): they must be writable.
        if type(self.state.data) is not bytearray:
            raise ValueError("RegimeState.data must be a bytearray")
        _, self._cfg, self._details = compiled_config(self.config)

    def update(self, ts: datetime, close: float, values: Mapping[str, float | None]) -> RegimeReading:
        """One bar: its event time, close and ``Indicators.update`` values."""
        s = self.state
        code, confidence = _STEP(
            s.data, self._cfg, CODES[s.regime],
            values["ema_20"], values["volatility_20d"], values["adx_14"], values["plus_di_14"], values["minus_di_14"],
        )
        if code < 0:
            if code == -2:  # the state was left as it was
                lay_out(s, self.config)
                return self.update(ts, close, values)
            return RegimeReading(ts, None, None)
        if code < CHANGED:
            return RegimeReading(ts, REGIMES[code], confidence)
        return changed_reading(s, self._cfg, self._details, ts, close, values, code, confidence)


def changed_reading(state: RegimeState, cfg: np.ndarray, details: dict, ts: datetime, close: float, values: Mapping[str, float | None],
            code: int, confidence: float) -> RegimeReading:
    """The reading of a bar whose kernel step returned a change (``code >= CHANGED``);
    moves ``state`` to the new regime."""
    regime = REGIMES[code - CHANGED]
    rank, ratio, slope = _CHANGE_MEASURES(state.data, cfg, values["volatility_20d"])
    held, previous_since = state.regime, state.since
    state.regime, state.since = regime, ts
    deciding = {name: values[name] for name in DECIDING}
    deciding["close"] = close
    deciding["volatility_percentile"] = rank
    return RegimeReading(
        ts=ts,
        regime=regime,
        confidence=confidence,
        changed=True,
        previous=held,
        previous_since=previous_since,
        values=deciding,
        details={"ema_slope_per_bar": slope, "volatility_to_median": ratio, **details},
    )


def lay_out(s: RegimeState, cfg: RegimeConfig) -> None:
    """Size ``s.data`` for ``cfg`` (a new state, or new window sizes), keeping the newest
    values and any candidate regime."""
    slots, window = cfg.slope_bars + 1, cfg.volatility_window_bars
    emas, volatilities = s.emas[-slots:], s.volatilities[-window:]
    candidate = s._header()[_CANDIDATE : _CANDIDATE_BARS + 1] if s.data else [-1, 0]
    floats = np.zeros(_HEADER + slots + window)
    floats[:_HEADER] = [slots, window, len(emas) % slots, len(emas), len(volatilities) % window, len(volatilities), *candidate]
    floats[_HEADER : _HEADER + len(emas)] = emas
    floats[_HEADER + slots : _HEADER + slots + len(volatilities)] = volatilities
    order = np.zeros(_order_slots(window), np.uint16)
    order[: len(volatilities)] = np.argsort(volatilities, kind="stable")
    s.data = bytearray(floats.tobytes() + order.tobytes())
