"""The per-symbol core the worker runs: timeframes, regimes, redeliveries and restarts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Bar, Condition, RegimeChange
from tickwire.streams.simulator import MarketSimulator
from tickwire.streams.symbol import RegimeHistory, SymbolProcessor, SymbolState, SymbolStateV1, _FrameStateV1

START = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)


def run(processor, bars, state=None):
    state = state or SymbolState()
    outputs = []
    for bar in bars:
        produced, redelivered = processor.process(state, bar)
        assert not redelivered
        outputs += produced
    return state, outputs


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    # Two and a half days of 1m bars with strong moves, so regimes change several times.
    return list(MarketSimulator(["AAPL"], seed=3, start=START, bar_volatility=0.004).bars(3600))


def test_every_timeframe_gets_its_closed_bars_once(bars):
    _, outputs = run(SymbolProcessor(), bars)
    conditions = [msgspec.json.decode(v, type=Condition) for kind, v in outputs if kind == "condition"]
    by_tf = {}
    for c in conditions:
        by_tf.setdefault(c.timeframe, []).append(c)
    # 60 hours of 1m bars: a period closes with its last minute; the third day is still open.
    assert {tf: len(rows) for tf, rows in by_tf.items()} == {"1m": 3600, "5m": 720, "15m": 240, "1h": 60, "1d": 2}
    for tf, rows in by_tf.items():
        stamps = [c.timestamp for c in rows]
        assert stamps == sorted(set(stamps)), tf
    first_hour = [c for c in by_tf["1m"] if c.timestamp < START + timedelta(hours=1)]
    hour = by_tf["1h"][0]
    assert (hour.open, hour.close) == (first_hour[0].open, first_hour[-1].close)
    assert hour.high == max(c.high for c in first_hour) and hour.low == min(c.low for c in first_hour)
    assert hour.volume == sum(c.volume for c in first_hour)


def test_regime_changes_chain_and_match_the_conditions(bars):
    _, outputs = run(SymbolProcessor(resample_to=()), bars)
    changes = [msgspec.json.decode(v, type=RegimeChange) for kind, v in outputs if kind == "regime"]
    conditions = {c.timestamp: c for c in (msgspec.json.decode(v, type=Condition) for kind, v in outputs if kind == "condition")}
    assert len(changes) >= 3
    assert changes[0].previous_regime is None and changes[0].previous_regime_since is None
    for before, after in zip(changes, changes[1:]):
        assert after.previous_regime == before.regime != after.regime
        assert after.previous_regime_since == before.timestamp
    for change in changes:
        condition = conditions[change.timestamp]
        assert condition.detected_regime == change.regime
        assert condition.regime_confidence == change.confidence
        assert 0.0 <= change.confidence <= 1.0
        assert change.adx_14 == condition.adx_14 and change.close == condition.close
    warm = [c for c in conditions.values() if c.detected_regime is None]
    assert warm and max(c.timestamp for c in warm) < changes[0].timestamp


def test_a_duplicate_bar_produces_nothing_and_changes_nothing(bars):
    processor = SymbolProcessor()
    state, _ = run(processor, bars[:600])
    produced, duplicate = processor.process(state, bars[600])
    assert any(kind == "condition" for kind, _ in produced) and not duplicate
    frozen = msgspec.msgpack.encode(state)
    again, duplicate = processor.process(state, bars[600])
    assert duplicate and again == []
    assert msgspec.msgpack.encode(state) == frozen
    with pytest.raises(InvalidMessage) as conflicting:
        processor.process(state, msgspec.structs.replace(bars[600], close=bars[600].close * 1.01, high=bars[600].high * 1.02))
    assert conflicting.value.reason == "conflicting_duplicate"
    assert msgspec.msgpack.encode(state) == frozen


def test_a_state_of_the_first_layout_is_read_with_its_frames_resampled(bars):
    processor = SymbolProcessor()
    state, _ = run(processor, bars[:300])
    old = SymbolStateV1(
        {tf: _FrameStateV1(f.last_ts_us, f.indicators, f.regime, [("condition", b"{}")]) for tf, f in state.frames.items()},
        state.resampler,
    )
    restored = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=SymbolStateV1).upgraded()
    for frame in state.frames.values():
        frame.last_bar = None  # layout 1 did not keep it: a repeat of its last bar counts as a duplicate
        frame.trend = None  # nor the trend: the next bar gives it
    assert state.regimes.changes
    state.regimes = RegimeHistory()  # nor the regimes' history: it starts with the next change
    assert msgspec.msgpack.encode(restored) == msgspec.msgpack.encode(state)


def test_a_vendors_daily_bars_are_fed_and_the_resampled_ones_then_unused():
    processor = SymbolProcessor()
    days = list(MarketSimulator(["SPY"], seed=3, start=datetime(1999, 1, 4, tzinfo=timezone.utc), timeframe="1d").bars(300))
    state, outputs = run(processor, days)
    daily = [msgspec.json.decode(v, type=Condition) for kind, v in outputs if kind == "condition"]
    assert len(daily) == 300 and daily[-1].ema_50 is not None and state.frames["1d"].fed
    live = list(MarketSimulator(["SPY"], seed=4, start=days[-1].ts + timedelta(days=1)).bars(3 * 1440))
    _, outputs = run(processor, live, state)
    by_tf = {}
    for kind, value in outputs:
        if kind == "condition":
            condition = msgspec.json.decode(value, type=Condition)
            by_tf.setdefault(condition.timeframe, []).append(condition)
    assert "1d" not in by_tf and len(by_tf["1h"]) >= 70  # the fed daily series is not mixed with resampled days
    assert not state.frames["1h"].fed
    with pytest.raises(InvalidMessage) as conflicting:
        processor.process(state, msgspec.structs.replace(live[-1], timeframe="1h", ts=live[-1].ts + timedelta(hours=2)))
    assert conflicting.value.reason == "conflicting_source"
    nxt = msgspec.structs.replace(days[-1], ts=live[-1].ts + timedelta(days=1))
    assert processor.process(state, nxt)[0]  # the vendor's next day goes on as before


def test_late_and_derived_bars_are_refused_without_touching_state(bars):
    processor = SymbolProcessor()
    state, _ = run(processor, bars[:100])
    frozen = msgspec.msgpack.encode(state)
    with pytest.raises(InvalidMessage) as late:
        processor.process(state, bars[50])
    assert late.value.reason == "late_bar"
    with pytest.raises(InvalidMessage) as derived:
        processor.process(state, msgspec.structs.replace(bars[100], timeframe="5m"))
    assert derived.value.reason == "conflicting_source"  # 5m is resampled for this symbol already
    assert msgspec.msgpack.encode(state) == frozen


def test_a_restart_from_the_stored_state_gives_identical_outputs(bars):
    processor = SymbolProcessor()
    _, straight = run(processor, bars)
    state, first = run(processor, bars[:1234])
    restored = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=SymbolState)
    _, rest = run(processor, bars[1234:], restored)
    assert first + rest == straight


def test_every_value_derived_from_prices_at_the_contracts_bounds_fits_its_column():
    from tickwire.schemas.market import MAX_PRICE, MIN_PRICE

    top = MAX_PRICE * (1 - 1e-12)
    bars, t0 = [], datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)
    for i in range(120):  # the widest swings the contract allows, bar after bar
        low, high = (MIN_PRICE, top) if i % 3 else (top, top)
        close = high if i % 2 else low
        bars.append(Bar(symbol="EDGE", ts=t0 + timedelta(minutes=i), open=close, high=high, low=low, close=close, volume=1))
    _, outputs = run(SymbolProcessor(), bars)
    conditions = [msgspec.json.decode(v, type=Condition) for kind, v in outputs if kind == "condition"]
    decimal_18_8 = ("open", "high", "low", "close", "vwap", "atr_14", "ema_20", "ema_50", "bb_upper", "bb_middle",
                    "bb_lower", "macd_line", "macd_signal", "macd_hist")
    for c in conditions:
        assert all(abs(getattr(c, name) or 0) < 1e10 for name in decimal_18_8), c
        assert all(0 <= (getattr(c, name) or 0) <= 100 for name in ("rsi_14", "adx_14", "plus_di_14", "minus_di_14")), c
        assert abs(c.volatility_20d or 0) < 1e4  # DECIMAL(10, 6)
    assert max(c.bb_upper or 0 for c in conditions) > MAX_PRICE  # the bands do pass the price range
