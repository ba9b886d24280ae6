"""Market-data messages: OHLCV bars (``md.bars.v1``) and conditions (``md.conditions.v1``)."""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta, timezone
from typing import Annotated

import msgspec

from tickwire.schemas.errors import InvalidMessage

Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=10, pattern=r"^[A-Z0-9][A-Z0-9.\-/^]*\Z")]
Timeframe = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,3}[mhd]\Z")]
# The price columns are DECIMAL(18, 8): below 1e10, in steps of 1e-8. A price under 1e9 keeps
# every value derived from it inside them (a Bollinger band reaches at most twice the
# highest price of its window), and one under 1e-8 would be stored as 0.
MIN_PRICE, MAX_PRICE = 1e-8, 1e9
Price = Annotated[float, msgspec.Meta(ge=MIN_PRICE, lt=MAX_PRICE)]
UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
# A bar's volume and trade count. Resampling sums them: up to MAX_BARS_PER_PERIOD base bars
# (9,223: six days of 1m bars) still fit a BIGINT and msgpack's integers. Settings refuse a
# resampled timeframe holding more base bars than that.
MAX_VOLUME = 10**15
MAX_BARS_PER_PERIOD = (2**63 - 1) // MAX_VOLUME
Volume = Annotated[int, msgspec.Meta(ge=0, le=MAX_VOLUME)]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_ORDINAL = EPOCH.toordinal()  # date.toordinal() of the epoch's day
# The market regimes (streams.regimes decides them; settings and the correlation thresholds name them).
REGIMES = ("trending_up", "trending_down", "ranging", "volatile")
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(ts: datetime) -> int:
    """Event time as integer microseconds since the epoch: what states keep (exact, compact)."""
    return (ts - EPOCH) // _MICROSECOND


def from_epoch_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


DAY_US = 86_400_000_000


def closing_day(close_us: int) -> int:
    """The UTC day (days since the epoch) of a bar that closes at ``close_us``: one closing
    at midnight is the day before's last."""
    return (close_us - 1) // DAY_US
TIMEFRAME_SECONDS = {"m": 60, "h": 3600, "d": 86400}


@functools.lru_cache(maxsize=64)
def timeframe_seconds(timeframe: str) -> int:
    """``"15m"`` -> 900 (cached: every bar asks for its timeframes)."""
    return int(timeframe[:-1]) * TIMEFRAME_SECONDS[timeframe[-1]]


class Bar(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One OHLCV bar; ``ts`` is the bar's open time in UTC (event time).

    Unknown fields are rejected: a producer that needs new fields publishes ``.v2``.
    """

    symbol: Symbol
    ts: UtcDatetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume
    timeframe: Timeframe = "1m"
    vwap: Price | None = None
    trade_count: Volume | None = None
    source: Annotated[str, msgspec.Meta(pattern=r"^(feed|trades|resample)\Z")] = "feed"

    def validate(self, *, now: datetime, max_future_skew_s: float) -> "Bar":
        """Rules msgspec's field constraints cannot say; raise ``InvalidMessage``."""
        check_timestamp(self.ts, now=now, max_future_skew_s=max_future_skew_s)
        for name in ("open", "high", "low", "close"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidMessage("invalid_value", f"{name} is not finite")
        if not self.low <= min(self.open, self.close) or not max(self.open, self.close) <= self.high:
            raise InvalidMessage(
                "invalid_value", f"OHLC out of order: low {self.low} open {self.open} close {self.close} high {self.high}"
            )
        if self.vwap is not None and not self.low <= self.vwap <= self.high:
            raise InvalidMessage("invalid_value", f"vwap {self.vwap} outside [low, high]")
        return self


def check_timestamp(ts: datetime, *, now: datetime, max_future_skew_s: float) -> None:
    """Event times must be aware, after the epoch and not far ahead of ``now``.

    The floor excludes the epoch itself: 1970-01-01T00:00:00Z is what a producer sends for
    a missing time (a zero), never a bar or a trade."""
    if ts.tzinfo is None:
        raise InvalidMessage("bad_timestamp", "timestamp has no UTC offset")
    if ts <= EPOCH:
        raise InvalidMessage("bad_timestamp", f"timestamp {ts.isoformat()} is not after 1970-01-01T00:00:00Z (a zero time)")
    if (ts - now).total_seconds() > max_future_skew_s:
        raise InvalidMessage("bad_timestamp", f"timestamp {ts.isoformat()} is more than {max_future_skew_s:.0f}s ahead")


class Condition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """One row per bar and timeframe: the bar, its indicators, regime and correlations.

    Field order is the ``market_conditions`` column order (``schemas.tables``); a field
    is ``None`` until its indicator has enough history.
    """

    symbol: str
    timeframe: str
    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    vwap: float | None = None
    atr_14: float | None = None
    rsi_14: float | None = None
    ema_20: float | None = None
    ema_50: float | None = None
    bb_upper: float | None = None
    bb_middle: float | None = None
    bb_lower: float | None = None
    macd_line: float | None = None
    macd_signal: float | None = None
    macd_hist: float | None = None
    adx_14: float | None = None
    plus_di_14: float | None = None
    minus_di_14: float | None = None
    volatility_20d: float | None = None
    vix: float | None = None
    detected_regime: str | None = None
    regime_confidence: float | None = None
    spy_correlation: float | None = None
    sector_correlation: float | None = None


class RegimeChange(msgspec.Struct, frozen=True, kw_only=True):
    """A (symbol, timeframe) entering a new regime (``md.regimes.v1``, ``market_regime_history``).

    ``timestamp`` is the bar on which the new regime took effect; the indicator fields are
    that bar's values, the ones the rule in ``streams.regimes`` decided on.
    """

    symbol: str
    timeframe: str
    timestamp: datetime
    regime: str
    confidence: float
    previous_regime: str | None
    previous_regime_since: datetime | None
    close: float
    adx_14: float | None
    plus_di_14: float | None
    minus_di_14: float | None
    ema_20: float | None
    ema_50: float | None
    atr_14: float | None
    rsi_14: float | None
    volatility_20d: float | None
    ema_slope_per_bar: float | None
    volatility_percentile: float | None
    details: dict  # the rule's parameters when it decided


class CorrelationContext(msgspec.Struct, frozen=True, kw_only=True):
    """A bar's correlation context (``md.correlation_context.v1``): its ``market_conditions``
    key and bar, and its correlations with the benchmark and its sector
    (``streams.correlations`` defines them)."""

    symbol: str
    timeframe: str
    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    spy_correlation: float | None
    sector_correlation: float | None


class TimeframeTrend(msgspec.Struct, frozen=True, kw_only=True):
    """One timeframe's part of a ``MultiTimeframeAnalysis`` (``streams.mtf`` defines it)."""

    direction: str  # up, down or flat
    strength: float  # 0..1
    regime: str | None


class MultiTimeframeAnalysis(msgspec.Struct, frozen=True, kw_only=True):
    """A symbol's trend on every timeframe at once (``md.mtf.v1``, ``multi_timeframe_analysis``),
    each time a bar above the base timeframe closes; ``timestamp`` is that close: the analysis
    holds from then on (``streams.mtf`` has the definitions)."""

    symbol: str
    timestamp: datetime
    trigger_timeframe: str  # the highest timeframe whose bar closed then
    timeframes: dict[str, TimeframeTrend]
    alignment_score: float  # -1 (every timeframe down) .. +1 (every timeframe up)
    dominant_direction: str  # up, down or flat
    agreeing_timeframes: int  # timeframes whose direction is the dominant one
    timeframe_count: int
