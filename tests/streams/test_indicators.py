import numpy as np
import pytest
import talib

from streams.indicators import Ema, EmaState


def random_walk(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


@pytest.mark.parametrize("period", [20, 50])
def test_ema_matches_talib_on_10000_bars(period):
    closes = random_walk(10_000)
    ours = Ema(period).update_many(closes)
    theirs = talib.EMA(closes, timeperiod=period)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    valid = ~np.isnan(theirs)
    assert np.max(np.abs(ours[valid] / theirs[valid] - 1)) <= 1e-9


def test_ema_is_null_during_warm_up():
    ema = Ema(20)
    assert [ema.update(float(x)) for x in range(1, 20)] == [None] * 19
    assert ema.update(20.0) == pytest.approx(10.5)


def test_ema_restart_from_serialized_state_is_bit_identical():
    import msgspec

    closes = random_walk(500, seed=3)
    whole = Ema(20).update_many(closes)
    first = Ema(20)
    head = first.update_many(closes[:137])
    restored = Ema(20, msgspec.msgpack.decode(msgspec.msgpack.encode(first.state), type=EmaState))
    tail = restored.update_many(closes[137:])
    assert np.array_equal(np.concatenate([head, tail]), whole, equal_nan=True)
