"""streams.indicators against TA-Lib, pandas and itself (batching, restarts, state size)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np
import pandas as pd
import pytest
import talib
from backtesting.test import BTCUSD, EURUSD, GOOG

from tickwire.schemas.market import Bar
from tickwire.streams import indicators
from tickwire.streams.indicators import KEYS, Indicators, IndicatorState

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
# Where the issue allows rounding to differ: from this bar on, everywhere.
SETTLED = 300


def gappy_walk(n: int, seed: int) -> pd.DataFrame:
    """1m bars with price jumps, weekend-sized time gaps, zero volume and flat stretches.

    Flat stretches come in two kinds: a frozen close inside moving highs and lows, and
    a fully frozen bar (h == l == c: zero true range, TA-Lib's zero guards).
    """
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.004, n)
    jumps = rng.random(n) < 0.002
    returns[jumps] += rng.choice([-0.08, 0.08], jumps.sum())
    close = 50.0 * np.exp(np.cumsum(returns))
    spread = np.abs(rng.normal(0, 0.003, n)) * close
    high = close + spread * rng.random(n)
    low = close - spread * rng.random(n)
    opens = np.clip(np.roll(close, 1), low, high)
    opens[0] = close[0]
    for start in rng.choice(n - 80, 12, replace=False):
        length = int(rng.integers(25, 70))
        stop = start + length
        close[start:stop] = close[start]
        opens[start:stop] = close[start]
        if start % 2:
            high[start:stop] = low[start:stop] = close[start]
        else:
            high[start:stop] = np.maximum(high[start:stop], close[start])
            low[start:stop] = np.minimum(low[start:stop], close[start])
    volume = rng.integers(0, 5_000, n)
    volume[rng.random(n) < 0.05] = 0
    steps = np.full(n, 60_000_000, dtype=np.int64)
    steps[rng.random(n) < 0.003] = 2 * 86_400_000_000 + 17 * 60_000_000
    ts = np.int64(int(T0.timestamp()) * 1_000_000) + np.cumsum(steps)
    return pd.DataFrame({"ts": ts, "Open": opens, "High": high, "Low": low, "Close": close, "Volume": volume})


def real_bars(frame: pd.DataFrame) -> pd.DataFrame:
    ts = frame.index.as_unit("us").asi8.astype(np.int64)
    return pd.DataFrame({"ts": ts, **{k: frame[k].to_numpy(np.float64) for k in ("Open", "High", "Low", "Close", "Volume")}})


DATASETS = {
    "GOOG_daily": lambda: real_bars(GOOG),
    "EURUSD_hourly": lambda: real_bars(EURUSD),
    "BTCUSD_monthly": lambda: real_bars(BTCUSD),
    "walk_a": lambda: gappy_walk(20_000, seed=11),
    "walk_b": lambda: gappy_walk(20_000, seed=12),
}


def ours(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return Indicators().update_many(
        frame["ts"].to_numpy(),
        frame["Open"].to_numpy(np.float64),
        frame["High"].to_numpy(np.float64),
        frame["Low"].to_numpy(np.float64),
        frame["Close"].to_numpy(np.float64),
        frame["Volume"].to_numpy(np.float64),
    )


def talib_reference(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    h, l, c = (frame[k].to_numpy(np.float64) for k in ("High", "Low", "Close"))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    return {
        "ema_20": talib.EMA(c, 20),
        "ema_50": talib.EMA(c, 50),
        "rsi_14": talib.RSI(c, 14),
        "atr_14": talib.ATR(h, l, c, 14),
        "macd_line": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "adx_14": talib.ADX(h, l, c, 14),
        "plus_di_14": talib.PLUS_DI(h, l, c, 14),
        "minus_di_14": talib.MINUS_DI(h, l, c, 14),
    }


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Over finite entries; equal values (zeros included) differ by 0."""
    valid = ~np.isnan(b)
    a, b = a[valid], b[valid]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(a == b, 0.0, np.abs(a - b) / np.abs(b))
    return float(rel.max(initial=0.0))


@pytest.fixture(scope="module", params=sorted(DATASETS))
def dataset(request):
    frame = DATASETS[request.param]()
    return request.param, frame, ours(frame)


@pytest.mark.parametrize("key", sorted(talib_reference(gappy_walk(100, 1))))
def test_matches_talib_from_the_first_value(dataset, key):
    """TA-Lib's seeding is copied for every indicator, so the bound holds from its first value."""
    name, frame, got = dataset
    expected = talib_reference(frame)[key]
    assert np.array_equal(np.isnan(got[key]), np.isnan(expected)), f"{name} {key}: None where TA-Lib has a value, or the reverse"
    assert (~np.isnan(expected)).any()
    assert max_relative_difference(got[key], expected) <= 1e-9, name
    assert max_relative_difference(got[key][SETTLED:], expected[SETTLED:]) <= 1e-9, name


def test_flat_stretches_collapse_the_bands_where_talib_does():
    """The walks reach TA-Lib's zero guards: zero true range, twenty equal closes."""
    frame = gappy_walk(20_000, seed=11)
    got = ours(frame)
    expected = talib_reference(frame)
    assert (frame["High"] == frame["Low"]).sum() > 100
    assert np.any(got["bb_upper"] == got["bb_lower"])
    assert np.array_equal(got["bb_upper"] == got["bb_lower"], expected["bb_upper"] == expected["bb_lower"])


def test_volatility_is_sample_std_of_20_log_returns(dataset):
    name, frame, got = dataset
    log_returns = np.log(frame["Close"]).diff()
    rolling = log_returns.rolling(20).std(ddof=1).to_numpy()
    assert np.array_equal(np.isnan(got["volatility_20d"]), np.isnan(rolling))
    # pandas' online update leaves residue (seen: 5e-10) on windows of equal returns
    # after a jump, so it is held to an absolute bound; a two-pass std on each window
    # is the exact reference, and is 0 exactly on flat windows, as ours is.
    valid = ~np.isnan(rolling)
    assert np.allclose(got["volatility_20d"][valid], rolling[valid], rtol=1e-9, atol=1e-9), name
    windows = np.lib.stride_tricks.sliding_window_view(log_returns.to_numpy()[1:], 20)
    two_pass = np.full(len(frame), np.nan)
    two_pass[20:] = windows.std(axis=1, ddof=1)
    assert max_relative_difference(got["volatility_20d"], two_pass) <= 1e-9, name


def test_vwap_is_anchored_to_the_utc_day(dataset):
    name, frame, got = dataset
    typical = (frame["High"] + frame["Low"] + frame["Close"]) / 3.0
    day = frame["ts"] // 86_400_000_000
    pv = (typical * frame["Volume"]).groupby(day).cumsum()
    volume = frame["Volume"].groupby(day).cumsum()
    expected = (pv / volume).where(volume > 0).to_numpy()
    assert np.array_equal(np.isnan(got["vwap"]), np.isnan(expected)), name
    assert max_relative_difference(got["vwap"], expected) <= 1e-12, name


def test_vwap_anchor_is_configurable_and_uses_the_bar_vwap():
    ts = np.array([0, 3_600_000_000, 7_200_000_000], dtype=np.int64)  # 00:00, 01:00, 02:00
    price = np.array([10.0, 20.0, 30.0])
    volume = np.array([1.0, 3.0, 1.0])
    bar_vwap = np.array([11.0, np.nan, 29.0])
    two_hours = Indicators(vwap_anchor_s=7200).update_many(ts, price, price, price, price, volume, bar_vwap)["vwap"]
    assert two_hours.tolist() == [11.0, (11.0 + 60.0) / 4, 29.0]
    shifted = Indicators(vwap_anchor_s=7200, vwap_offset_s=3600).update_many(ts, price, price, price, price, volume, bar_vwap)["vwap"]
    assert shifted.tolist() == [11.0, 20.0, (60.0 + 29.0) / 4]


def bars_of(frame: pd.DataFrame, symbol: str = "SYM") -> list[Bar]:
    return [
        Bar(
            symbol=symbol,
            ts=datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(t)),
            open=o, high=h, low=l, close=c, volume=int(v),
        )
        for t, o, h, l, c, v in zip(*(frame[k].tolist() for k in ("ts", "Open", "High", "Low", "Close", "Volume")))
    ]


