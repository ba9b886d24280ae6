"""streams.decisions and the sizing and exit messages: each figure computed by hand."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from tickwire.schemas.codec import Codec
from tickwire.schemas.decisions import (
    ExitDecision, PartialExitRow, PositionSizingRow, SizingConfig, SizingDecision, SizingMessage, SmartExitRow,
)
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Bar, epoch_us
from tickwire.schemas.signals import Fill
from tickwire.streams.decisions import DecisionBook, DecisionJoiner
from tickwire.streams.fills import TradeBook, TradeBuilder

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=1)
TRADE = uuid.UUID(int=1)
CONFIG = uuid.UUID(int=100)
_ids = iter(range(10**6))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fill(side: str, qty: int, price: float, seconds: float, *, trade: uuid.UUID = TRADE, commission: float = 0.0) -> Fill:
    return Fill(fill_id=f"f{next(_ids)}", trade_id=trade, strategy_id="s1", model_version="v1", symbol="AAPL", side=side,
                ts=at(seconds), price=price, quantity=qty, commission=commission, portfolio_id="P1")


def bar(seconds: float, high: float, low: float) -> Bar:
    mid = (high + low) / 2
    return Bar(symbol="AAPL", ts=at(seconds), open=mid, high=high, low=low, close=mid, volume=1)


def sizing(seconds: float, *, decision: int = 1, trade: uuid.UUID | None = TRADE, **kw: object) -> SizingDecision:
    fields = dict(decision_id=uuid.UUID(int=decision), portfolio_id="P1", strategy_id="s1", symbol="AAPL", trade_id=trade,
                  ts=at(seconds), account_value=100_000.0, risk_per_trade=0.01, stop_distance=2.0, volatility=0.2,
                  correlation_adjustment=1.0, regime_adjustment=0.5, quantity=500)
    fields.update(kw)
    return SizingDecision(**fields)


def config(seconds: float, *, config_id: uuid.UUID = CONFIG, **kw: object) -> SizingConfig:
    fields = dict(config_id=config_id, portfolio_id="P1", strategy_id="s1", symbol="AAPL", ts=at(seconds),
                  method="fixed_fractional", risk_per_trade=0.01)
    fields.update(kw)
    return SizingConfig(**fields)


def exit_(seconds: float, price: float, qty: int, *, exit_id: int = 1, partial: bool = False, trade: uuid.UUID = TRADE,
          **kw: object) -> ExitDecision:
    fields = dict(exit_id=uuid.UUID(int=1000 + exit_id), trade_id=trade, strategy_id="s1", symbol="AAPL", ts=at(seconds),
                  reason="target", price=price, quantity=qty, partial=partial)
    fields.update(kw)
    return ExitDecision(**fields)


class World:
    """A symbol's trade book and decision book, fed as the symbols stage feeds them."""

    def __init__(self) -> None:
        self.builder = TradeBuilder()
        self.joiner = DecisionJoiner(self.builder)
        self.trades, self.book = TradeBook(), DecisionBook()

    def fill(self, f: Fill) -> list:
        row = self.builder.on_fill(self.trades, f).row
        return self.joiner.on_trade(self.book, self.trades, row.trade_id).rows

    def bar(self, b: Bar) -> list:
        rows = []
        for row in self.builder.on_bar(self.trades, b):
            rows += self.joiner.on_trade(self.book, self.trades, row.trade_id).rows
        return rows


def test_a_sizing_decision_joins_its_trade_when_it_closes_planned_against_realised_risk():
    w = World()
    (config_row,) = w.joiner.on_config(w.book, w.trades, config(-60)).rows
    assert config_row.config_id == CONFIG
    (row,) = w.joiner.on_sizing(w.book, w.trades, sizing(-1)).rows
    # planned risk: 500 units x 2.00 stop distance = 1000; the configuration in effect is joined.
    assert (row.planned_risk, row.config_id, row.version, row.trade_closed_at) == (1000.0, CONFIG, 1, None)
    assert w.fill(fill("BUY", 500, 100.0, 0, commission=1.0)) == []  # open: nothing to join yet
    assert w.bar(bar(60, 101.0, 98.5)) == []
    (closed,) = w.fill(fill("SELL", 500, 99.0, 120, commission=1.0))
    # MAE: the bar's low 98.5 on 500 long from 100 = 750; net P&L (99 - 100) x 500 - 2 = -502.
    assert (closed.trade_quantity, closed.max_adverse_excursion, closed.realized_pnl) == (500, 750.0, -502.0)
    assert closed.realized_loss == 502.0 and closed.trade_closed_at == at(120)
    assert (closed.mae_to_planned, closed.loss_to_planned, closed.version) == (0.75, pytest.approx(0.502), 2)
    # A late bar (older than the last fill) deepens the closed trade's MAE: (100 - 98) x 500 = 1000.
    (late,) = w.bar(bar(90, 99.5, 98.0))
    assert (late.max_adverse_excursion, late.mae_to_planned, late.version) == (1000.0, 1.0, 3)
    # A bar that changes nothing of the trade sends nothing.
    assert w.bar(bar(100, 99.4, 99.0)) == []


