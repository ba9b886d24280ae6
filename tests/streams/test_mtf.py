"""Multi-timeframe analysis: the definitions in streams.mtf, by hand, and as the symbol core emits it."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from tickwire.schemas.market import Condition, MultiTimeframeAnalysis
from tickwire.streams.indicators import KEYS
from tickwire.streams.mtf import analysis, trend
from tickwire.streams.simulator import MarketSimulator
from tickwire.streams.symbol import SymbolProcessor, SymbolState

START = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)


def values(**given: float | None) -> tuple:
    return tuple(given.get(key) for key in KEYS)


def test_trend_of_one_timeframe() -> None:
    assert trend(values(ema_20=11, ema_50=10, plus_di_14=30, minus_di_14=10, adx_14=20)) == (1, 0.4)
    assert trend(values(ema_20=9, ema_50=10, plus_di_14=10, minus_di_14=30, adx_14=80)) == (-1, 1.0)
    assert trend(values(ema_20=11, ema_50=10, plus_di_14=10, minus_di_14=30, adx_14=25)) == (0, 0.5)  # they disagree
    assert trend(values(ema_20=11, plus_di_14=30, minus_di_14=10)) == (0, 0.0)  # not warm yet


def test_alignment_by_hand() -> None:
    # Weights 1 + log2(tf / 1m): 1m 1, 5m 3.321928, 1h 6.906891; their sum 11.228819.
    at = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    mixed = analysis("AAPL", at, "1h", "1m", {"1m": (1, 0.5, "ranging"), "5m": (1, 1.0, "trending_up"), "1h": (-1, 0.4, None)})
    # (0.5 + 3.321928 - 0.4 * 6.906891) / 11.228819 = 0.094326: below 0.1, no dominant direction.
    assert mixed.alignment_score == pytest.approx(0.094326, abs=1e-6)
    assert (mixed.dominant_direction, mixed.agreeing_timeframes, mixed.timeframe_count) == ("flat", 0, 3)
    assert mixed.timeframes["1h"].direction == "down" and mixed.timeframes["5m"].regime == "trending_up"
    up = analysis("AAPL", at, "1h", "1m", {"1m": (1, 0.5, None), "5m": (1, 1.0, None), "1h": (-1, 0.2, None)})
    assert up.alignment_score == pytest.approx((0.5 + (1 + math.log2(5)) - 0.2 * (1 + math.log2(60))) / 11.228819, abs=1e-6)
    assert (up.dominant_direction, up.agreeing_timeframes) == ("up", 2)
    full = analysis("AAPL", at, "1d", "1m", {"1m": (-1, 1.0, None), "1d": (-1, 1.0, None)})
    assert full.alignment_score == -1.0 and full.dominant_direction == "down" and full.agreeing_timeframes == 2


def test_the_symbol_core_analyses_each_higher_close_once_with_every_timeframe() -> None:
    processor, state = SymbolProcessor(), SymbolState()
    bars = list(MarketSimulator(["AAPL"], seed=3, start=START, bar_volatility=0.004).bars(2 * 1440))
    rows, conditions = [], {}
    for bar in bars:
        outputs, _ = processor.process(state, bar)
        for kind, value in outputs:
            if kind == "mtf":
                rows.append(msgspec.json.decode(value, type=MultiTimeframeAnalysis))
            elif kind == "condition":
                condition = msgspec.json.decode(value, type=Condition)
                conditions[condition.timeframe, condition.timestamp] = condition
    # One a 5m close, named after the highest timeframe closing with it, at that close.
    assert len(rows) == 2 * 288 and len({r.timestamp for r in rows}) == len(rows)
    triggers = {r.timestamp: r.trigger_timeframe for r in rows}
    assert triggers[START + timedelta(minutes=5)] == "5m" and triggers[START + timedelta(minutes=45)] == "15m"
    assert triggers[START + timedelta(hours=3)] == "1h" and triggers[START + timedelta(days=1)] == "1d"
    last = rows[-1]
    assert list(last.timeframes) == ["1m", "5m", "15m", "1h", "1d"] and last.timeframe_count == 5
    # Each timeframe's part is its latest bar's (the one open a period before the close).
    for tf, period in (("1m", 1), ("5m", 5), ("15m", 15), ("1h", 60), ("1d", 1440)):
        condition = conditions[tf, last.timestamp - timedelta(minutes=period)]
        direction, strength = trend(tuple(getattr(condition, key) for key in KEYS))
        assert last.timeframes[tf].direction == {1: "up", -1: "down", 0: "flat"}[direction]
        assert last.timeframes[tf].strength == pytest.approx(strength)
        assert last.timeframes[tf].regime == condition.detected_regime
    assert {r.dominant_direction for r in rows} >= {"up", "down"}
