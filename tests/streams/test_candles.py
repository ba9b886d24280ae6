"""streams.candles: resampling against pandas, close-once semantics, trades into bars, restarts."""

from __future__ import annotations

from bisect import bisect_left
from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np
import pandas as pd
import pytest

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Bar, timeframe_seconds
from tickwire.schemas.trades import Trade
from tickwire.streams.candles import Resampler, ResamplerState, TradeAggregator, TradeAggregatorState

T0 = datetime(2026, 3, 2, 22, 0, tzinfo=timezone.utc)  # two hours before a UTC day ends
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
TIMEFRAMES = ("5m", "15m", "1h", "1d")


def minute_bars(n: int, seed: int = 1, *, with_trade_counts: bool = True) -> list[Bar]:
    """1m bars over ``n`` minutes with missing minutes and missing hours (gaps)."""
    rng = np.random.default_rng(seed)
    present = rng.random(n) > 0.15
    if n > 200:
        present[rng.integers(0, n - 120):][:90] = False  # a 90-minute hole
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    bars = []
    for i in np.nonzero(present)[0].tolist():
        o, c = close[i - 1] if i else close[0], close[i]
        high = max(o, c) * (1 + rng.random() * 0.002)
        low = min(o, c) * (1 - rng.random() * 0.002)
        volume = int(rng.integers(0, 3000))
        bars.append(Bar(
            symbol="ABC", ts=T0 + timedelta(minutes=i), open=float(o), high=float(high), low=float(low), close=float(c),
            volume=volume, vwap=float(low + (high - low) * rng.random()),
            trade_count=int(rng.integers(0, 50)) if with_trade_counts else None,
        ))
    return bars


def key(bar: Bar) -> tuple[str, datetime]:
    return bar.timeframe, bar.ts


def run_resampler(bars: list[Bar], *, restart_every: int = 0) -> list[tuple[int, Bar]]:
    """(index of the input that closed it, bar) for every emitted bar; watermark at the end."""
    resampler = Resampler(timeframes=TIMEFRAMES)
    out = []
    for i, bar in enumerate(bars):
        if restart_every and i % restart_every == restart_every - 1:
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(resampler.state), type=ResamplerState)
            resampler = Resampler(state, timeframes=TIMEFRAMES)
        out.extend((i, b) for b in resampler.update(bar))
    out.extend((len(bars), b) for b in resampler.advance_watermark(NOW))
    return out


def pandas_resample(bars: list[Bar], timeframe: str) -> pd.DataFrame:
    frame = pd.DataFrame({
        "ts": [b.ts for b in bars], "open": [b.open for b in bars], "high": [b.high for b in bars],
        "low": [b.low for b in bars], "close": [b.close for b in bars], "volume": [b.volume for b in bars],
        "pv": [b.vwap * b.volume for b in bars], "trade_count": [b.trade_count for b in bars], "n": 1,
    }).set_index("ts")
    agg = frame.resample(f"{timeframe_seconds(timeframe)}s", origin="epoch", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum", "pv": "sum", "trade_count": "sum", "n": "sum"}
    )
    return agg[agg["n"] > 0]


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    return minute_bars(3 * 1440 + 77)


@pytest.fixture(scope="module")
def emitted(bars) -> list[tuple[int, Bar]]:
    return run_resampler(bars)


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
def test_resampled_bars_match_pandas(bars, emitted, timeframe):
    got = [b for _, b in emitted if b.timeframe == timeframe]
    expected = pandas_resample(bars, timeframe)
    assert [b.ts for b in got] == [ts.to_pydatetime() for ts in expected.index]
    assert [(b.open, b.high, b.low, b.close, b.volume, b.trade_count) for b in got] == list(
        zip(expected["open"], expected["high"], expected["low"], expected["close"], expected["volume"], expected["trade_count"])
    )
    for b, pv, volume in zip(got, expected["pv"], expected["volume"]):
        assert b.vwap == (None if volume == 0 else pytest.approx(pv / volume, rel=1e-12))
        assert b.source == "resample"
        b.validate(now=NOW, max_future_skew_s=0)


