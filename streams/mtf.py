"""Multi-timeframe analysis: is a symbol's trend the same on every timeframe?

What a strategy asks before trading a 1m signal, answered whenever a bar above the base
timeframe closes (the bars of several timeframes closing together make one analysis,
named after the highest). From each timeframe's latest indicators:

- ``direction``: ``up`` when ema_20 > ema_50 and +DI > -DI, ``down`` when ema_20 < ema_50
  and -DI > +DI, ``flat`` when they disagree or are not warm yet.
- ``strength = min(ADX / 50, 1)`` (0 before the ADX is warm): ADX 50 and above is a
  trend as strong as trends get.
- ``regime``: the timeframe's regime (``streams.regimes``).
- ``alignment_score = sum(w * d * strength) / sum(w)`` over the timeframes, d = +1 up,
  -1 down, 0 flat, and the weight w = 1 + log2(timeframe / base timeframe): a 1h trend
  counts more than a 1m one, without drowning it (1m 1, 5m 3.3, 15m 4.9, 1h 6.9, 1d
  11.5). +1: every timeframe trends up at full strength; -1: down; 0: no agreement.
- ``dominant_direction``: ``up`` when alignment_score >= ``DOMINANT``, ``down`` when
  <= -``DOMINANT``, else ``flat``; ``agreeing_timeframes``: how many timeframes have that
  direction.
"""

from __future__ import annotations

import math
from datetime import datetime

from tickwire.schemas.market import MultiTimeframeAnalysis, TimeframeTrend, timeframe_seconds
from tickwire.streams.indicators import KEYS

DOMINANT = 0.1
FULL_ADX = 50.0
_EMA_FAST, _EMA_SLOW, _ADX, _PLUS_DI, _MINUS_DI = (KEYS.index(k) for k in ("ema_20", "ema_50", "adx_14", "plus_di_14", "minus_di_14"))


def trend(values: tuple) -> tuple[int, float]:
    """(direction -1/0/+1, strength) of one timeframe from its Condition values in ``KEYS`` order."""
    fast, slow, adx, plus, minus = (values[i] for i in (_EMA_FAST, _EMA_SLOW, _ADX, _PLUS_DI, _MINUS_DI))
    direction = 0
    if None not in (fast, slow, plus, minus):
        if fast > slow and plus > minus:
            direction = 1
        elif fast < slow and minus > plus:
            direction = -1
    return direction, 0.0 if adx is None else min(adx / FULL_ADX, 1.0)


_NAMES = {1: "up", -1: "down", 0: "flat"}


def analysis(
    symbol: str, timestamp: datetime, trigger: str, base: str, trends: dict[str, tuple[int, float, str | None]]
) -> MultiTimeframeAnalysis:
    """The analysis of ``trends``: timeframe -> (direction, strength, regime)."""
    base_s = timeframe_seconds(base)
    weights = {tf: 1 + math.log2(timeframe_seconds(tf) / base_s) for tf in trends}
    score = sum(weights[tf] * d * strength for tf, (d, strength, _) in trends.items()) / sum(weights.values())
    dominant = 1 if score >= DOMINANT else -1 if score <= -DOMINANT else 0
    return MultiTimeframeAnalysis(
        symbol=symbol, timestamp=timestamp, trigger_timeframe=trigger,
        timeframes={tf: TimeframeTrend(direction=_NAMES[d], strength=strength, regime=regime) for tf, (d, strength, regime) in trends.items()},
        alignment_score=score, dominant_direction=_NAMES[dominant],
        agreeing_timeframes=sum(d == dominant for d, _, _ in trends.values()), timeframe_count=len(trends),
    )
