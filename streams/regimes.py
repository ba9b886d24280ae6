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
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Mapping
from datetime import datetime

import msgspec

REGIMES = ("trending_up", "trending_down", "ranging", "volatile")
# Indicator values a change of regime carries, for market_regime_history.
DECIDING = ("adx_14", "plus_di_14", "minus_di_14", "ema_20", "ema_50", "atr_14", "rsi_14", "volatility_20d")


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

    def as_details(self) -> dict[str, float | int]:
        """The parameters, for the history row's ``details``: a row says which rule decided it."""
        return msgspec.structs.asdict(self)


class RegimeState(msgspec.Struct, array_like=True):
    """Bounded: at most ``slope_bars + 1`` EMAs and ``volatility_window_bars`` volatilities."""

    emas: list[float] = []  # oldest first
    volatilities: list[float] = []  # oldest first
    regime: str | None = None
    since: datetime | None = None  # when the held regime took effect
    candidate: str | None = None
    candidate_bars: int = 0


class RegimeReading(msgspec.Struct, frozen=True, kw_only=True):
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


class RegimeDetector:
    """Feed each bar's indicator values in event order; read the regime."""

    __slots__ = ("config", "state", "_sorted")

    def __init__(self, config: RegimeConfig | None = None, state: RegimeState | None = None) -> None:
        self.config = config or RegimeConfig()
        self.state = state or RegimeState()
        # The ranking needs the window sorted; derived from the state, so not stored.
        self._sorted = sorted(self.state.volatilities)

    def update(self, ts: datetime, close: float, values: Mapping[str, float | None]) -> RegimeReading:
        """One bar: its event time, close and ``Indicators.update`` values."""
        cfg, s = self.config, self.state
        ema, volatility = values["ema_20"], values["volatility_20d"]
        if ema is not None:
            emas = s.emas
            emas.append(ema)
            if len(emas) > cfg.slope_bars + 1:
                del emas[0]
        if volatility is not None:
            s.volatilities.append(volatility)
            insort(self._sorted, volatility)
            if len(s.volatilities) > cfg.volatility_window_bars:
                old = s.volatilities.pop(0)
                del self._sorted[bisect_right(self._sorted, old) - 1]
        adx, plus_di, minus_di = values["adx_14"], values["plus_di_14"], values["minus_di_14"]
        if (
            adx is None
            or plus_di is None
            or minus_di is None
            or volatility is None
            or len(s.emas) <= cfg.slope_bars
            or len(s.volatilities) < cfg.min_volatility_samples
        ):
            return RegimeReading(ts=ts, regime=None, confidence=None)

        ordered = self._sorted
        rank = bisect_right(ordered, volatility) / len(ordered)
        ratio = volatility / ordered[len(ordered) // 2] if ordered[len(ordered) // 2] else math.inf
        first = s.emas[0]
        slope = (s.emas[-1] / first - 1.0) / cfg.slope_bars
        held = s.regime
        raw = self._classify(held, adx, plus_di, minus_di, slope, rank, ratio)
        if raw == held:
            s.candidate, s.candidate_bars = None, 0
            return RegimeReading(ts=ts, regime=held, confidence=self._confidence(held, adx, rank))
        s.candidate_bars = s.candidate_bars + 1 if raw == s.candidate else 1
        s.candidate = raw
        if held is not None and s.candidate_bars < cfg.confirm_bars:
            return RegimeReading(ts=ts, regime=held, confidence=self._confidence(held, adx, rank))

        previous_since = s.since
        s.regime, s.since, s.candidate, s.candidate_bars = raw, ts, None, 0
        deciding = {name: values[name] for name in DECIDING}
        deciding["close"] = close
        deciding["volatility_percentile"] = rank
        return RegimeReading(
            ts=ts,
            regime=raw,
            confidence=self._confidence(raw, adx, rank),
            changed=True,
            previous=held,
            previous_since=previous_since,
            values=deciding,
            details={"ema_slope_per_bar": slope, "volatility_to_median": ratio, **cfg.as_details()},
        )

    def _classify(self, held: str | None, adx: float, plus_di: float, minus_di: float, slope: float, rank: float, ratio: float) -> str:
        cfg = self.config
        if held == "volatile":
            if rank >= cfg.volatile_percentile - cfg.percentile_margin:
                return "volatile"
        elif rank >= cfg.volatile_percentile and ratio >= cfg.volatile_min_ratio:
            return "volatile"
        up = plus_di > minus_di and slope > cfg.min_slope_per_bar
        down = minus_di > plus_di and slope < -cfg.min_slope_per_bar
        # The margin keeps a trend, never starts one, nor turns it round.
        threshold = cfg.trend_adx - cfg.adx_margin if (held == "trending_up" and up) or (held == "trending_down" and down) else cfg.trend_adx
        if adx >= threshold:
            if up:
                return "trending_up"
            if down:
                return "trending_down"
        return "ranging"

    def _confidence(self, regime: str, adx: float, rank: float) -> float:
        cfg = self.config
        if regime == "volatile":
            excess = (rank - cfg.volatile_percentile) / (1.0 - cfg.volatile_percentile)
        elif regime == "ranging":
            excess = (cfg.trend_adx - adx) / (cfg.trend_adx - cfg.ranging_full_confidence_adx)
        else:
            excess = (adx - cfg.trend_adx) / (cfg.full_confidence_adx - cfg.trend_adx)
        return min(1.0, max(0.0, 0.5 + 0.5 * excess))
