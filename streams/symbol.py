"""One symbol's bars in; its conditions (every timeframe), regime changes and
multi-timeframe analyses (``streams.mtf``) out.

The per-symbol core the worker runs for each bar, with no faust in it. A base-timeframe
bar also feeds the resampler; each higher-timeframe bar it closes is processed like a
bar of its own. A bar at the event time of the last one of its timeframe, with the same
values, is a duplicate (the feed sent it twice, or the trades stage re-sent it): it
changes nothing and produces nothing; with other values it is refused
(``conflicting_duplicate``), as the series cannot hold both. A message redelivered after a crash never reaches this core: the
worker recognises it by its offset (``worker.stage.redelivered``).

A (symbol, timeframe) is either fed or resampled, never both: its first bar decides.
A feed's bar of a timeframe the worker also resamples (vendor daily bars, a replayed
history) makes that timeframe fed for the symbol, and the resampler's bars of it are not
used; a feed's bar of a timeframe already resampled for the symbol is refused
(``conflicting_source``), as two sources of one series would disagree.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import DAY_US, REGIMES, Bar, Condition, MultiTimeframeAnalysis, RegimeChange, epoch_us, timeframe_seconds
from tickwire.streams.candles import Resampler, ResamplerState
from tickwire.streams.frame import FrameCore
from tickwire.streams.indicators import KEYS, IndicatorState
from tickwire.streams.mtf import analysis, trend
from tickwire.streams.regimes import RegimeConfig, RegimeState

Output = tuple[Literal["condition", "regime", "mtf"], bytes]


class FrameState(msgspec.Struct, array_like=True):
    """One (symbol, timeframe): where it is in event time, its indicators and regime."""

    last_ts_us: int
    indicators: IndicatorState
    regime: RegimeState
    fed: bool = False  # a timeframe the worker resamples, whose bars come from a feed instead
    # The last input bar's (open, high, low, close, volume): tells a feed's exact repeat from
    # a conflicting bar of the same time. None for a resampled frame (or one stored before).
    last_bar: tuple[float, float, float, float, int] | None = None
    trend: tuple[int, float] | None = None  # the last bar's (direction, strength), ``streams.mtf``


class _FrameStateV1(msgspec.Struct, array_like=True):
    """Layout 1 kept the last input bar's outputs (to re-send on a redelivery) in place of ``fed``."""

    last_ts_us: int
    indicators: IndicatorState
    regime: RegimeState
    outputs: list[tuple[str, bytes]] = []


class RegimeHistory(msgspec.Struct, array_like=True):
    """Each timeframe's regime changes, with the bar close that made them known: the regimes
    in force at a recent time, whichever came first, a trade's fill or the bars before it
    (they come on two topics). Kept: the changes of the last ``REGIME_HISTORY_US`` of bar
    time and the one in force before them, at most ``REGIME_CHANGES_KEPT`` a timeframe, so
    a fill up to a day behind its bars still finds its regimes."""

    changes: list[tuple[int, str, int]] = []  # (known at µs, timeframe, index in REGIMES), oldest first
    until_us: int = -(2**62)  # the latest bar close seen

    def at(self, ts_us: int) -> dict[str, str] | None:
        """timeframe -> regime in force at ``ts_us``; None while the bars are still behind it.
        A timeframe whose kept changes are all later has none."""
        if ts_us > self.until_us:
            return None
        return {timeframe: REGIMES[regime] for known_us, timeframe, regime in self.changes if known_us <= ts_us}

    def record(self, known_us: int, timeframe: str, regime: str) -> None:
        self.changes.append((known_us, timeframe, REGIMES.index(regime)))
        mine = [change for change in self.changes if change[1] == timeframe]
        recent = sum(1 for change in mine if change[0] >= known_us - REGIME_HISTORY_US)
        keep = set(mine[-min(recent + 1, REGIME_CHANGES_KEPT):])  # the recent ones and the one before them
        self.changes = [change for change in self.changes if change[1] != timeframe or change in keep]


REGIME_HISTORY_US = DAY_US
REGIME_CHANGES_KEPT = 64


class SymbolState(msgspec.Struct, array_like=True):
    frames: dict[str, FrameState] = {}
    resampler: ResamplerState | None = None
    regimes: RegimeHistory = msgspec.field(default_factory=RegimeHistory)


class SymbolStateV1(msgspec.Struct, array_like=True):
    frames: dict[str, _FrameStateV1] = {}
    resampler: ResamplerState | None = None

    def upgraded(self) -> SymbolState:
        """Layout 1 resampled every timeframe it resamples today: none of its frames is fed."""
        frames = {tf: FrameState(f.last_ts_us, f.indicators, f.regime) for tf, f in self.frames.items()}
        return SymbolState(frames, self.resampler)