def as_matrix(rows: list[dict[str, float | None]]) -> np.ndarray:
    return np.array([[np.nan if r[k] is None else r[k] for k in KEYS] for r in rows])


def restore(state: IndicatorState) -> Indicators:
    return Indicators(msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=IndicatorState))


@pytest.mark.parametrize("source", ["GOOG_daily", "walk_a"])
def test_one_at_a_time_batches_and_restarts_are_bit_identical(source):
    frame = DATASETS[source]().iloc[:6_000].reset_index(drop=True)
    frame["Volume"] = frame["Volume"].round()
    one_at_a_time = Indicators()
    reference = as_matrix([one_at_a_time.update(bar) for bar in bars_of(frame)])

    rng = np.random.default_rng(5)
    columns = [frame[k].to_numpy() for k in ("ts", "Open", "High", "Low", "Close", "Volume")]
    indicators = Indicators()
    pieces = []
    start = 0
    while start < len(frame):
        stop = start + int(rng.choice([1, 2, 7, 19, 50, 333, 1000]))
        out = indicators.update_many(*(col[start:stop] for col in columns))
        pieces.append(np.column_stack([out[k] for k in KEYS]))
        if rng.random() < 0.3:
            indicators = restore(indicators.state)  # a restart between two batches
        start = stop
    batched = np.concatenate(pieces)

    # A restart at every warm-up bar, where most of the seeding branches switch.
    bars = bars_of(frame)
    indicators = Indicators()
    rows = []
    for i, bar in enumerate(bars):
        if i < 60 or i % 997 == 0:
            indicators = restore(indicators.state)
        rows.append(indicators.update(bar))
    restarted = as_matrix(rows)

    assert reference.tobytes() == batched.tobytes()
    assert reference.tobytes() == restarted.tobytes()


