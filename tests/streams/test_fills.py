"""streams.fills and the Fill message: trade building, excursions, bad fills, restarts."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from tickwire.schemas.codec import Codec
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Bar
from tickwire.schemas.signals import Fill, TradeOutcomeRow
from tickwire.streams.fills import TradeBook, TradeBuilder, TradeConfig

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=1)
TRADE = uuid.UUID("00000000-0000-4000-8000-000000000001")
_ids = iter(range(10**6))


def fill(side: str, qty: int, price: float, seconds: float, *, commission: float = 0.0, decision: float | None = None, trade: uuid.UUID = TRADE, **kw: object) -> Fill:
    fields = {
        "fill_id": f"f{next(_ids)}",
        "trade_id": trade,
        "strategy_id": "mean-rev",
        "model_version": "v1",
        "symbol": "AAPL",
        "side": side,
        "ts": T0 + timedelta(seconds=seconds),
        "price": price,
        "quantity": qty,
        "commission": commission,
        "decision_price": decision,
    }
    fields.update(kw)
    return Fill(**fields)


def bar(minute: int, high: float, low: float, timeframe: str = "1m") -> Bar:
    mid = (high + low) / 2
    return Bar(symbol="AAPL", ts=T0 + timedelta(minutes=minute), open=mid, high=high, low=low, close=mid, volume=1, timeframe=timeframe)


CODEC = Codec(Fill)


def raw(**changes: object) -> bytes:
    body = {
        "fill_id": "x-1",
        "trade_id": str(TRADE),
        "strategy_id": "s1",
        "model_version": "v1",
        "symbol": "AAPL",
        "side": "BUY",
        "ts": T0.isoformat(),
        "price": 10.0,
        "quantity": 5,
        "commission": 0.1,
        "decision_price": 10.01,
    }
    body.update(changes)
    return json.dumps(body).encode()


def test_fill_message_decodes() -> None:
    f = CODEC.decode(raw(), now=NOW)
    assert f.trade_id == TRADE and f.side == "BUY" and f.decision_price == 10.01


@pytest.mark.parametrize(
    "changes, reason, words",
    [
        ({"side": "HOLD"}, "invalid_value", "side"),
        ({"quantity": 0}, "invalid_value", "quantity"),
        ({"quantity": -3}, "invalid_value", "quantity"),
        ({"price": 0.0}, "invalid_value", "price"),
        ({"price": -1.0}, "invalid_value", "price"),
        ({"decision_price": 0.0}, "invalid_value", "decision_price"),
        ({"commission": -0.5}, "invalid_value", "commission"),
        ({"quantity": 1.5}, "schema", "quantity"),
        ({"trade_id": "abc"}, "schema", "trade_id"),
    ],
)
def test_bad_fills_are_rejected_with_a_reason(changes: dict, reason: str, words: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        CODEC.decode(raw(**changes), now=NOW)
    assert err.value.reason == reason and words in err.value.detail


def test_long_trade_with_scale_in_and_partial_exit() -> None:
    b, book = TradeBuilder(), TradeBook()
    r1, _ = b.on_fill(book, fill("BUY", 100, 10.00, 0, commission=1.0, decision=9.99))
    assert (r1.direction, r1.outcome_type, r1.quantity, r1.exit_price, r1.gross_pnl, r1.net_pnl) == ("LONG", "OPEN", 100, None, 0.0, -1.0)
    b.on_fill(book, fill("BUY", 100, 10.20, 60, commission=1.0, decision=10.20))
    r3, _ = b.on_fill(book, fill("SELL", 50, 10.50, 300, commission=0.5, decision=10.52))
    # entry VWAP (1000 + 1020) / 200 = 10.10; realised (10.50 - 10.10) * 50 = 20
    assert r3.outcome_type == "OPEN" and r3.exit_time is None and r3.duration_seconds is None
    assert r3.entry_price == pytest.approx(10.10) and r3.exit_price == pytest.approx(10.50)
    assert r3.gross_pnl == pytest.approx(20.0) and r3.net_pnl == pytest.approx(17.5)
    r4, _ = b.on_fill(book, fill("SELL", 150, 10.00, 600, commission=1.5))
    # exit notional 525 + 1500 = 2025 against 2020 in: gross 5, commission 4, net 1 > 1 bp of 2020
    assert r4.outcome_type == "WIN" and r4.quantity == 200 and r4.entry_time == T0
    assert r4.exit_time == T0 + timedelta(seconds=600) and r4.duration_seconds == 600
    assert r4.exit_price == pytest.approx(2025 / 200)
    assert r4.gross_pnl == pytest.approx(5.0) and r4.commission == pytest.approx(4.0) and r4.net_pnl == pytest.approx(1.0)
    # (0.01 * 100 + 0 * 100 + 0.02 * 50) / 250 per unit; the last fill had no decision price
    assert r4.slippage == pytest.approx(0.008)


def test_breakeven_band_and_loss() -> None:
    wide = TradeBuilder(TradeConfig(breakeven_band=0.01))
    book = TradeBook()
    wide.on_fill(book, fill("BUY", 10, 100.0, 0))
    (r, _) = wide.on_fill(book, fill("SELL", 10, 109.99, 10))  # +99.9, band 1 % of 1000 = 10 ... a win
    assert r.outcome_type == "WIN"
    for exit_price, outcome in ((100.99, "BREAKEVEN"), (101.0, "BREAKEVEN"), (99.0, "BREAKEVEN"), (98.99, "LOSS")):
        book = TradeBook()
        wide.on_fill(book, fill("BUY", 10, 100.0, 0))
        r, _ = wide.on_fill(book, fill("SELL", 10, exit_price, 10))
        assert r.outcome_type == outcome, exit_price
    assert r.slippage is None


def test_short_trade_and_excursions_from_bars() -> None:
    b, book = TradeBuilder(), TradeBook()
    b.on_fill(book, fill("SELL", 10, 50.0, 30))
    b.on_bar(book, bar(0, 80.0, 20.0))  # opened before the entry: not counted
    b.on_bar(book, bar(1, 52.0, 47.0))
    b.on_bar(book, bar(2, 51.0, 44.0))
    b.on_bar(book, bar(3, 99.0, 1.0))  # after the exit below: dropped at the close
    b.on_bar(book, bar(2, 51.0, 44.0, timeframe="5m"))
    r, _ = b.on_fill(book, fill("BUY", 10, 45.0, 170))
    assert r.direction == "SHORT" and r.gross_pnl == pytest.approx(50.0) and r.outcome_type == "WIN"
    assert r.max_favorable_excursion == pytest.approx(60.0)  # low 44: (50 - 44) * 10
    assert r.max_adverse_excursion == pytest.approx(20.0)  # high 52: (52 - 50) * 10


def test_excursions_use_the_position_of_the_bars_time() -> None:
    b, book = TradeBuilder(), TradeBook()
    b.on_fill(book, fill("BUY", 10, 100.0, 0))
    b.on_bar(book, bar(1, 104.0, 99.0))  # 10 open: +40 / -10
    b.on_fill(book, fill("BUY", 10, 102.0, 150))  # avg 101, 20 open
    b.on_bar(book, bar(3, 103.0, 100.5))  # +40 / -10 again (2 * 20, -0.5 * 20)
    b.on_bar(book, bar(4, 101.0, 97.0))  # -80
    r, _ = b.on_fill(book, fill("SELL", 20, 101.0, 330))
    assert r.max_favorable_excursion == pytest.approx(40.0) and r.max_adverse_excursion == pytest.approx(80.0)


def test_bar_and_fill_races_do_not_change_the_trade() -> None:
    fills = [fill("BUY", 10, 100.0, 5), fill("BUY", 5, 101.0, 200), fill("SELL", 15, 103.0, 500)]
    bars = [bar(m, 100.0 + (m % 5), 98.0 + (m % 3)) for m in range(12)]

    def run(delay_bars: int) -> TradeOutcomeRow:
        b, book = TradeBuilder(), TradeBook()
        events = sorted(
            [((f.ts - T0).total_seconds(), 1, f) for f in fills] + [(m * 60 + 60 + delay_bars * 60, 0, x) for m, x in enumerate(bars)],
            key=lambda e: e[:2],
        )
        rows: list[TradeOutcomeRow] = []
        for _, kind, item in events:
            if kind:
                rows.append(b.on_fill(book, item).row)
            else:
                rows.extend(b.on_bar(book, item))
        return rows[-1]  # the last row sent is the one the table keeps

    on_time = run(0)
    assert on_time.max_favorable_excursion is not None and on_time.max_adverse_excursion is not None
    assert run(-2) == on_time  # bars arriving early (before fills of the same time)
    assert run(2) == on_time  # bars arriving two minutes late: evaluated against the position of their time
    assert run(20) == on_time  # or after the trade closed


def test_open_trade_rows_and_lateness() -> None:
    b, book = TradeBuilder(TradeConfig(bar_lateness_s=60)), TradeBook()
    b.on_fill(book, fill("BUY", 1, 100.0, 0))
    b.on_bar(book, bar(1, 105.0, 99.0))
    assert book.trades[str(TRADE)].tentative  # not settled yet
    assert b.row(book, TRADE).max_favorable_excursion == pytest.approx(5.0)  # shown, tentatively
    b.on_bar(book, bar(2, 101.0, 96.0))
    b.on_bar(book, bar(3, 101.0, 99.0))
    trade = book.trades[str(TRADE)]
    assert [t for t, _, _ in trade.tentative] == [int((T0 + timedelta(minutes=m)).timestamp() * 1e6) for m in (2, 3)]
    assert trade.mfe == pytest.approx(5.0) and trade.mae == pytest.approx(1.0)
    assert b.row(book, TRADE).max_adverse_excursion == pytest.approx(4.0)


@pytest.mark.parametrize(
    "bad, reason, words",
    [
        (lambda: fill("SELL", 11, 100.0, 60), "invalid_value", "exceeds the open position 10"),
        (lambda: fill("BUY", 1, 100.0, 60, strategy_id="other"), "invalid_value", "strategy_id"),
        (lambda: fill("BUY", 1, 100.0, 60, symbol="MSFT"), "invalid_value", "symbol"),
        (lambda: fill("BUY", 1, 100.0, 60, model_version="v2"), "invalid_value", "model_version"),
        (lambda: fill("BUY", 1, 100.0, -1), "out_of_order", "older"),
    ],
)
def test_fills_that_break_the_trade(bad, reason: str, words: str) -> None:
    b, book = TradeBuilder(), TradeBook()
    b.on_fill(book, fill("BUY", 10, 100.0, 0))
    before = msgspec.msgpack.encode(book)
    with pytest.raises(InvalidMessage) as err:
        b.on_fill(book, bad())
    assert err.value.reason == reason and words in err.value.detail
    assert msgspec.msgpack.encode(book) == before  # nothing applied


def test_first_fill_cannot_overflow_and_closed_trades_reject_fills() -> None:
    b, book = TradeBuilder(), TradeBook()
    b.on_fill(book, fill("BUY", 10, 100.0, 0))
    b.on_fill(book, fill("SELL", 10, 100.0, 10))
    with pytest.raises(InvalidMessage, match="already closed"):
        b.on_fill(book, fill("SELL", 1, 100.0, 20))


def test_duplicate_fill_is_dropped_and_resends_the_row() -> None:
    b, book = TradeBuilder(), TradeBook()
    f1 = fill("BUY", 10, 100.0, 0)
    b.on_fill(book, f1)
    f2 = fill("SELL", 4, 101.0, 10)
    row, dup = b.on_fill(book, f2)
    assert not dup
    state = msgspec.msgpack.encode(book)
    assert b.on_fill(book, f1) == (row, True) and b.on_fill(book, f2) == (row, True)
    assert msgspec.msgpack.encode(book) == state


def test_closed_trades_are_forgotten_after_the_retention() -> None:
    b, book = TradeBuilder(TradeConfig(closed_retention_s=3600)), TradeBook()
    b.on_fill(book, fill("BUY", 10, 100.0, 0))
    b.on_fill(book, fill("SELL", 10, 100.0, 10))
    b.on_bar(book, bar(60, 1.0, 1.0))  # bar opening 11:00: 3590 s after the exit
    assert str(TRADE) in book.trades
    b.on_bar(book, bar(61, 1.0, 1.0))
    assert book.trades == {}


def test_a_closed_trade_settles_once_the_bars_reach_its_exit_and_comes_back_whole() -> None:
    b, book = TradeBuilder(), TradeBook()
    b.on_fill(book, fill("BUY", 10, 100.0, 0))
    b.on_fill(book, fill("SELL", 10, 101.0, 180))  # exits at 10:03, ahead of the bars
    b.place_regimes(book, lambda ts_us: {"1m": "ranging"})
    assert b.settled(book) == []  # the bars of 10:00-10:02 can still move its excursions
    changed = b.on_bar(book, bar(1, 103.0, 99.0))
    assert changed[0].max_favorable_excursion == 30.0 and b.settled(book) == []
    b.on_bar(book, bar(3, 200.0, 1.0))  # opens at its exit: outside the trade, and no bar can be older
    [settled] = b.settled(book)
    assert settled.trade_id == str(TRADE)
    row = b.row(book, TRADE)
    del book.trades[settled.trade_id]  # kept elsewhere by the caller
    book.trades[settled.trade_id] = msgspec.msgpack.decode(msgspec.msgpack.encode(settled), type=type(settled))  # put back
    assert b.row(book, TRADE) == row
    with pytest.raises(InvalidMessage, match="already closed"):
        b.on_fill(book, fill("BUY", 1, 100.0, 240))
    open_trade = TradeBook()
    b.on_fill(open_trade, fill("BUY", 10, 100.0, 0, trade=uuid.UUID(int=9)))
    b.on_bar(open_trade, bar(5, 101.0, 99.0))
    assert b.settled(open_trade) == []  # an open trade never settles


def test_restarts_change_nothing() -> None:
    trades = [uuid.UUID(int=i) for i in range(1, 5)]
    events: list = []
    for m in range(40):
        events.append(("bar", bar(m, 100.0 + m % 7, 95.0 + m % 4)))
        t = trades[m // 10]
        if m % 10 == 9:
            continue
        side = "BUY" if m % 10 < 4 else "SELL"
        events.append(("fill", fill(side, 5 if side == "BUY" else 4, 97.0 + m % 5, m * 60 + 30, commission=0.1, decision=97.0, trade=t)))

    def run(restart: bool) -> list[TradeOutcomeRow]:
        b, book, out = TradeBuilder(), TradeBook(), []
        for kind, item in events:
            if restart:
                book = msgspec.msgpack.decode(msgspec.msgpack.encode(book), type=TradeBook)
            if kind == "bar":
                b.on_bar(book, item)
            else:
                out.append(b.on_fill(book, item).row)
        return out

    plain = run(False)
    assert run(True) == plain
    finals = [r for r in plain if r.outcome_type != "OPEN"]
    assert [r.trade_id for r in finals] == trades  # 4 buys of 5, 5 sells of 4: closed at the 5th sell
    assert msgspec.json.decode(msgspec.json.encode(finals[0]), type=TradeOutcomeRow) == finals[0]


def test_entry_regimes_are_those_in_force_at_entry_whichever_topic_came_first() -> None:
    """Fills before their bars or after them: every trade gets the regimes in force at its
    entry, so a replay that interleaves the two topics otherwise writes the same rows."""
    from tickwire.schemas.market import REGIMES
    from tickwire.streams.simulator import MarketSimulator
    from tickwire.streams.symbol import SymbolProcessor, SymbolState

    bars = list(MarketSimulator(["AAPL"], seed=3, start=T0).bars(240))
    fills = [fill("BUY" if n % 2 == 0 else "SELL", 5, bars[10 * n].close, 600 * n + 30, trade=uuid.UUID(int=n // 2 + 1)) for n in range(24)]

    def run(fills_first: bool) -> tuple[dict, SymbolState]:
        processor, state, builder, book, rows = SymbolProcessor(), SymbolState(), TradeBuilder(), TradeBook(), {}
        # Fills an hour ahead of the bars, or three hours behind them.
        events = [(f.ts - timedelta(hours=1) if fills_first else f.ts + timedelta(hours=3), 1, f) for f in fills]
        events += [(b.ts, 0, b) for b in bars]
        for _, kind, event in sorted(events, key=lambda e: (e[0], e[1])):
            if kind == 0:
                processor.process(state, event)
                placed = builder.on_bar(book, event) + builder.place_regimes(book, state.regimes.at)
            else:
                placed = [builder.on_fill(book, event).row] + builder.place_regimes(book, state.regimes.at)
            rows.update((row.trade_id, row) for row in placed)
        return rows, state

    early, state = run(fills_first=True)
    late, _ = run(fills_first=False)
    assert {t: r.entry_regimes for t, r in early.items()} == {t: r.entry_regimes for t, r in late.items()}
    regimes = [r.entry_regimes for r in early.values() if r.entry_time >= T0 + timedelta(hours=1)]  # past the warm-up
    assert len(regimes) > 6 and all(regimes) and len({json.dumps(r, sort_keys=True) for r in regimes}) > 1
    # Each has the last change known at its entry (the day is within the history kept).
    checked = 0
    for row in early.values():
        entry_us = int((row.entry_time - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds() * 1e6)
        known = [regime for known_us, timeframe, regime in state.regimes.changes if timeframe == "1m" and known_us <= entry_us]
        if known:
            assert row.entry_regimes["1m"] == REGIMES[known[-1]]
            checked += 1
    assert checked > 6


def test_regime_history_keeps_a_day_and_the_change_before_it() -> None:
    from tickwire.streams.symbol import REGIME_CHANGES_KEPT, REGIME_HISTORY_US, RegimeHistory

    history, hour = RegimeHistory(), REGIME_HISTORY_US // 24
    assert history.at(0) is None  # no bar yet: not known
    history.record(0, "1d", "trending_up")
    for n in range(48):  # a change every hour for two days
        history.record(n * hour, "1h", "ranging" if n % 2 else "volatile")
    history.until_us = 48 * hour
    one_hour = [c[0] // hour for c in history.changes if c[1] == "1h"]
    assert one_hour == list(range(22, 48))  # the last day's (23 h to 47 h, both included) and the one before them
    assert history.at(30 * hour + 1) == {"1d": "trending_up", "1h": "volatile"}  # 1h changed at 30 h to volatile
    assert history.at(21 * hour) == {"1d": "trending_up"}  # 1h: older than everything kept
    assert history.at(48 * hour + 1) is None
    for n in range(2 * REGIME_CHANGES_KEPT):  # a change every minute: the cap holds
        history.record(48 * hour + n * 60_000_000, "1m", "ranging" if n % 2 else "volatile")
    assert len([c for c in history.changes if c[1] == "1m"]) == REGIME_CHANGES_KEPT