def test_each_period_is_emitted_once_never_empty_at_its_close(bars, emitted):
    keys = [key(b) for _, b in emitted]
    assert len(keys) == len(set(keys))
    input_ts = [b.ts for b in bars]
    for index, bar in emitted:
        end = bar.ts + timedelta(seconds=timeframe_seconds(bar.timeframe))
        first, last = bisect_left(input_ts, bar.ts), bisect_left(input_ts, end) - 1
        assert first <= last, "empty period emitted"
        if input_ts[last] + timedelta(minutes=1) == end:
            assert index == last, "a period whose last minute arrived closes with it"
        else:
            assert index == last + 1, "a period closes with the first bar after it (or the watermark)"


def test_every_timeframe_closes_with_its_last_minute():
    first = minute_bars(10, seed=4)[0]  # 2026-03-02 22:00
    resampler = Resampler(timeframes=TIMEFRAMES)
    resampler.update(first)
    closed = resampler.update(msgspec.structs.replace(first, ts=datetime(2026, 3, 3, 23, 59, tzinfo=timezone.utc)))
    # The first bar's periods close because a later one arrived; the second bar's
    # because it fills their last minute.
    day = datetime(2026, 3, 2, tzinfo=timezone.utc)
    assert [(b.timeframe, b.ts - day) for b in closed] == [
        ("5m", timedelta(hours=22)), ("5m", timedelta(hours=47, minutes=55)),
        ("15m", timedelta(hours=22)), ("15m", timedelta(hours=47, minutes=45)),
        ("1h", timedelta(hours=22)), ("1h", timedelta(hours=47)),
        ("1d", timedelta(0)), ("1d", timedelta(days=1)),
    ]
    assert resampler.state.open == {}


def test_watermark_closes_a_period_missing_its_last_minute():
    first = minute_bars(10, seed=2)[0]
    resampler = Resampler(timeframes=("5m",))
    assert resampler.update(first) == []
    assert resampler.advance_watermark(first.ts + timedelta(minutes=4, seconds=59)) == []
    (closed,) = resampler.advance_watermark(first.ts + timedelta(minutes=5))
    assert (closed.ts, closed.volume) == (first.ts, first.volume)
    assert resampler.advance_watermark(first.ts + timedelta(minutes=10)) == []
    with pytest.raises(InvalidMessage) as late:
        resampler.update(msgspec.structs.replace(first, ts=first.ts + timedelta(minutes=3)))
    assert late.value.reason == "late_bar"


def test_late_bar_is_refused_and_leaves_state_untouched(bars):
    resampler = Resampler(timeframes=TIMEFRAMES)
    for bar in bars[:50]:
        resampler.update(bar)
    before = msgspec.msgpack.encode(resampler.state)
    for late in (bars[10], msgspec.structs.replace(bars[49], close=bars[49].high)):
        with pytest.raises(InvalidMessage) as refused:
            resampler.update(late)
        assert refused.value.reason == "late_bar"
    assert msgspec.msgpack.encode(resampler.state) == before


def test_exact_duplicate_of_the_last_bar_is_dropped_and_counted(bars):
    resampler = Resampler(timeframes=TIMEFRAMES)
    for bar in bars[:5]:
        resampler.update(bar)
    open_before = msgspec.msgpack.encode(resampler.state.open)
    assert resampler.update(bars[4]) == []
    assert resampler.update(bars[4]) == []
    assert resampler.state.duplicates == 2
    assert msgspec.msgpack.encode(resampler.state.open) == open_before


def test_wrong_or_misaligned_base_bars_are_invalid(bars):
    resampler = Resampler(timeframes=TIMEFRAMES)
    for bad in (msgspec.structs.replace(bars[0], timeframe="5m"), msgspec.structs.replace(bars[0], ts=bars[0].ts + timedelta(seconds=30))):
        with pytest.raises(InvalidMessage) as refused:
            resampler.update(bad)
        assert refused.value.reason == "invalid_value"
    for base, higher in (("5m", "7m"), ("1m", "1m")):
        with pytest.raises(ValueError):
            Resampler(base=base, timeframes=(higher,))


def test_missing_vwap_or_trade_count_makes_the_period_unknown_not_wrong():
    bars = minute_bars(10, seed=3)[:3]
    bars[1] = msgspec.structs.replace(bars[1], vwap=None, trade_count=None)
    resampler = Resampler(timeframes=("1h",))
    for bar in bars:
        resampler.update(bar)
    (closed,) = resampler.advance_watermark(NOW)
    assert (closed.vwap, closed.trade_count, closed.volume) == (None, None, sum(b.volume for b in bars))


