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

``Indicators.update`` (one bar) and ``Indicators.update_many`` (arrays) run the same
step function, so they agree to the bit whatever the batch boundaries; the state is
one flat msgspec Struct of fixed size, so a restart from its msgpack bytes continues
exactly. Inputs are assumed validated (finite, positive prices): ``Bar.validate``
and the worker's event-time checks run before a bar reaches this module.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import msgspec
import numpy as np

from schemas.market import Bar

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAN = float("nan")
# Bars after which every indicator is seeded and ``_step_warm`` applies.
_WARM = 50
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


class EmaState(msgspec.Struct, array_like=True):
    period: int
    count: int = 0
    total: float = 0.0  # running sum while seeding
    value: float = float("nan")


class Ema:
    """EMA seeded, like TA-Lib, with the SMA of the first ``period`` values."""

    def __init__(self, period: int, state: EmaState | None = None) -> None:
        if period < 1:
            raise ValueError("period must be at least 1")
        self.state = state or EmaState(period)
        self._k = 2.0 / (period + 1)

    def update(self, x: float) -> float | None:
        s = self.state
        s.count += 1
        if s.count < s.period:
            s.total += x
            return None
        if s.count == s.period:
            s.total += x
            s.value = s.total / s.period
        else:
            s.value = (x - s.value) * self._k + s.value
        return s.value

    def update_many(self, xs: np.ndarray) -> np.ndarray:
        out = np.full(len(xs), np.nan)
        for i, x in enumerate(xs.tolist()):
            value = self.update(x)
            if value is not None:
                out[i] = value
        return out


class WindowState(msgspec.Struct, array_like=True):
    """The last 20 values and their sums taken about ``shift`` (a recent mean).

    Sums about a nearby mean keep the variance accurate where raw sums of squares
    cancel catastrophically (quiet prices, tiny returns). They are recomputed from the
    values every 20 pushes and whenever they shrank a lot, so rounding never builds up
    across history; twenty equal values give exactly zero.
    """

    values: list[float] = msgspec.field(default_factory=lambda: [0.0] * 20)
    shift: float = 0.0
    sum: float = 0.0
    sum_sq: float = 0.0
    peak_sq: float = 0.0  # largest sum_sq since the last recompute: bounds its rounding
    last: float = _NAN
    repeats: int = 0  # how many pushes in a row equalled the one before

    def push(self, slot: int, x: float, full: bool) -> float:
        """Store ``x`` at ``slot``; return the window's sum of squared deviations."""
        values = self.values
        if full:
            k = self.shift
            a = x - k
            b = values[slot] - k
            self.sum += a - b
            sum_sq = self.sum_sq + (a * a - b * b)
        else:
            sum_sq = 0.0
        values[slot] = x
        if x == self.last:
            self.repeats += 1
        else:
            self.repeats = 0
            self.last = x
        if slot == 19 or sum_sq < self.peak_sq * _RECOMPUTE_BELOW:
            self.shift = k = sum(values) / 20
            self.sum = sum([v - k for v in values])
            self.peak_sq = sum_sq = sum([(v - k) * (v - k) for v in values])
        elif sum_sq > self.peak_sq:
            self.peak_sq = sum_sq
        self.sum_sq = sum_sq
        if self.repeats >= 19:
            return 0.0
        m2 = sum_sq - self.sum * self.sum / 20
        return m2 if m2 > 0.0 else 0.0


