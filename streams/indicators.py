"""Streaming technical indicators, exact to TA-Lib's defaults (DESIGN rule 7).

Each indicator repeats TA-Lib's own arithmetic in TA-Lib's order (running sums,
Wilder smoothing, the seeding of every first value and TA-Lib's 1e-8 "is zero"
guards), so that Tickwire's values are bit-for-bit or within rounding of what a
user gets from ``talib`` on the same bars. A value is ``None`` on exactly the bars
where TA-Lib returns NaN.

==================  ===================================================================
field               definition (TA-Lib function and first bar index, 0-based)
==================  ===================================================================
ema_20, ema_50      ``EMA``: SMA of the first N closes, then ``(c - e) * 2/(N+1) + e``; 19, 49
rsi_14              ``RSI``: Wilder averages of gains and losses; 14
atr_14              ``ATR``: Wilder average of the true range, seeded by its SMA; 14
macd_*              ``MACD(12, 26, 9)``: both EMAs first valued at bar 25 (the fast one
                    seeded by the SMA of closes 14..25, as TA-Lib aligns it), signal an
                    EMA(9) of the line; all three from 33
bb_*                ``BBANDS(20, 2, 2, SMA)``: running-sum SMA +- 2 population stdevs; 19
adx_14, ±di_14      ``ADX``, ``PLUS_DI``, ``MINUS_DI``: Wilder-smoothed DM and TR; DI from
                    14, ADX from 27
vwap                not TA-Lib: sum(price * volume) / sum(volume) since the start of the
                    anchor period (UTC day by default) holding the bar; price is the
                    bar's own ``vwap`` when the feed sends one, else the typical price
                    (h + l + c) / 3; None while the period's volume is 0
volatility_20d      not TA-Lib: SAMPLE standard deviation (ddof=1) of the last 20 log
                    returns ln(c_t / c_t-1), per bar, not annualised; 20
==================  ===================================================================

The arithmetic is one numba kernel over a flat float64 array (``IndicatorState.data``,
viewed in place, never copied): per-bar Python was half as fast as TA-Lib's C stream
handles. No fastmath, so IEEE order is kept. ``Indicators.update`` (one bar) and
``Indicators.update_many`` (arrays) run the same step, so they agree to the bit
whatever the batch boundaries, and a restart from the state's msgpack bytes
continues exactly. The kernels compile at first import and are cached in
``__pycache__``. Inputs are assumed validated (finite, positive prices): ``Bar.validate``
and the worker's event-time checks run before a bar reaches this module.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import msgspec
import numpy as np
from numba import njit, types
from numba.extending import overload

from tickwire.schemas.market import Bar

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# EMA smoothing factors, TA-Lib's 2 / (N + 1).
_K20 = 2.0 / 21
_K50 = 2.0 / 51
_K12 = 2.0 / 13
_K26 = 2.0 / 27
_K9 = 2.0 / 10
# A window's shifted sums are recomputed once they fall this far below their peak:
# their rounding is relative to the peak, so this caps it at ~1e-10 of the variance.
_RECOMPUTE_BELOW = 1e-5

KEYS = (
    "ema_20",
    "ema_50",
    "rsi_14",
    "atr_14",
    "macd_line",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "vwap",
    "volatility_20d",
)


class _Layout:
    """Hands out an array's float64 slots in the order they are declared: each offset is
    the sum of the widths declared before it, and ``size`` their total. The offsets are
    plain module ints, which numba compiles into the kernels as constants."""

    def __init__(self) -> None:
        self.size = 0

    def slot(self, width: int = 1) -> int:
        offset = self.size
        self.size += width
        return offset


# A window: the last _WINDOW values (push i in slot i % _WINDOW), then its sums.
_WINDOW = 20  # Bollinger's and the volatility's period
_window = _Layout()
_window.slot(_WINDOW)  # the values, from offset 0
_SHIFT = _window.slot()  # the sums below are taken about this recent mean
_SUM = _window.slot()
_SUM_SQ = _window.slot()
_PEAK_SQ = _window.slot()  # largest sum_sq since the last recompute: bounds its rounding
_LAST = _window.slot()
_REPEATS = _window.slot()  # how many pushes in a row equalled the one before

# The state array (``IndicatorState.data``). Stored states are these bytes in this order:
# a new slot goes last, or the ones after it would move. While an indicator warms up
# its slot holds the running sum TA-Lib seeds it from. Counters are floats too: exact
# below 2**53.
_state = _Layout()
_COUNT = _state.slot()  # bars seen
_PREV_HIGH = _state.slot()
_PREV_LOW = _state.slot()
_PREV_CLOSE = _state.slot()
_EMA20 = _state.slot()
_EMA50 = _state.slot()
_RSI_GAIN = _state.slot()
_RSI_LOSS = _state.slot()
_ATR = _state.slot()
_MACD_FAST = _state.slot()
_MACD_SLOW = _state.slot()
_MACD_SIGNAL = _state.slot()
_BB_SUM = _state.slot()  # TA-Lib's running SMA total
_PLUS_DM = _state.slot()
_MINUS_DM = _state.slot()
_TRUE_RANGE = _state.slot()
_ADX = _state.slot()
_VWAP_PERIOD = _state.slot()  # index of the anchor period being accumulated; NaN before the first bar
_VWAP_PV = _state.slot()
_VWAP_VOLUME = _state.slot()
_CLOSES = _state.slot(_window.size)  # the last 20 closes (Bollinger)
_RETURNS = _state.slot(_window.size)  # the last 20 log returns (volatility)
STATE_SIZE = _state.size  # float64s

_INITIAL = np.zeros(STATE_SIZE)
_INITIAL[[_VWAP_PERIOD, _CLOSES + _LAST, _RETURNS + _LAST]] = np.nan
_INITIAL = _INITIAL.tobytes()


@njit(cache=True)
def _push(s, w, slot, x, full):
    """Store ``x`` at ``slot`` of the window at ``w``; return its sum of squared deviations.

    Sums about a nearby mean keep the variance accurate where raw sums of squares
    cancel catastrophically (quiet prices, tiny returns). They are recomputed from the
    values every 20 pushes and whenever they shrank a lot, so rounding never builds up
    across history; _WINDOW equal values give exactly zero.
    """
    if full:
        k = s[w + _SHIFT]
        a = x - k
        b = s[w + slot] - k
        s[w + _SUM] += a - b
        sum_sq = s[w + _SUM_SQ] + (a * a - b * b)
    else:
        sum_sq = 0.0
    s[w + slot] = x
    if x == s[w + _LAST]:
        s[w + _REPEATS] += 1.0
    else:
        s[w + _REPEATS] = 0.0
        s[w + _LAST] = x
    if slot == _WINDOW - 1 or sum_sq < s[w + _PEAK_SQ] * _RECOMPUTE_BELOW:
        total = 0.0
        for j in range(_WINDOW):
            total += s[w + j]
        k = total / _WINDOW
        total = 0.0
        sum_sq = 0.0
        for j in range(_WINDOW):
            d = s[w + j] - k
            total += d
            sum_sq += d * d
        s[w + _SHIFT] = k
        s[w + _SUM] = total
        s[w + _PEAK_SQ] = sum_sq
    elif sum_sq > s[w + _PEAK_SQ]:
        s[w + _PEAK_SQ] = sum_sq
    s[w + _SUM_SQ] = sum_sq
    if s[w + _REPEATS] >= _WINDOW - 1:
        return 0.0
    m2 = sum_sq - s[w + _SUM] * s[w + _SUM] / _WINDOW
    return m2 if m2 > 0.0 else 0.0


@njit(cache=True)
def step(s, ts_us, h, l, c, volume, vwap, anchor_us, offset_us):
    """One bar, warm-up included, following TA-Lib's seeding bar by bar: the values in
    ``KEYS`` order, NaN for None. Public for kernels that run it with their own steps
    (``streams.frame``)."""
    nan = np.nan
    i = np.int64(s[_COUNT])
    s[_COUNT] = i + 1
    e20 = e50 = rsi = atr = ml = ms = mh = bu = bm = bl = adx = pdi = mdi = vol = nan

    price_volume = (vwap if vwap == vwap else (h + l + c) / 3.0) * volume
    period = float((ts_us - offset_us) // anchor_us)
    if period != s[_VWAP_PERIOD]:
        s[_VWAP_PERIOD] = period
        s[_VWAP_PV] = price_volume
        s[_VWAP_VOLUME] = volume
    else:
        s[_VWAP_PV] += price_volume
        s[_VWAP_VOLUME] += volume
    vw = s[_VWAP_PV] / s[_VWAP_VOLUME] if s[_VWAP_VOLUME] > 0.0 else nan

    if i >= 19:
        if i == 19:
            e20 = (s[_EMA20] + c) / 20
        else:
            e20 = (c - s[_EMA20]) * _K20 + s[_EMA20]
        s[_EMA20] = e20
        if i >= 49:
            if i == 49:
                e50 = (s[_EMA50] + c) / 50
            else:
                e50 = (c - s[_EMA50]) * _K50 + s[_EMA50]
            s[_EMA50] = e50
        else:
            s[_EMA50] += c
    else:
        s[_EMA20] += c
        s[_EMA50] += c

    # TA-Lib starts both MACD EMAs at bar 25, the fast one seeded by closes 14..25.
    if i >= 25:
        if i == 25:
            fast = (s[_MACD_FAST] + c) / 12
            slow = (s[_MACD_SLOW] + c) / 26
        else:
            fast = (c - s[_MACD_FAST]) * _K12 + s[_MACD_FAST]
            slow = (c - s[_MACD_SLOW]) * _K26 + s[_MACD_SLOW]
        s[_MACD_FAST] = fast
        s[_MACD_SLOW] = slow
        line = fast - slow
        if i >= 33:
            if i == 33:
                ms = (s[_MACD_SIGNAL] + line) / 9
            else:
                ms = (line - s[_MACD_SIGNAL]) * _K9 + s[_MACD_SIGNAL]
            s[_MACD_SIGNAL] = ms
            ml = line
            mh = line - ms
        else:
            s[_MACD_SIGNAL] += line
    else:
        if i >= 14:
            s[_MACD_FAST] += c
        s[_MACD_SLOW] += c

    # Bollinger: TA-Lib's running-sum SMA, the oldest close removed after use.
    slot = i % 20
    m2 = _push(s, _CLOSES, slot, c, i >= 20)
    s[_BB_SUM] += c
    if i >= 19:
        bm = s[_BB_SUM] / 20
        s[_BB_SUM] -= s[_CLOSES + (slot + 1) % 20]
        band = math.sqrt(m2 / 20) * 2.0
        bu = bm + band
        bl = bm - band

    if i:
        pc = s[_PREV_CLOSE]
        diff = c - pc
        if i > 14:
            loss = s[_RSI_LOSS] * 13.0
            gain = s[_RSI_GAIN] * 13.0
            if diff < 0:
                loss -= diff
            else:
                gain += diff
            loss = loss / 14
            gain = gain / 14
        else:
            loss = s[_RSI_LOSS]
            gain = s[_RSI_GAIN]
            if diff < 0:
                loss -= diff
            else:
                gain += diff
            if i == 14:
                loss /= 14
                gain /= 14
        s[_RSI_LOSS] = loss
        s[_RSI_GAIN] = gain
        if i >= 14:
            total = gain + loss
            rsi = 100.0 * (gain / total) if total != 0.0 else 0.0

        tr = h - l
        t = abs(h - pc)
        if t > tr:
            tr = t
        t = abs(l - pc)
        if t > tr:
            tr = t
        if i > 14:
            atr = (s[_ATR] * 13.0 + tr) / 14
            s[_ATR] = atr
        elif i == 14:
            atr = (s[_ATR] + tr) / 14
            s[_ATR] = atr
        else:
            s[_ATR] += tr

        # TA-Lib sums DM and TR over bars 1..13, then smooths from bar 14 on.
        diff_p = h - s[_PREV_HIGH]
        diff_m = s[_PREV_LOW] - l
        plus_dm = s[_PLUS_DM]
        minus_dm = s[_MINUS_DM]
        true_range = s[_TRUE_RANGE]
        if i >= 14:
            minus_dm -= minus_dm / 14
            plus_dm -= plus_dm / 14
            true_range = true_range - true_range / 14 + tr
        else:
            true_range = true_range + tr
        s[_TRUE_RANGE] = true_range
        if diff_m > 0 and diff_p < diff_m:
            minus_dm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            plus_dm += diff_p
        s[_PLUS_DM] = plus_dm
        s[_MINUS_DM] = minus_dm
        if i >= 14:
            dx = nan
            if true_range != 0.0:
                mdi = 100.0 * (minus_dm / true_range)
                pdi = 100.0 * (plus_dm / true_range)
                total = mdi + pdi
                if total != 0.0:
                    dx = 100.0 * (abs(mdi - pdi) / total)
            else:
                pdi = mdi = 0.0
            # TA-Lib leaves the ADX as it was on a bar without a DX (NaN here).
            if i >= 27:
                if i == 27:
                    adx = (s[_ADX] + dx if dx == dx else s[_ADX]) / 14
                elif dx == dx:
                    adx = (s[_ADX] * 13.0 + dx) / 14
                else:
                    adx = s[_ADX]
                s[_ADX] = adx
            elif dx == dx:
                s[_ADX] += dx

        j = i - 1
        m2 = _push(s, _RETURNS, j % 20, math.log(c / pc), j >= 20)
        if j >= 19:
            vol = math.sqrt(m2 / 19)
    s[_PREV_HIGH] = h
    s[_PREV_LOW] = l
    s[_PREV_CLOSE] = c
    return e20, e50, rsi, atr, ml, ms, mh, bu, bm, bl, adx, pdi, mdi, vw, vol


@njit(cache=True)
def _none(x):
    return None if x != x else x


def _nones(values):
    """The floats of a tuple with None for NaN, in numba code: a tuple's width is its type
    there, so the mapping is typed item by item below rather than looped over."""


@overload(_nones)
def _nones_typed(values):
    if len(values) == 1:
        return lambda values: (_none(values[0]),)
    return lambda values: (_none(values[0]),) + _nones(values[1:])


@njit(cache=True)
def nan_for_none(x):
    """An optional float as the kernels take it; public for ``streams.frame``."""
    if x is None:
        return np.nan
    return x


_DATA = types.ByteArray(types.uint8, 1, "C")  # the state's bytes, viewed in the kernel: no copy, no numpy call per bar
_F = types.float64
_I = types.int64
_IN = types.Array(_F, 1, "C", readonly=True)  # writable arrays pass too


@njit((_DATA, _I, _I, _I, _F, _F, _F, _F, types.optional(_F), _I, _I), cache=True)
def _update_one(data, days, seconds, microseconds, h, l, c, volume, vwap, anchor_us, offset_us):
    """``step`` for one bar, its time as the fields of ``ts - epoch`` (cheaper than
    dividing the timedelta in Python); None for NaN, boxed into the tuple ``update`` unpacks."""
    s = np.frombuffer(data, np.float64)
    ts_us = (days * 86_400 + seconds) * 1_000_000 + microseconds
    return _nones(step(s, ts_us, h, l, c, volume, nan_for_none(vwap), anchor_us, offset_us))


@njit((_DATA, types.Array(_I, 1, "C", readonly=True), _IN, _IN, _IN, _IN, _IN, _I, _I, _F[:, ::1]), cache=True)
def _update_many(data, ts_us, high, low, close, volume, vwap, anchor_us, offset_us, out):
    s = np.frombuffer(data, np.float64)
    for n in range(len(close)):
        values = step(s, ts_us[n], high[n], low[n], close[n], volume[n], vwap[n], anchor_us, offset_us)
        for k in range(len(values)):
            out[k, n] = values[k]


# The compiled function itself: the dispatcher's type matching would cost more than the bar.
_UPDATE_ONE = _update_one.overloads[_update_one.signatures[0]].entry_point


def _update_method():
    """``Indicators.update``, compiled from ``KEYS`` as ``collections.namedtuple`` compiles
    its class: it unpacks the kernel's tuple straight into a dict display, which costs
    half of ``dict(zip(KEYS, values))`` (~0.3 us a bar, as much as the kernel) and, unlike
    a helper taking the values, no second call (~0.05 us)."""
    names = ", ".join(f"v{k}" for k in range(len(KEYS)))
    entries = ", ".join(f"{key!r}: v{k}" for k, key in enumerate(KEYS))
    source = f"""def update(self, bar: Bar) -> dict[str, float | None]:
    \"\"\"One closed bar in; its indicator values (Condition field names) out.\"\"\"
    t = bar.ts - _EPOCH
    {names} = _UPDATE_ONE(self.state.data, t.days, t.seconds, t.microseconds, bar.high, bar.low, bar.close,
                          bar.volume, bar.vwap, self._anchor_us, self._offset_us)
    return {{{entries}}}
