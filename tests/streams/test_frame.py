"""streams.frame: one compiled call per bar, bit-identical to Indicators then RegimeDetector."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest

from tickwire.schemas.market import Bar
from tickwire.streams.frame import FrameCore
from tickwire.streams.indicators import KEYS, Indicators, IndicatorState
from tickwire.streams.regimes import RegimeConfig, RegimeDetector, RegimeState

T0 = datetime(2026, 3, 2, 23, 30, tzinfo=timezone.utc)


def walk(n: int, seed: int) -> list[Bar]:
    """A random walk whose volatility switches regime, with flat stretches (constant
    closes, zero-range bars), zero-volume bars, bars with a vwap of their own and gaps in
    time (hours and days: new VWAP periods)."""
    rng = np.random.default_rng(seed)
    bars = []
    ts, close, sigma = T0, 100.0, 0.002
    for i in range(n):
        if rng.random() < 0.01:
            sigma = float(rng.choice([0.0005, 0.002, 0.01, 0.03]))
        flat = (i // 150) % 7 == 3
        if not flat:
            close *= math.exp(rng.normal(0.0003 * ((i // 400) % 3 - 1), sigma))
        wick = 0.0 if flat else abs(rng.normal(0, sigma)) * close
        ts += timedelta(minutes=1) if rng.random() > 0.01 else timedelta(hours=int(rng.integers(1, 60)))
        bars.append(Bar(
            symbol="SYM", ts=ts, open=close, high=close + wick, low=close - wick, close=close,
            volume=0 if rng.random() < 0.02 else int(rng.integers(1, 1000)),
            vwap=close if rng.random() < 0.1 else None,
        ))
    return bars


def restored(state):
    return msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=type(state))


def same(a, b) -> bool:
    """Equal to the bit, None where None."""
    return (a is None and b is None) or (a is not None and b is not None and np.float64(a).tobytes() == np.float64(b).tobytes())


@pytest.mark.parametrize("seed", [1, 2])
def test_one_call_is_bit_identical_to_indicators_then_regime(seed):
    config = RegimeConfig(volatility_window_bars=60, confirm_bars=2)
    bars = walk(6_000, seed)
    indicators, detector = Indicators(vwap_anchor_s=3600), RegimeDetector(config)
    core_states = IndicatorState(vwap_anchor_s=3600), RegimeState()
    changes = nones = 0
    for i, bar in enumerate(bars):
        if i == len(bars) // 2:  # a restart midway, of both sides, from the states' msgpack
            indicators, detector = Indicators(restored(indicators.state)), RegimeDetector(config, restored(detector.state))
            core_states = restored(core_states[0]), restored(core_states[1])
        values = indicators.update(bar)
        reading = detector.update(bar.ts, bar.close, values)
        # Built anew for every bar, as streams.symbol does.
        got, regime, confidence, change = FrameCore(config, *core_states).update(bar)
        assert list(values) == list(KEYS)
        assert all(same(a, b) for a, b in zip(values.values(), got, strict=True)), i
        assert regime == reading.regime and same(confidence, reading.confidence), i
        assert change == (reading if reading.changed else None), i
        changes += reading.changed
        nones += values["vwap"] is None
    assert core_states[0].data == indicators.state.data
    assert core_states[1] == detector.state
    assert changes >= 10 and nones >= 1  # the walk exercised changes and NaN values


def test_a_kept_core_matches_one_built_per_bar_and_lays_out_a_new_regime_state():
    config = RegimeConfig()
    kept = FrameCore(config, IndicatorState(), RegimeState())
    states = IndicatorState(), RegimeState()
    for bar in walk(1_000, 3):
        assert kept.update(bar) == FrameCore(config, *states).update(bar)
    assert kept.indicators == states[0] and kept.regime == states[1] and kept.regime.data


def test_states_the_kernel_cannot_take_are_refused_untouched():
    bar = walk(1, 4)[0]
    with pytest.raises(ValueError):
        FrameCore(RegimeConfig(), IndicatorState(data=bytes(576)), RegimeState())
    for state in (IndicatorState(data=bytearray(8)), IndicatorState(vwap_anchor_s=0)):
        before = msgspec.msgpack.encode(state)
        with pytest.raises(ValueError):
            FrameCore(RegimeConfig(), state, RegimeState()).update(bar)
        assert msgspec.msgpack.encode(state) == before