def test_exit_efficiency_and_what_the_rest_of_a_partial_exit_did():
    w = World()
    w.fill(fill("BUY", 100, 50.0, 0))
    w.bar(bar(60, 56.0, 49.0))
    first = w.joiner.on_exit(w.book, w.trades, exit_(100, 55.0, 40, exit_id=1, partial=True)).rows
    assert [type(r) for r in first] == [SmartExitRow, PartialExitRow]
    assert first[0].exit_efficiency is None and first[1].remainder_gain is None  # the trade is still open
    w.fill(fill("SELL", 40, 55.0, 100))
    (second,) = w.joiner.on_exit(w.book, w.trades, exit_(200, 53.0, 60, exit_id=2, reason="trailing_stop")).rows
    assert second.version == 1
    rows = w.fill(fill("SELL", 60, 53.0, 200))
    partial_exit, partial, full_exit = rows
    # MFE: the bar's high 56 on 100 long from 50 = 600; gross P&L 40 x 5 + 60 x 3 = 380.
    assert (partial_exit.max_favorable_excursion, partial_exit.trade_pnl, partial_exit.version) == (600.0, 380.0, 2)
    # The partial: P&L (55 - 50) x 40 = 200 over its share of the MFE, 600 x 40 / 100 = 240.
    assert partial_exit.exit_pnl == 200.0 and partial_exit.exit_efficiency == pytest.approx(200 / 240)
    assert partial_exit.trade_efficiency == pytest.approx(380 / 600)
    assert (partial_exit.direction, partial_exit.entry_price, partial_exit.trade_closed_at) == ("LONG", 50.0, at(200))
    # The rest: 100 open before, 60 remain; they exited at (40 x 55 + 60 x 53 - 40 x 55) / 60 = 53.
    assert (partial.remaining_quantity, partial.remainder_exit_price, partial.version) == (60, 53.0, 2)
    # (53 - 50) x 60 = 180 against (55 - 50) x 60 = 300 had it all gone with the partial.
    assert (partial.remainder_pnl, partial.remainder_pnl_at_partial, partial.remainder_gain) == (180.0, 300.0, -120.0)
    # The full exit: (53 - 50) x 60 = 180 over 600 x 60 / 100 = 360.
    assert (full_exit.exit_pnl, full_exit.exit_efficiency, full_exit.version) == (180.0, 0.5, 2)


def test_a_short_trades_efficiency_counts_falling_prices_as_gains():
    w = World()
    w.fill(fill("SELL", 10, 20.0, 0))
    w.bar(bar(60, 20.5, 17.0))
    w.joiner.on_exit(w.book, w.trades, exit_(100, 18.0, 10))
    (row,) = w.fill(fill("BUY", 10, 18.0, 100))
    # MFE (20 - 17) x 10 = 30; the exit took (20 - 18) x 10 = 20.
    assert (row.direction, row.exit_pnl, row.max_favorable_excursion) == ("SHORT", 20.0, 30.0)
    assert row.exit_efficiency == pytest.approx(20 / 30) and row.trade_efficiency == pytest.approx(20 / 30)


def test_duplicates_change_nothing_and_conflicting_or_impossible_decisions_are_refused():
    w = World()
    assert len(w.joiner.on_sizing(w.book, w.trades, sizing(0)).rows) == 1
    assert w.joiner.on_sizing(w.book, w.trades, sizing(0)) == ([], True, {})
    assert w.joiner.on_config(w.book, w.trades, config(0)).rows and w.joiner.on_config(w.book, w.trades, config(0)) == ([], True, {})
    w.fill(fill("BUY", 10, 50.0, 10))
    w.fill(fill("SELL", 10, 51.0, 20))
    other = fill("BUY", 10, 50.0, 30, trade=uuid.UUID(int=2))
    w.fill(other)
    before = msgspec.msgpack.encode(w.book)
    refused = [
        (lambda: w.joiner.on_sizing(w.book, w.trades, sizing(0, quantity=400)), "conflicting_id"),
        (lambda: w.joiner.on_config(w.book, w.trades, config(0, risk_per_trade=0.02)), "conflicting_id"),
        (lambda: w.joiner.on_sizing(w.book, w.trades, sizing(25, decision=2)), "unknown_trade"),  # after the close
        (lambda: w.joiner.on_exit(w.book, w.trades, exit_(25, 51.0, 10)), "unknown_trade"),  # after the close
        (lambda: w.joiner.on_exit(w.book, w.trades, exit_(5, 51.0, 10)), "unknown_trade"),  # before the open
        (lambda: w.joiner.on_exit(w.book, w.trades, exit_(15, 51.0, 10, strategy_id="s2")), "invalid_value"),
        (lambda: w.joiner.on_exit(w.book, w.trades, exit_(40, 51.0, 11, trade=other.trade_id)), "invalid_value"),
    ]
    for call, reason in refused:
        with pytest.raises(InvalidMessage) as caught:
            call()
        assert caught.value.reason == reason
    assert msgspec.msgpack.encode(w.book) == before