def test_restored_state_keeps_its_vwap_anchor():
    indicators = Indicators(vwap_anchor_s=3600, vwap_offset_s=1800)
    restored = restore(indicators.state)
    assert (restored.state.vwap_anchor_s, restored.state.vwap_offset_s) == (3600, 1800)


def test_state_size_does_not_grow_with_history():
    frame = gappy_walk(30_000, seed=3)
    columns = [frame[k].to_numpy() for k in ("ts", "Open", "High", "Low", "Close", "Volume")]
    indicators = Indicators()
    sizes = []
    for start in range(0, 30_000, 1_000):
        indicators.update_many(*(col[start:start + 1_000] for col in columns))
        sizes.append(len(msgspec.msgpack.encode(indicators.state)))
    # Only the bar counter may widen (uint16 -> uint32: 2 bytes); floats are 9 bytes each.
    assert max(sizes) - min(sizes) <= 2, sizes
    assert max(sizes) < 4096


def test_the_layout_keeps_the_offsets_stored_states_were_written_with():
    """The offsets are computed from the slot declarations: these are the ones of the
    hand-numbered layout before, which states in the stores were written with."""
    names = ("_COUNT", "_PREV_HIGH", "_PREV_LOW", "_PREV_CLOSE", "_EMA20", "_EMA50", "_RSI_GAIN", "_RSI_LOSS", "_ATR",
             "_MACD_FAST", "_MACD_SLOW", "_MACD_SIGNAL", "_BB_SUM", "_PLUS_DM", "_MINUS_DM", "_TRUE_RANGE", "_ADX",
             "_VWAP_PERIOD", "_VWAP_PV", "_VWAP_VOLUME", "_CLOSES", "_RETURNS", "STATE_SIZE")
    assert [getattr(indicators, name) for name in names] == [*range(21), 46, 72]
    window = [indicators._SHIFT, indicators._SUM, indicators._SUM_SQ, indicators._PEAK_SQ, indicators._LAST, indicators._REPEATS]
    assert window == [20, 21, 22, 23, 24, 25]
    assert len(IndicatorState().data) == 576


def test_the_kernel_gives_one_value_per_key():
    """``update_many`` writes the kernel's values into ``len(KEYS)`` rows unchecked."""
    assert len(indicators._update_one.nopython_signatures[0].return_type) == len(KEYS)


def test_update_many_rejects_ragged_arrays():
    with pytest.raises(ValueError):
        Indicators().update_many(np.zeros(3, np.int64), np.ones(3), np.ones(3), np.ones(3), np.ones(2), np.ones(3))


def test_only_vwap_has_a_value_on_the_first_bar():
    bar = Bar(symbol="SYM", ts=T0, open=10.0, high=12.0, low=9.0, close=11.0, volume=5)
    first = Indicators().update(bar)
    assert list(first) == list(KEYS)
    assert {k: v for k, v in first.items() if v is not None} == {"vwap": (12.0 + 9.0 + 11.0) / 3}