class IndicatorState(msgspec.Struct, array_like=True):
    """Everything one (symbol, timeframe) needs to continue its indicators.

    Flat on purpose: one attribute hop per access keeps ``update`` fast. While an
    indicator warms up its field holds the running sum TA-Lib seeds it from.
    """

    count: int = 0  # bars seen
    prev_high: float = 0.0
    prev_low: float = 0.0
    prev_close: float = 0.0
    ema_20: float = 0.0
    ema_50: float = 0.0
    rsi_gain: float = 0.0
    rsi_loss: float = 0.0
    atr: float = 0.0
    macd_fast: float = 0.0
    macd_slow: float = 0.0
    macd_signal: float = 0.0
    bb_sum: float = 0.0  # TA-Lib's running SMA total
    closes: WindowState = msgspec.field(default_factory=WindowState)
    plus_dm: float = 0.0
    minus_dm: float = 0.0
    true_range: float = 0.0
    adx: float = 0.0
    vwap_anchor_s: int = 86_400
    vwap_offset_s: int = 0  # anchor periods start at offset + k * anchor, UTC
    vwap_period: int = -(2**62)  # index of the anchor period being accumulated
    vwap_pv: float = 0.0
    vwap_volume: float = 0.0
    returns: WindowState = msgspec.field(default_factory=WindowState)


def _ts_us(ts: datetime) -> int:
    d = ts - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


