"""Candles on event time: base bars resampled into higher timeframes, trades into base bars.

Both cores keep one symbol's open periods in a msgspec state and emit a period's bar
exactly once, when the period closes: when its last base slot is filled (resampler),
when input for a later period arrives, or when ``advance_watermark(ts)`` says no more
input before ``ts`` will come. Periods are aligned to the Unix epoch (so ``1d`` is the
UTC day). A bar is never emitted empty (a period exists only once something fell in
it) and never twice (a closed period is forgotten and input for it is refused).
Output depends only on the input sequence, so restarts from the saved state change
nothing.

Late input raises ``InvalidMessage`` with the state untouched, reason ``late_bar``
for a bar and ``out_of_order`` for a trade: the worker sends it to the DLQ. An exact
redelivery of the last input is dropped and counted in ``state.duplicates``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import EPOCH, MAX_VOLUME, Bar, timeframe_seconds
from tickwire.schemas.trades import Trade

_NEVER = -(2**62)


def _ts_us(ts: datetime) -> int:
    d = ts - EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _vwap(pv: float, volume: int, low: float, high: float) -> float:
    # A volume-weighted mean of prices within [low, high] lies within it; rounding
    # of the sum may not, and Bar.validate would then refuse our own output.
    return min(high, max(low, pv / volume))


class PeriodBar(msgspec.Struct, array_like=True):
    """A higher-timeframe bar being built from base bars."""

    start_us: int
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: int
    pv: float  # sum of vwap * volume over the base bars
    vwap_known: bool  # every base bar had a vwap
    trade_count: int | None  # None once a base bar lacked one


class ResamplerState(msgspec.Struct, array_like=True):
    next_us: int = _NEVER  # bars before this event time are late
    last: Bar | None = None  # the last bar taken: a redelivery of it is a duplicate
    duplicates: int = 0  # exact redeliveries dropped, ever (a counter for metrics)
    open: dict[str, PeriodBar] = {}


class Resampler:
    """One symbol's base bars in, each higher timeframe's closed bars out."""

    __slots__ = ("state", "base", "_base_us", "_frames")

    def __init__(self, state: ResamplerState | None = None, *, base: str = "1m", timeframes: tuple[str, ...] = ("5m", "15m", "1h", "1d")) -> None:
        base_s = timeframe_seconds(base)
        for tf in timeframes:
            if timeframe_seconds(tf) <= base_s or timeframe_seconds(tf) % base_s:
                raise ValueError(f"timeframe {tf} is not a multiple of the base {base}")
        self.state = state or ResamplerState()
        self.base = base
        self._base_us = base_s * 1_000_000
        self._frames = tuple((tf, timeframe_seconds(tf) * 1_000_000) for tf in timeframes)

    def update(self, bar: Bar) -> list[Bar]:
        """Add one base bar; return the bars of the periods it closed (shortest timeframe first).

        Raise ``InvalidMessage`` (state untouched) for a bar of another timeframe or not
        aligned to it, or one not after the last bar or watermark (``late_bar``).
        """
        if bar.timeframe != self.base:
            raise InvalidMessage("invalid_value", f"resampler takes {self.base} bars, not {bar.timeframe}")
        us = _ts_us(bar.ts)
        if us % self._base_us:
            raise InvalidMessage("invalid_value", f"{self.base} bar at {bar.ts.isoformat()} is not aligned to its timeframe")
        s = self.state
        if bar == s.last:
            s.duplicates += 1
            return []
        if us < s.next_us:
            raise InvalidMessage("late_bar", f"bar at {bar.ts.isoformat()} is not after the last bar or watermark")
        # The period is complete once its last base slot is filled: no need to wait.
        slot_end = us + self._base_us
        closed = []
        volume = bar.volume
        for tf, tf_us in self._frames:
            start = us - us % tf_us
            period = s.open.get(tf)
            if period is not None and period.start_us != start:
                closed.append(self._bar(tf, period))
                period = None
            if period is None:
                s.open[tf] = PeriodBar(
                    start,
                    bar.symbol,
                    bar.open,
                    bar.high,
                    bar.low,
                    bar.close,
                    volume,
                    bar.vwap * volume if bar.vwap is not None else 0.0,
                    bar.vwap is not None,
                    bar.trade_count,
                )
            else:
                self._add(period, bar)
            if start + tf_us <= slot_end:
                closed.append(self._bar(tf, s.open[tf]))
        s.next_us = slot_end
        s.last = bar
        return closed

    @staticmethod
    def _add(period: PeriodBar, bar: Bar) -> None:
        volume = bar.volume
        if bar.high > period.high:
            period.high = bar.high
        if bar.low < period.low:
            period.low = bar.low
        period.close = bar.close
        period.volume += volume
        if bar.vwap is None:
            period.vwap_known = False
        else:
            period.pv += bar.vwap * volume
        period.trade_count = None if period.trade_count is None or bar.trade_count is None else period.trade_count + bar.trade_count

    def advance_watermark(self, ts: datetime) -> list[Bar]:
        """No base bar before ``ts`` will come: emit every period that ends by then."""
        us = _ts_us(ts)
        s = self.state
        closed = []
        for tf, tf_us in self._frames:
            period = s.open.get(tf)
            if period is not None and period.start_us + tf_us <= us:
                closed.append(self._bar(tf, period))
        if us > s.next_us:
            s.next_us = us
        return closed

    def _bar(self, tf: str, period: PeriodBar) -> Bar:
        del self.state.open[tf]
        known = period.vwap_known and period.volume > 0
        return Bar(
            symbol=period.symbol,
            ts=EPOCH + timedelta(microseconds=period.start_us),
            open=period.open,
            high=period.high,
            low=period.low,
            close=period.close,
            volume=period.volume,
            timeframe=tf,
            vwap=_vwap(period.pv, period.volume, period.low, period.high) if known else None,
            trade_count=period.trade_count,
            source="resample",
        )


class TradePeriod(msgspec.Struct, array_like=True):
    """A base bar being built from trades; open and close ordered by (ts, trade id)."""

    start_us: int
    symbol: str
    open_key: tuple[int, int, str]
    open: float
    close_key: tuple[int, int, str]
    close: float
    high: float
    low: float
    volume: int
    pv: float
    trade_ids: set[str]


class TradeAggregatorState(msgspec.Struct, array_like=True):
    periods: list[TradePeriod] = []  # open periods, oldest first
    closed_before_us: int = _NEVER  # trades before this fall in closed periods
    max_ts_us: int = _NEVER
    recent_ids: set[str] = set()  # ids of the last closed period, to tell a duplicate from a late trade
    duplicates: int = 0  # trades dropped as duplicates, ever (a counter for metrics)


def _order_key(us: int, trade_id: str) -> tuple[int, int, str]:
    # Ids compare by (length, text) so decimal ids order numerically ("9" < "10").
    return (us, len(trade_id), trade_id)


class TradeAggregator:
    """One symbol's trades in, closed base-timeframe bars out (``source="trades"``).

    A period closes when a trade at or after ``period end + grace_s`` arrives, or the
    watermark passes its end; ``grace_s`` lets trades arrive that late out of order.
    A trade whose id is in an open period or in the last closed one is a duplicate:
    dropped and counted in ``state.duplicates``. Any other trade for a closed period
    is refused with ``out_of_order``. Memory: the ids of open periods plus one closed.
    """

    __slots__ = ("state", "timeframe", "_period_us", "_grace_us")

    def __init__(self, state: TradeAggregatorState | None = None, *, timeframe: str = "1m", grace_s: float = 0.0) -> None:
        if grace_s < 0:
            raise ValueError("grace_s must not be negative")
        self.state = state or TradeAggregatorState()
        self.timeframe = timeframe
        self._period_us = timeframe_seconds(timeframe) * 1_000_000
        self._grace_us = round(grace_s * 1_000_000)

    def update(self, trade: Trade) -> list[Bar]:
        """Add one trade; return the bars it closed, oldest first."""
        s = self.state
        trade_id = trade.trade_id
        # The ids live in the state, per period: a worker may build an aggregator per message.
        if trade_id in s.recent_ids or any(trade_id in period.trade_ids for period in s.periods):
            s.duplicates += 1
            return []
        us = _ts_us(trade.ts)
        if us < s.closed_before_us:
            raise InvalidMessage("out_of_order", f"trade {trade_id} at {trade.ts.isoformat()} falls in a closed period")
        start = us - us % self._period_us
        key = _order_key(us, trade_id)
        price, size = trade.price, trade.size
        for index, period in enumerate(s.periods):
            if period.start_us == start:
                if period.volume + size > MAX_VOLUME:
                    raise InvalidMessage("invalid_value", f"trade {trade_id} would take its bar's volume past {MAX_VOLUME:.0e}")
                if key < period.open_key:
                    period.open_key, period.open = key, price
                if key > period.close_key:
                    period.close_key, period.close = key, price
                if price > period.high:
                    period.high = price
                if price < period.low:
                    period.low = price
                period.volume += size
                period.pv += price * size
                period.trade_ids.add(trade_id)
                break
            if period.start_us > start:
                s.periods.insert(index, self._new(start, trade, key))
                break
        else:
            s.periods.append(self._new(start, trade, key))
        if us > s.max_ts_us:
            s.max_ts_us = us
        return self._close_until(s.max_ts_us - self._grace_us)

    def advance_watermark(self, ts: datetime) -> list[Bar]:
        """No trade before ``ts`` will come: emit every period that ends by then."""
        return self._close_until(_ts_us(ts))

    def _new(self, start: int, trade: Trade, key: tuple[int, int, str]) -> TradePeriod:
        p = trade.price
        return TradePeriod(start, trade.symbol, key, p, key, p, p, p, trade.size, p * trade.size, {trade.trade_id})

    def _close_until(self, us: int) -> list[Bar]:
        """Close every period that ends by ``us``, including ones no trade opened yet:
        a trade for any of them is late from now on."""
        s = self.state
        s.closed_before_us = max(s.closed_before_us, us - us % self._period_us)
        closed = []
        while s.periods and s.periods[0].start_us < s.closed_before_us:
            period = s.periods.pop(0)
            s.recent_ids = period.trade_ids
            closed.append(
                Bar(
                    symbol=period.symbol,
                    ts=EPOCH + timedelta(microseconds=period.start_us),
                    open=period.open,
                    high=period.high,
                    low=period.low,
                    close=period.close,
                    volume=period.volume,
                    timeframe=self.timeframe,
                    vwap=_vwap(period.pv, period.volume, period.low, period.high),
                    trade_count=len(period.trade_ids),
                    source="trades",
                )
            )
        return closed