def test_restarts_give_identical_output(bars, emitted):
    assert run_resampler(bars, restart_every=97) == emitted
    assert run_resampler(bars, restart_every=1) == emitted


# --- trades -> 1m bars -------------------------------------------------------


def trades(n: int, seed: int = 9) -> list[Trade]:
    """Trades over about 3 hours, several per second at times, some ids sharing a timestamp."""
    rng = np.random.default_rng(seed)
    us = np.sort(rng.integers(0, 3 * 3_600_000_000, n))
    us[1::7] = us[0::7][: len(us[1::7])]  # ties on event time
    us = np.sort(us)
    prices = 20 * np.exp(np.cumsum(rng.normal(0, 0.0005, n)))
    return [
        Trade(symbol="ABC", ts=T0 + timedelta(microseconds=int(u)), price=float(p), size=int(s), trade_id=str(i + 1))
        for i, (u, p, s) in enumerate(zip(us.tolist(), prices.tolist(), rng.integers(1, 500, n).tolist()))
    ]


def shuffled_within(items: list[Trade], seconds: float, seed: int = 3) -> list[Trade]:
    """Arrival order: each trade delayed by up to ``seconds`` after its event time."""
    rng = np.random.default_rng(seed)
    delays = rng.random(len(items)) * seconds
    order = np.argsort([t.ts.timestamp() + d for t, d in zip(items, delays)], kind="stable")
    return [items[i] for i in order]


def pandas_minutes(items: list[Trade]) -> pd.DataFrame:
    frame = pd.DataFrame({"ts": [t.ts for t in items], "id": [int(t.trade_id) for t in items],
                          "price": [t.price for t in items], "size": [t.size for t in items]})
    frame = frame.sort_values(["ts", "id"])
    frame["pv"] = frame["price"] * frame["size"]
    grouped = frame.groupby(frame["ts"].dt.floor("min"))
    return grouped.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
                       volume=("size", "sum"), pv=("pv", "sum"), trade_count=("price", "size"))


def run_aggregator(arrivals: list[Trade], *, grace_s: float, restart_every: int = 0) -> tuple[list[Bar], int]:
    aggregator = TradeAggregator(grace_s=grace_s)
    out = []
    for i, trade in enumerate(arrivals):
        if restart_every and i % restart_every == restart_every - 1:
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(aggregator.state), type=TradeAggregatorState)
            aggregator = TradeAggregator(state, grace_s=grace_s)
        out.extend(aggregator.update(trade))
    out.extend(aggregator.advance_watermark(NOW))
    return out, aggregator.state.duplicates


@pytest.fixture(scope="module")
def trade_run():
    items = trades(20_000)
    arrivals = shuffled_within(items, seconds=5.0)
    rng = np.random.default_rng(4)
    redelivered = [arrivals[i] for i in rng.choice(len(arrivals) - 1, 300, replace=False).tolist()]
    # Each redelivery arrives within a second of the original: never behind a closed period.
    with_duplicates = list(arrivals)
    for trade in redelivered:
        at = with_duplicates.index(trade) + 1
        with_duplicates.insert(at + int(rng.integers(0, 3)), trade)
    return items, with_duplicates, len(redelivered)


def test_trades_aggregate_into_minute_bars_like_pandas(trade_run):
    items, arrivals, redelivered = trade_run
    got, duplicates = run_aggregator(arrivals, grace_s=6.0)
    expected = pandas_minutes(items)
    assert duplicates == redelivered
    assert [b.ts for b in got] == [ts.to_pydatetime() for ts in expected.index]
    assert [(b.open, b.high, b.low, b.close, b.volume, b.trade_count) for b in got] == list(
        zip(expected["open"], expected["high"], expected["low"], expected["close"], expected["volume"], expected["trade_count"])
    )
    for b, pv, volume in zip(got, expected["pv"], expected["volume"]):
        assert b.vwap == pytest.approx(pv / volume, rel=1e-12)
        assert (b.source, b.timeframe) == ("trades", "1m")
        b.validate(now=NOW, max_future_skew_s=0)


def test_trade_restarts_give_identical_bars(trade_run):
    _, arrivals, _ = trade_run
    whole = run_aggregator(arrivals, grace_s=6.0)
    assert run_aggregator(arrivals, grace_s=6.0, restart_every=211) == whole


