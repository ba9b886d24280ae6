"""streams.regimes: regimes found on synthetic markets, hysteresis, warm-up, restarts."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest

from tickwire.streams.indicators import KEYS, Indicators
from tickwire.streams.regimes import DECIDING, REGIMES, RegimeConfig, RegimeDetector, RegimeReading, RegimeState

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)


def market(log_returns: np.ndarray, seed: int, *, wick: np.ndarray | float = 0.001) -> tuple[np.ndarray, list[dict]]:
    """Closes from log returns, bars around them, and each bar's indicator values."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(log_returns))
    opens = np.concatenate([[close[0]], close[:-1]])
    n = len(close)
    high = np.maximum(opens, close) * (1 + np.abs(rng.normal(0, 1, n)) * wick)
    low = np.minimum(opens, close) * (1 - np.abs(rng.normal(0, 1, n)) * wick)
    ts = np.int64(int(T0.timestamp()) * 1_000_000) + np.arange(n, dtype=np.int64) * 60_000_000
    out = Indicators().update_many(ts, opens, high, low, close, np.full(n, 100.0))
    rows = [{k: (None if math.isnan(v) else v) for k, v in zip(KEYS, row)} for row in zip(*(out[k].tolist() for k in KEYS))]
    return close, rows


def readings(close: np.ndarray, rows: list[dict], config: RegimeConfig | None = None, *, restart_at: frozenset = frozenset()) -> list[RegimeReading]:
    detector = RegimeDetector(config)
    out = []
    for i, (c, values) in enumerate(zip(close.tolist(), rows)):
        if i in restart_at:
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(detector.state), type=RegimeState)
            detector = RegimeDetector(config, state)
        out.append(detector.update(T0 + timedelta(minutes=i), c, values))
    return out


def share(found: list[RegimeReading], regime: str) -> float:
    return sum(r.regime == regime for r in found) / len(found)


def trend(drift: float, seed: int, n: int = 800) -> np.ndarray:
    return drift + np.random.default_rng(seed).normal(0, 0.002, n)


def ranging(seed: int, n: int = 800) -> np.ndarray:
    """Mean-reverting around a level: an AR(1) log price with constant noise."""
    rng = np.random.default_rng(seed)
    level = np.zeros(n)
    for i in range(1, n):
        level[i] = 0.8 * level[i - 1] + rng.normal(0, 0.002)
    return np.diff(level, prepend=0.0)


@pytest.mark.parametrize(
    ("returns", "expected"),
    [
        (trend(0.0015, seed=1), "trending_up"),
        (trend(-0.0015, seed=2), "trending_down"),
        (ranging(seed=3), "ranging"),
    ],
    ids=["up", "down", "ranging"],
)
def test_synthetic_markets_get_their_regime(returns, expected):
    found = readings(*market(returns, seed=5))[100:]
    assert share(found, expected) >= 0.8
    assert found[-1].regime == expected


def test_a_volatility_burst_is_volatile_then_fades():
    calm = ranging(seed=4, n=400)
    burst = np.random.default_rng(6).normal(0, 0.012, 60)
    returns = np.concatenate([calm, burst, ranging(seed=7, n=400)])
    found = readings(*market(returns, seed=8))
    assert share(found[300:400], "volatile") <= 0.2
    changes = [i for i, r in enumerate(found) if r.changed and r.regime == "volatile"]
    assert any(400 < i <= 410 for i in changes), changes
    # Volatility is ranked within the last 100 bars: a burst is volatile until it is the norm.
    assert share(found[405:430], "volatile") >= 0.9
    assert found[-1].regime != "volatile"


def regime_runs(found: list[RegimeReading]) -> list[int]:
    runs, length = [], 0
    for previous, current in zip(found, found[1:]):
        length += 1
        if current.regime != previous.regime:
            runs.append(length)
            length = 0
    return runs


def test_hysteresis_keeps_a_noisy_market_from_flapping():
    """Trends of a random walk come and go; the regime follows them, but never bar to bar."""
    rng = np.random.default_rng(9)
    returns = 0.0004 * np.sign(np.sin(np.arange(3000) / 90)) + rng.normal(0, 0.002, 3000) * rng.choice([0.5, 1.5], 3000)
    close, rows = market(returns, seed=10)
    eager = readings(close, rows, RegimeConfig(confirm_bars=1, adx_margin=0.0, percentile_margin=0.0))[100:]
    steady = readings(close, rows)[100:]
    eager_short = sum(run < 3 for run in regime_runs(eager))
    assert eager_short > 40  # the series does cross the thresholds bar to bar
    assert min(regime_runs(steady)) >= RegimeConfig().confirm_bars
    assert sum(r.changed for r in steady) < 0.7 * sum(r.changed for r in eager)


