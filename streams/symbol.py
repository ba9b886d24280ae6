"""One symbol's bars in; its conditions (every timeframe) and regime changes out.

The per-symbol core the worker runs for each bar, with no faust in it. A base-timeframe
bar also feeds the resampler; each higher-timeframe bar it closes is processed like a
bar of its own. Everything one input bar produced is kept with the state, so a
redelivered bar (same event time as the last one of its timeframe, e.g. after a crash
between the state write and the sends) re-sends exactly those outputs and changes
nothing; the sinks' upserts absorb the repeat.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Bar, Condition, RegimeChange
from tickwire.streams.candles import Resampler, ResamplerState
from tickwire.streams.frame import FrameCore
from tickwire.streams.indicators import KEYS, IndicatorState
from tickwire.streams.regimes import RegimeConfig, RegimeState

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)

Output = tuple[Literal["condition", "regime"], bytes]


class FrameState(msgspec.Struct, array_like=True):
    """One (symbol, timeframe): where it is in event time, its indicators and regime."""

    last_ts_us: int
    indicators: IndicatorState
    regime: RegimeState
    outputs: list[tuple[str, bytes]] = []  # what the last input bar of this timeframe produced


class SymbolState(msgspec.Struct, array_like=True):
    frames: dict[str, FrameState] = {}
    resampler: ResamplerState | None = None


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
        """Return (outputs, redelivered); raise ``InvalidMessage`` with the state untouched."""
        if bar.timeframe in self.resample_to:
            raise InvalidMessage("invalid_value", f"{bar.timeframe} bars are resampled from {self.base} bars, not accepted from feeds")
        ts_us = (bar.ts - _EPOCH) // _US
        frame = state.frames.get(bar.timeframe)
        if frame is not None:
            if ts_us == frame.last_ts_us:
                return list(frame.outputs), True
            if ts_us < frame.last_ts_us:
                raise InvalidMessage("late_bar", f"{bar.timeframe} bar at {bar.ts.isoformat()} is older than the last one seen")
        bars = [bar]
        if bar.timeframe == self.base and self._resampler is not None:
            resampler = self._resampler
            resampler.state = state.resampler or ResamplerState()
            bars += resampler.update(bar)
            state.resampler = resampler.state
        outputs: list[Output] = []
        for each in bars:
            outputs += self._bar(state, each)
        state.frames[bar.timeframe].outputs = outputs
        return outputs, False

    def _bar(self, state: SymbolState, bar: Bar) -> list[Output]:
        ts_us = (bar.ts - _EPOCH) // _US
        frame = state.frames.get(bar.timeframe)
        if frame is None:
            frame = state.frames[bar.timeframe] = FrameState(
                ts_us, IndicatorState(vwap_anchor_s=self.vwap_anchor_s), RegimeState()
            )
        values, regime, confidence, change = FrameCore(self.regime, frame.indicators, frame.regime).update(bar)
        frame.last_ts_us = ts_us
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