def test_ties_on_event_time_are_ordered_by_numeric_trade_id():
    ts = T0 + timedelta(seconds=5)
    aggregator = TradeAggregator()
    for price, trade_id in ((11.0, "10"), (9.0, "9"), (12.0, "100")):
        aggregator.update(Trade(symbol="ABC", ts=ts, price=price, size=1, trade_id=trade_id))
    (bar,) = aggregator.advance_watermark(T0 + timedelta(minutes=1))
    assert (bar.open, bar.close, bar.high, bar.low, bar.trade_count) == (9.0, 12.0, 12.0, 9.0, 3)


def test_a_minute_closes_when_a_trade_past_its_grace_arrives():
    aggregator = TradeAggregator(grace_s=2.0)
    first = Trade(symbol="ABC", ts=T0 + timedelta(seconds=30), price=10.0, size=2, trade_id="a1")
    assert aggregator.update(first) == []
    assert aggregator.update(Trade(symbol="ABC", ts=T0 + timedelta(seconds=61), price=10.5, size=1, trade_id="a2")) == []
    (closed,) = aggregator.update(Trade(symbol="ABC", ts=T0 + timedelta(seconds=62), price=10.4, size=1, trade_id="a3"))
    assert (closed.ts, closed.volume, closed.trade_count) == (T0, 2, 1)


def test_late_trades_are_refused_with_state_untouched():
    aggregator = TradeAggregator()
    aggregator.update(Trade(symbol="ABC", ts=T0 + timedelta(seconds=1), price=10.0, size=1, trade_id="1"))
    aggregator.update(Trade(symbol="ABC", ts=T0 + timedelta(minutes=5), price=10.0, size=1, trade_id="2"))
    before = msgspec.msgpack.encode(aggregator.state)
    # Minute 0 closed with a bar; minutes 1-4 closed with none: both are late now.
    for late_s in (30, 150):
        with pytest.raises(InvalidMessage) as refused:
            aggregator.update(Trade(symbol="ABC", ts=T0 + timedelta(seconds=late_s), price=10.0, size=1, trade_id=f"late{late_s}"))
        assert refused.value.reason == "out_of_order"
    assert msgspec.msgpack.encode(aggregator.state) == before


def test_duplicate_of_a_just_closed_minute_is_dropped_not_late():
    aggregator = TradeAggregator()
    first = Trade(symbol="ABC", ts=T0, price=10.0, size=1, trade_id="1")
    aggregator.update(first)
    assert len(aggregator.update(Trade(symbol="ABC", ts=T0 + timedelta(minutes=1), price=10.0, size=1, trade_id="2"))) == 1
    assert aggregator.update(first) == []
    assert aggregator.state.duplicates == 1


def test_trade_schema_rejects_bad_input():
    raw = {"symbol": "ABC", "ts": "2026-03-02T22:00:00Z", "price": 10.0, "size": 1, "trade_id": "x"}
    assert msgspec.json.decode(msgspec.json.encode(raw), type=Trade).trade_id == "x"
    for bad in ({"price": -1.0}, {"size": 0}, {"trade_id": ""}, {"ts": "2026-03-02T22:00:00"}, {"venue": "X"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(raw | bad), type=Trade)
    future = msgspec.json.decode(msgspec.json.encode(raw | {"ts": "2031-01-01T00:00:00Z"}), type=Trade)
    with pytest.raises(InvalidMessage) as refused:
        future.validate(now=NOW, max_future_skew_s=5)
    assert refused.value.reason == "bad_timestamp"


def test_a_trade_that_would_take_its_bars_volume_past_the_bound_is_refused_untouched():
    from tickwire.schemas.market import MAX_VOLUME

    aggregator = TradeAggregator(TradeAggregatorState(), timeframe="1m")
    t0 = datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)
    aggregator.update(Trade(symbol="BIG", ts=t0, price=1.0, size=MAX_VOLUME, trade_id="1"))
    frozen = msgspec.msgpack.encode(aggregator.state)
    with pytest.raises(InvalidMessage) as refused:
        aggregator.update(Trade(symbol="BIG", ts=t0 + timedelta(seconds=1), price=1.0, size=1, trade_id="2"))
    assert refused.value.reason == "invalid_value" and msgspec.msgpack.encode(aggregator.state) == frozen