"""
    namespace = {"Bar": Bar, "_EPOCH": _EPOCH, "_UPDATE_ONE": _UPDATE_ONE}
    exec(source, namespace)
    return namespace["update"]


class IndicatorState(msgspec.Struct, array_like=True):
    """Everything one (symbol, timeframe) needs to continue its indicators.

    ``data`` is the kernel's float64 array (layout above, native byte order) as
    bytes: fixed size, and exact through msgpack.
    """

    vwap_anchor_s: int = 86_400
    vwap_offset_s: int = 0  # anchor periods start at offset + k * anchor, UTC
    data: bytearray = msgspec.field(default_factory=lambda: bytearray(_INITIAL))


class Indicators:
    """All indicators of one (symbol, timeframe); ``update`` returns Condition fields."""

    __slots__ = ("state", "_anchor_us", "_offset_us")

    def __init__(self, state: IndicatorState | None = None, *, vwap_anchor_s: int = 86_400, vwap_offset_s: int = 0) -> None:
        """A new state takes the VWAP anchor given here; a restored one keeps its own."""
        if state is None:
            state = IndicatorState(vwap_anchor_s=vwap_anchor_s, vwap_offset_s=vwap_offset_s)
        if state.vwap_anchor_s <= 0:
            raise ValueError("vwap_anchor_s must be positive")
        # The kernel writes into these bytes unchecked: they must be the whole, writable array.
        if type(state.data) is not bytearray or len(state.data) != 8 * STATE_SIZE:
            raise ValueError(f"IndicatorState.data must be a bytearray of {8 * STATE_SIZE} bytes")
        self.state = state
        self._anchor_us = state.vwap_anchor_s * 1_000_000
        self._offset_us = state.vwap_offset_s * 1_000_000

    update = _update_method()

    def update_many(
        self,
        ts: np.ndarray,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        vwap: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Many bars of this (symbol, timeframe) in time order; NaN where ``update`` says None.

        ``ts`` is int64 epoch microseconds; ``vwap`` is optional (NaN: the bar has none).
        ``open`` is taken so that a bar's columns pass as they are; no indicator here reads it.
        """
        n = len(close)
        if not len(ts) == len(open) == len(high) == len(low) == len(volume) == n or (vwap is not None and len(vwap) != n):
            raise ValueError("all arrays must have the same length")
        f64 = [np.ascontiguousarray(x, dtype=np.float64) for x in (high, low, close, volume)]
        vwap = np.full(n, np.nan) if vwap is None else np.ascontiguousarray(vwap, dtype=np.float64)
        out = np.empty((len(KEYS), n))
        _update_many(self.state.data, np.ascontiguousarray(ts, dtype=np.int64), *f64, vwap, self._anchor_us, self._offset_us, out)
        return dict(zip(KEYS, out))
