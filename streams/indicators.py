"""Streaming technical indicators, exact to TA-Lib's defaults (DESIGN rule 7).

Each indicator is a pure object with a msgspec ``State`` that does not grow with
history, one-at-a-time ``update`` and a batch ``update_many``; both give bit-identical
results whatever the batch boundaries or restarts.
"""

from __future__ import annotations

import msgspec
import numpy as np

from schemas.market import Bar


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


class IndicatorState(msgspec.Struct, array_like=True):
    """Everything one (symbol, timeframe) needs to continue its indicators."""

    ema_20: EmaState = msgspec.field(default_factory=lambda: EmaState(20))
    ema_50: EmaState = msgspec.field(default_factory=lambda: EmaState(50))


class Indicators:
    """All indicators of one (symbol, timeframe); ``update`` returns the Condition fields."""

    def __init__(self, state: IndicatorState | None = None) -> None:
        self.state = state or IndicatorState()
        self._ema_20 = Ema(20, self.state.ema_20)
        self._ema_50 = Ema(50, self.state.ema_50)

    def update(self, bar: Bar) -> dict[str, float | None]:
        return {"ema_20": self._ema_20.update(bar.close), "ema_50": self._ema_50.update(bar.close)}