class SymbolProcessor:
    """Stateless itself: ``process`` works on the ``SymbolState`` it is given."""

    def __init__(
        self,
        *,
        base_timeframe: str = "1m",
        resample_to: tuple[str, ...] = ("5m", "15m", "1h", "1d"),
        regime: RegimeConfig | None = None,
        vwap_anchor_s: int = 86_400,
    ) -> None:
        self.base = base_timeframe
        self.resample_to = resample_to
        self.regime = regime or RegimeConfig()
        self.vwap_anchor_s = vwap_anchor_s
        self._encode = msgspec.json.Encoder().encode
        # One resampler, given each symbol's state in turn: its timeframes are checked once.
        self._resampler = Resampler(base=base_timeframe, timeframes=resample_to) if resample_to else None

    def process(self, state: SymbolState, bar: Bar) -> tuple[list[Output], bool]:
        """Return (outputs, duplicate); raise ``InvalidMessage`` with the state untouched."""
        ts_us = epoch_us(bar.ts)
        frame = state.frames.get(bar.timeframe)
        if frame is not None and bar.timeframe in self.resample_to and not frame.fed:
            raise InvalidMessage(
                "conflicting_source", f"{bar.symbol}'s {bar.timeframe} bars are resampled from its {self.base} bars, not taken from a feed"
            )
        if frame is not None:
            if ts_us == frame.last_ts_us:
                values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
                if frame.last_bar is not None and frame.last_bar != values:
                    raise InvalidMessage(
                        "conflicting_duplicate", f"{bar.timeframe} bar at {bar.ts.isoformat()} repeats a time already applied with {frame.last_bar}"
                    )
                return [], True
            if ts_us < frame.last_ts_us:
                raise InvalidMessage("late_bar", f"{bar.timeframe} bar at {bar.ts.isoformat()} is older than the last one seen")
        outputs = self._bar(state, bar, fed=bar.timeframe in self.resample_to)
        state.frames[bar.timeframe].last_bar = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        closed = [] if bar.timeframe == self.base else [bar]
        if bar.timeframe == self.base and self._resampler is not None:
            resampler = self._resampler
            resampler.state = state.resampler or ResamplerState()
            for resampled in resampler.update(bar):
                frame = state.frames.get(resampled.timeframe)
                if frame is None or not frame.fed:
                    outputs += self._bar(state, resampled, fed=False)
                    closed.append(resampled)
            state.resampler = resampler.state
        if closed:
            outputs.append(("mtf", self._encode(self._analysis(state, bar.symbol, closed))))
        return outputs, False

    def _analysis(self, state: SymbolState, symbol: str, closed: list[Bar]) -> MultiTimeframeAnalysis:
        """Every timeframe's trend, as the highest of the ``closed`` bars closes."""
        top = max(closed, key=lambda b: timeframe_seconds(b.timeframe))
        by_length = sorted(state.frames.items(), key=lambda item: timeframe_seconds(item[0]))
        trends = {tf: (*frame.trend, frame.regime.regime) for tf, frame in by_length if frame.trend is not None}
        closes_at = top.ts + timedelta(seconds=timeframe_seconds(top.timeframe))
        return analysis(symbol, closes_at, top.timeframe, self.base, trends)

    def _bar(self, state: SymbolState, bar: Bar, *, fed: bool) -> list[Output]:
        ts_us = epoch_us(bar.ts)
        frame = state.frames.get(bar.timeframe)
        if frame is None:
            frame = state.frames[bar.timeframe] = FrameState(
                ts_us, IndicatorState(vwap_anchor_s=self.vwap_anchor_s), RegimeState(), fed=fed
            )
        before = frame.regime.regime
        values, regime, confidence, change = FrameCore(self.regime, frame.indicators, frame.regime).update(bar)
        frame.last_ts_us = ts_us
        frame.trend = trend(values)
        close_us = ts_us + timeframe_seconds(bar.timeframe) * 1_000_000
        state.regimes.until_us = max(state.regimes.until_us, close_us)
        if frame.regime.regime is not None and frame.regime.regime != before:
            state.regimes.record(close_us, bar.timeframe, frame.regime.regime)
        condition = Condition(
            symbol=bar.symbol,
            timeframe=bar.timeframe,
            timestamp=bar.ts,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            detected_regime=regime,
            regime_confidence=confidence,
            **dict(zip(KEYS, values)),
        )
        outputs: list[Output] = [("condition", self._encode(condition))]
        if change is not None:
            row = RegimeChange(
                symbol=bar.symbol,
                timeframe=bar.timeframe,
                timestamp=bar.ts,
                regime=change.regime,
                confidence=change.confidence,
                previous_regime=change.previous,
                previous_regime_since=change.previous_since,
                ema_slope_per_bar=change.details["ema_slope_per_bar"],
                details=change.details,
                **change.values,
            )
            outputs.append(("regime", self._encode(row)))
        return outputs