def test_adx_hovering_at_the_threshold_does_not_flip_the_trend():
    values = {name: 1.0 for name in DECIDING}
    detector, eager = RegimeDetector(), RegimeDetector(RegimeConfig(confirm_bars=1, adx_margin=0.0))
    regimes, eager_regimes = [], []
    for i in range(200):
        values.update(adx_14=25.5 if i % 2 else 24.5, plus_di_14=30.0, minus_di_14=10.0, ema_20=100.0 + 0.01 * i,
                      volatility_20d=0.01 + 0.0001 * (i % 3))
        ts = T0 + timedelta(minutes=i)
        regimes.append(detector.update(ts, 100.0, values).regime)
        eager_regimes.append(eager.update(ts, 100.0, values).regime)
    assert sum(a != b for a, b in zip(eager_regimes[40:], eager_regimes[41:])) > 100
    assert set(regimes[40:]) == {"trending_up"}


def test_none_until_warm_then_confidence_in_unit_interval():
    close, rows = market(trend(0.001, seed=11, n=400), seed=12)
    found = readings(close, rows)
    first = next(i for i, r in enumerate(found) if r.regime is not None)
    # volatility_20d starts at bar 20; the 20th sample of it is bar 39 (ADX: 27, EMA slope: 24).
    assert first == 39
    assert all(r.confidence is None for r in found[:first])
    assert all(r.regime in REGIMES and 0.0 <= r.confidence <= 1.0 for r in found[first:])
    assert found[first].changed and found[first].previous is None and found[first].previous_since is None


def test_a_change_carries_the_history_row():
    close, rows = market(np.concatenate([trend(0.0015, seed=13, n=300), trend(-0.0015, seed=14, n=300)]), seed=15)
    found = readings(close, rows)
    changes = [r for r in found if r.changed]
    assert [r.regime for r in changes][-1] == "trending_down"
    for earlier, later in zip(changes, changes[1:]):
        assert (later.previous, later.previous_since) == (earlier.regime, earlier.ts)
    last = changes[-1]
    index = found.index(last)
    assert set(last.values) == {*DECIDING, "close", "volatility_percentile"}
    assert last.values["close"] == close[index]
    assert all(last.values[name] == rows[index][name] for name in DECIDING)
    assert 0.0 < last.values["volatility_percentile"] <= 1.0
    assert last.details["trend_adx"] == RegimeConfig().trend_adx and last.details["ema_slope_per_bar"] < 0
    assert all(r.values is None for r in found if not r.changed)


def test_restarts_give_identical_readings_and_state_stays_bounded():
    close, rows = market(np.concatenate([ranging(seed=16, n=500), trend(0.002, seed=17, n=500)]), seed=18)
    whole = readings(close, rows)
    restarted = readings(close, rows, restart_at=frozenset(range(0, 1000, 37)) | frozenset(range(35, 45)))
    assert restarted == whole
    detector = RegimeDetector()
    for i, values in enumerate(rows):
        detector.update(T0 + timedelta(minutes=i), close[i], values)
    assert len(detector.state.emas) == RegimeConfig().slope_bars + 1
    assert len(detector.state.volatilities) == RegimeConfig().volatility_window_bars
    assert len(msgspec.msgpack.encode(detector.state)) < 1200


def test_configuration_changes_the_decision_and_is_checked():
    close, rows = market(trend(0.0004, seed=19), seed=20)
    default = readings(close, rows)[100:]
    lenient = readings(close, rows, RegimeConfig(trend_adx=12.0, ranging_full_confidence_adx=5.0))[100:]
    assert share(lenient, "trending_up") > share(default, "trending_up") + 0.2
    for bad in ({"trend_adx": 50.0}, {"confirm_bars": 0}, {"volatile_percentile": 1.0}, {"min_volatility_samples": 500},
                {"adx_margin": 30.0}, {"percentile_margin": 0.95}):
        with pytest.raises(ValueError):
            RegimeConfig(**bad)