class Indicators:
    """All indicators of one (symbol, timeframe); ``update`` returns Condition fields."""

    __slots__ = ("state", "_anchor_us", "_offset_us")

    def __init__(self, state: IndicatorState | None = None, *, vwap_anchor_s: int = 86_400, vwap_offset_s: int = 0) -> None:
        """A new state takes the VWAP anchor given here; a restored one keeps its own."""
        if state is None:
            state = IndicatorState(vwap_anchor_s=vwap_anchor_s, vwap_offset_s=vwap_offset_s)
        if state.vwap_anchor_s <= 0:
            raise ValueError("vwap_anchor_s must be positive")
        self.state = state
        self._anchor_us = state.vwap_anchor_s * 1_000_000
        self._offset_us = state.vwap_offset_s * 1_000_000

    def update(self, bar: Bar) -> dict[str, float | None]:
        """One closed bar in; its indicator values (Condition field names) out."""
        vwap = bar.vwap
        volume = float(bar.volume)
        h, l, c = bar.high, bar.low, bar.close
        price_volume = (vwap if vwap is not None else (h + l + c) / 3.0) * volume
        step = self._step_warm if self.state.count >= _WARM else self._step
        e20, e50, rsi, atr, ml, ms, mh, bu, bm, bl, adx, pdi, mdi, vw, vol = step(_ts_us(bar.ts), h, l, c, volume, price_volume)
        return {
            "ema_20": e20,
            "ema_50": e50,
            "rsi_14": rsi,
            "atr_14": atr,
            "macd_line": ml,
            "macd_signal": ms,
            "macd_hist": mh,
            "bb_upper": bu,
            "bb_middle": bm,
            "bb_lower": bl,
            "adx_14": adx,
            "plus_di_14": pdi,
            "minus_di_14": mdi,
            "vwap": vw,
            "volatility_20d": vol,
        }

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
        rows = []
        append = rows.append
        vwaps = vwap.tolist() if vwap is not None else [_NAN] * n
        s = self.state
        step, warm = self._step, self._step_warm
        for t, h, l, c, v, w in zip(ts.tolist(), high.tolist(), low.tolist(), close.tolist(), volume.tolist(), vwaps):
            v = float(v)
            append((warm if s.count >= _WARM else step)(t, h, l, c, v, (w if w == w else (h + l + c) / 3.0) * v))
        out = np.array(rows, dtype=np.float64).reshape(n, len(KEYS))  # None becomes NaN
        return {key: np.ascontiguousarray(out[:, i]) for i, key in enumerate(KEYS)}

    def _vwap(self, ts_us: int, volume: float, price_volume: float) -> float | None:
        s = self.state
        period = (ts_us - self._offset_us) // self._anchor_us
        if period != s.vwap_period:
            s.vwap_period = period
            s.vwap_pv = price_volume
            s.vwap_volume = volume
        else:
            s.vwap_pv += price_volume
            s.vwap_volume += volume
        return s.vwap_pv / s.vwap_volume if s.vwap_volume > 0.0 else None

    def _step(self, ts_us: int, h: float, l: float, c: float, volume: float, price_volume: float) -> tuple:
        """Any bar, warm-up included; follows TA-Lib's seeding bar by bar."""
        s = self.state
        i = s.count
        s.count = i + 1
        e20 = e50 = rsi = atr = ml = ms = mh = bu = bm = bl = adx = pdi = mdi = vol = None
        vw = self._vwap(ts_us, volume, price_volume)

        if i >= 19:
            if i == 19:
                e20 = s.ema_20 = (s.ema_20 + c) / 20
            else:
                e20 = s.ema_20 = (c - s.ema_20) * _K20 + s.ema_20
            if i >= 49:
                if i == 49:
                    e50 = s.ema_50 = (s.ema_50 + c) / 50
                else:
                    e50 = s.ema_50 = (c - s.ema_50) * _K50 + s.ema_50
            else:
                s.ema_50 += c
        else:
            s.ema_20 += c
            s.ema_50 += c

        # TA-Lib starts both MACD EMAs at bar 25, the fast one seeded by closes 14..25.
        if i >= 25:
            if i == 25:
                fast = s.macd_fast = (s.macd_fast + c) / 12
                slow = s.macd_slow = (s.macd_slow + c) / 26
            else:
                fast = s.macd_fast = (c - s.macd_fast) * _K12 + s.macd_fast
                slow = s.macd_slow = (c - s.macd_slow) * _K26 + s.macd_slow
            line = fast - slow
            if i >= 33:
                if i == 33:
                    ms = s.macd_signal = (s.macd_signal + line) / 9
                else:
                    ms = s.macd_signal = (line - s.macd_signal) * _K9 + s.macd_signal
                ml = line
                mh = line - ms
            else:
                s.macd_signal += line
        else:
            if i >= 14:
                s.macd_fast += c
            s.macd_slow += c

        # Bollinger: TA-Lib's running-sum SMA, the oldest close removed after use.
        slot = i % 20
        m2 = s.closes.push(slot, c, i >= 20)
        s.bb_sum += c
        if i >= 19:
            bm = s.bb_sum / 20
            s.bb_sum -= s.closes.values[(slot + 1) % 20]
            band = math.sqrt(m2 / 20) * 2.0
            bu = bm + band
            bl = bm - band

        if i:
            pc = s.prev_close
            diff = c - pc
            if i > 14:
                loss = s.rsi_loss * 13.0
                gain = s.rsi_gain * 13.0
                if diff < 0:
                    loss -= diff
                else:
                    gain += diff
                s.rsi_loss = loss = loss / 14
                s.rsi_gain = gain = gain / 14
            else:
                loss = s.rsi_loss
                gain = s.rsi_gain
                if diff < 0:
                    loss -= diff
                else:
                    gain += diff
                if i == 14:
                    loss /= 14
                    gain /= 14
                s.rsi_loss = loss
                s.rsi_gain = gain
            if i >= 14:
                total = gain + loss
                rsi = 100.0 * (gain / total) if total else 0.0

            tr = h - l
            t = abs(h - pc)
            if t > tr:
                tr = t
            t = abs(l - pc)
            if t > tr:
                tr = t
            if i > 14:
                atr = s.atr = (s.atr * 13.0 + tr) / 14
            elif i == 14:
                atr = s.atr = (s.atr + tr) / 14
            else:
                s.atr += tr

            # TA-Lib sums DM and TR over bars 1..13, then smooths from bar 14 on.
            diff_p = h - s.prev_high
            diff_m = s.prev_low - l
            plus_dm = s.plus_dm
            minus_dm = s.minus_dm
            if i >= 14:
                minus_dm -= minus_dm / 14
                plus_dm -= plus_dm / 14
                true_range = s.true_range
                s.true_range = true_range = true_range - true_range / 14 + tr
            else:
                s.true_range = true_range = s.true_range + tr
            if diff_m > 0 and diff_p < diff_m:
                minus_dm += diff_m
            elif diff_p > 0 and diff_p > diff_m:
                plus_dm += diff_p
            s.plus_dm = plus_dm
            s.minus_dm = minus_dm
            if i >= 14:
                dx = None
                if true_range:
                    mdi = 100.0 * (minus_dm / true_range)
                    pdi = 100.0 * (plus_dm / true_range)
                    total = mdi + pdi
                    if total:
                        dx = 100.0 * (abs(mdi - pdi) / total)
                else:
                    pdi = mdi = 0.0
                # TA-Lib leaves the ADX as it was on a bar without a DX.
                if i >= 27:
                    if i == 27:
                        adx = s.adx = (s.adx + dx if dx is not None else s.adx) / 14
                    elif dx is not None:
                        adx = s.adx = (s.adx * 13.0 + dx) / 14
                    else:
                        adx = s.adx
                elif dx is not None:
                    s.adx += dx

            j = i - 1
            m2 = s.returns.push(j % 20, math.log(c / pc), j >= 20)
            if j >= 19:
                vol = math.sqrt(m2 / 19)
        s.prev_high = h
        s.prev_low = l
        s.prev_close = c
        return e20, e50, rsi, atr, ml, ms, mh, bu, bm, bl, adx, pdi, mdi, vw, vol

    def _step_warm(self, ts_us: int, h: float, l: float, c: float, volume: float, price_volume: float) -> tuple:
        """``_step`` once every indicator is seeded: the same arithmetic without the
        warm-up branches, which is most of the cost of a bar."""
        s = self.state
        i = s.count
        s.count = i + 1
        vw = self._vwap(ts_us, volume, price_volume)

        e20 = s.ema_20 = (c - s.ema_20) * _K20 + s.ema_20
        e50 = s.ema_50 = (c - s.ema_50) * _K50 + s.ema_50
        fast = s.macd_fast = (c - s.macd_fast) * _K12 + s.macd_fast
        slow = s.macd_slow = (c - s.macd_slow) * _K26 + s.macd_slow
        ml = fast - slow
        ms = s.macd_signal = (ml - s.macd_signal) * _K9 + s.macd_signal

        closes = s.closes
        slot = i % 20
        m2 = closes.push(slot, c, True)
        bm = s.bb_sum + c
        s.bb_sum = bm - closes.values[(slot + 1) % 20]
        bm /= 20
        band = math.sqrt(m2 / 20) * 2.0

        pc = s.prev_close
        diff = c - pc
        loss = s.rsi_loss * 13.0
        gain = s.rsi_gain * 13.0
        if diff < 0:
            loss -= diff
        else:
            gain += diff
        s.rsi_loss = loss = loss / 14
        s.rsi_gain = gain = gain / 14
        total = gain + loss
        rsi = 100.0 * (gain / total) if total else 0.0

        tr = h - l
        t = abs(h - pc)
        if t > tr:
            tr = t
        t = abs(l - pc)
        if t > tr:
            tr = t
        atr = s.atr = (s.atr * 13.0 + tr) / 14

        diff_p = h - s.prev_high
        diff_m = s.prev_low - l
        minus_dm = s.minus_dm
        plus_dm = s.plus_dm
        minus_dm -= minus_dm / 14
        plus_dm -= plus_dm / 14
        true_range = s.true_range
        s.true_range = true_range = true_range - true_range / 14 + tr
        if diff_m > 0 and diff_p < diff_m:
            minus_dm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            plus_dm += diff_p
        s.plus_dm = plus_dm
        s.minus_dm = minus_dm
        adx = s.adx
        if true_range:
            mdi = 100.0 * (minus_dm / true_range)
            pdi = 100.0 * (plus_dm / true_range)
            total = mdi + pdi
            if total:
                adx = s.adx = (adx * 13.0 + 100.0 * (abs(mdi - pdi) / total)) / 14
        else:
            pdi = mdi = 0.0

        vol = math.sqrt(s.returns.push((i - 1) % 20, math.log(c / pc), True) / 19)
        s.prev_high = h
        s.prev_low = l
        s.prev_close = c
        return e20, e50, rsi, atr, ml, ms, ml - ms, bm + band, bm, bm - band, adx, pdi, mdi, vw, vol