def test_state_is_bounded_by_the_trades_retention_and_survives_a_restart():
    w = World()
    w.joiner.on_config(w.book, w.trades, config(0))
    w.joiner.on_config(w.book, w.trades, config(86_400, config_id=uuid.UUID(int=101)))
    w.joiner.on_sizing(w.book, w.trades, sizing(0, decision=1, trade=uuid.UUID(int=9)))  # its trade never comes
    w.joiner.on_sizing(w.book, w.trades, sizing(0, decision=2, trade=None))
    w.fill(fill("BUY", 10, 50.0, 1))  # the trade the third decision sized, still open a week on
    w.joiner.on_sizing(w.book, w.trades, sizing(0, decision=3))
    restored = msgspec.msgpack.decode(msgspec.msgpack.encode(w.book), type=DecisionBook)
    assert restored == w.book
    week = 7 * 86_400
    (late,), _, unjoined = w.joiner.on_sizing(w.book, w.trades, sizing(week + 2 * 86_400, decision=4, trade=None))
    assert unjoined == {"sizing": 1}  # the first: its trade never came (the second named none)
    # Decisions a week older than the clock go unless their trade is held; configurations
    # superseded more than a week ago go, the one in effect stays and is still joined.
    assert sorted(w.book.sizing) == [str(uuid.UUID(int=3)), str(uuid.UUID(int=4))]
    assert [c.config_id for c in w.book.configs] == [uuid.UUID(int=101)] and late.config_id == uuid.UUID(int=101)


def test_a_decision_of_a_settled_trade_is_kept_a_week_after_the_close_and_can_leave_the_book():
    w = World()
    w.joiner.on_sizing(w.book, w.trades, sizing(0))
    w.fill(fill("BUY", 10, 50.0, 1))
    w.fill(fill("SELL", 10, 51.0, 3 * 86_400))  # closes three days after the decision
    assert w.joiner.settled(w.book, w.trades) == ([], [])  # its trade is still in the book
    w.trades.trades.clear()  # settled: kept elsewhere by the caller
    (row,), exits = w.joiner.settled(w.book, w.trades)
    assert exits == [] and row.decision_id == uuid.UUID(int=1)
    assert w.joiner.expires_us(row) == epoch_us(at(3 * 86_400)) + 7 * 86_400 * 1_000_000
    week = 7 * 86_400
    *_, unjoined = w.joiner.on_sizing(w.book, w.trades, sizing(week + 86_400, decision=2, trade=None))
    assert str(uuid.UUID(int=1)) in w.book.sizing and unjoined == {}  # a week after it, not after its close
    *_, unjoined = w.joiner.on_sizing(w.book, w.trades, sizing(week + 4 * 86_400, decision=3, trade=None))
    assert str(uuid.UUID(int=1)) not in w.book.sizing and unjoined == {}  # it had joined


SIZING_CODEC, EXIT_CODEC = Codec(SizingMessage), Codec(ExitDecision)


def _sizing_raw(**changes: object) -> bytes:
    doc = json.loads(msgspec.json.encode(sizing(0)))
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"risk_per_trade": 1.5}, "invalid_value"),
        ({"risk_per_trade": 0}, "invalid_value"),
        ({"stop_distance": -1}, "invalid_value"),
        ({"account_value": 1e15}, "invalid_value"),
        ({"regime_adjustment": 11}, "invalid_value"),
        ({"quantity": -1}, "invalid_value"),
        ({"kind": ...}, "schema"),
        ({"kind": "order"}, "schema"),
        ({"leverage": 2}, "schema"),
        ({"ts": "2026-03-09T10:00:00Z"}, "bad_timestamp"),
    ],
)
def test_bad_sizing_messages_are_refused_with_their_reason(changes, reason):
    with pytest.raises(InvalidMessage) as caught:
        SIZING_CODEC.decode(_sizing_raw(**changes), now=NOW)
    assert caught.value.reason == reason


def test_sizing_topic_carries_decisions_and_configurations_by_kind():
    assert SIZING_CODEC.decode(_sizing_raw(), now=NOW) == sizing(0)
    raw = msgspec.json.encode(config(0))
    assert b'"kind":"config"' in raw and SIZING_CODEC.decode(raw, now=NOW) == config(0)
    with pytest.raises(InvalidMessage, match="method"):
        SIZING_CODEC.decode(msgspec.json.encode(config(0, method="martingale")), now=NOW)


@pytest.mark.parametrize(
    "changes, reason",
    [({"reason": "panic"}, "invalid_value"), ({"price": 0}, "invalid_value"), ({"quantity": 0}, "invalid_value"),
     ({"trade_id": "nope"}, "schema")],
)
def test_bad_exit_messages_are_refused_with_their_reason(changes, reason):
    doc = json.loads(msgspec.json.encode(exit_(0, 10.0, 1)))
    doc.update(changes)
    with pytest.raises(InvalidMessage) as caught:
        EXIT_CODEC.decode(json.dumps(doc).encode(), now=NOW)
    assert caught.value.reason == reason


def test_rows_are_tagged_for_their_tables():
    row = PositionSizingRow(**msgspec.structs.asdict(sizing(0)), config_id=None, planned_risk=1.0)
    assert json.loads(msgspec.json.encode(row))["record"] == "decision"
