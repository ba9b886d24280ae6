"""streams.orders, streams.positions and streams.portfolios: each rule computed by hand."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from tickwire.schemas.codec import Codec
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.execution import Order, PositionRow
from tickwire.schemas.signals import Fill
from tickwire.streams.orders import OrderBook, OrderConfig, OrderTracker
from tickwire.streams.portfolios import Day, PortfolioBook, PortfolioLimits, PortfolioState, load_portfolios, performance_rows
from tickwire.streams.positions import PositionBook, PositionKeeper

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=1)
_ids = iter(range(10**6))


def fill(side: str, qty: int, price: float, seconds: float, *, portfolio: str = "P1", order: str | None = None,
         commission: float = 0.0, symbol: str = "AAPL") -> Fill:
    return Fill(
        fill_id=f"f{next(_ids)}", trade_id=uuid.uuid4(), strategy_id="s1", model_version="v1", symbol=symbol, side=side,
        ts=T0 + timedelta(seconds=seconds), price=price, quantity=qty, commission=commission, portfolio_id=portfolio,
        order_id=order,
    )


def order(event: str, seconds: float, *, order_id: str = "o1", qty: int = 100, side: str = "BUY", **kw: object) -> Order:
    fields = dict(order_id=order_id, portfolio_id="P1", strategy_id="s1", symbol="AAPL", event=event,
                  ts=T0 + timedelta(seconds=seconds), side=side, quantity=qty)
    fields.update(kw)
    return Order(**fields)


# --- orders ---------------------------------------------------------------------------

def test_an_order_fills_partially_then_fully_with_its_ratio_slippage_and_time_to_fill():
    tracker, book = OrderTracker(), OrderBook()
    (placed,) = tracker.on_order(book, order("PLACED", 0, order_type="LIMIT", limit_price=50.0))
    assert (placed.status, placed.filled_quantity, placed.fill_ratio, placed.version) == ("OPEN", 0, 0.0, 1)
    first = fill("BUY", 40, 50.10, 2, order="o1")
    tracker.check_fill(book, first)
    part = tracker.apply_fill(book, first)
    assert (part.status, part.filled_quantity, part.fill_ratio) == ("PARTIALLY_FILLED", 40, 0.4)
    last = fill("BUY", 60, 50.20, 5, order="o1")
    tracker.check_fill(book, last)
    done = tracker.apply_fill(book, last)
    # VWAP (40 * 50.10 + 60 * 50.20) / 100 = 50.16; a buy 0.16 above its limit costs 0.16 a unit.
    assert done.status == "FILLED" and done.avg_fill_price == pytest.approx(50.16)
    assert done.slippage == pytest.approx(0.16)
    assert done.time_to_fill_ms == 5000 and done.first_fill_at == T0 + timedelta(seconds=2)
    assert (done.event, done.fill_id, done.fill_quantity, done.version) == ("FILL", last.fill_id, 60, 3)


def test_a_sell_measures_slippage_against_its_arrival_price():
    tracker, book = OrderTracker(), OrderBook()
    tracker.on_order(book, order("PLACED", 0, side="SELL", arrival_price=20.0))
    sold = fill("SELL", 100, 19.95, 1, order="o1")
    tracker.check_fill(book, sold)
    assert tracker.apply_fill(book, sold).slippage == pytest.approx(0.05)  # sold 5 cents below arrival


@pytest.mark.parametrize("ending", ["CANCELLED", "EXPIRED"])
def test_no_fill_after_an_order_ended(ending):
    tracker, book = OrderTracker(), OrderBook()
    tracker.on_order(book, order("PLACED", 0))
    (ended,) = tracker.on_order(book, order(ending, 1, reason="user"))
    assert ended.status == ending and ended.completed_at == T0 + timedelta(seconds=1)
    with pytest.raises(InvalidMessage) as refused:
        tracker.check_fill(book, fill("BUY", 10, 1.0, 2, order="o1"))
    assert refused.value.reason == "order_state"


def test_overfill_wrong_side_and_unknown_orders_are_refused_and_change_nothing():
    tracker, book = OrderTracker(OrderConfig(required=True)), OrderBook()
    tracker.on_order(book, order("PLACED", 0, qty=100))
    before = msgspec.msgpack.encode(book)
    cases = [
        (fill("BUY", 101, 1.0, 1, order="o1"), "overfill"),
        (fill("SELL", 10, 1.0, 1, order="o1"), "invalid_value"),
        (fill("BUY", 10, 1.0, 1, order="o1", portfolio="P2"), "invalid_value"),
        (fill("BUY", 10, 1.0, -1, order="o1"), "out_of_order"),
        (fill("BUY", 10, 1.0, 1), "unknown_order"),
    ]
    for bad, reason in cases:
        with pytest.raises(InvalidMessage) as refused:
            tracker.check_fill(book, bad)
        assert refused.value.reason == reason
    assert msgspec.msgpack.encode(book) == before


def test_fills_without_orders_pass_where_orders_are_not_required():
    tracker, book = OrderTracker(), OrderBook()
    free = fill("BUY", 10, 1.0, 1)
    tracker.check_fill(book, free)
    assert tracker.apply_fill(book, free) is None and book.early == {}


def test_a_fill_that_overtook_its_order_waits_and_the_placement_takes_it_in():
    tracker, book = OrderTracker(OrderConfig(retention_s=3600)), OrderBook()
    early = fill("BUY", 30, 10.0, 1, order="o1")
    tracker.check_fill(book, early)
    assert tracker.apply_fill(book, early) is None
    placed, filled = tracker.on_order(book, order("PLACED", 0, qty=50))
    assert (placed.event, placed.status, placed.version) == ("PLACED", "OPEN", 1)
    assert (filled.event, filled.fill_id, filled.status, filled.filled_quantity, filled.version) == ("FILL", early.fill_id, "PARTIALLY_FILLED", 30, 2)
    assert book.early == {}
    # Too much filled for the order that follows: the placement is refused, the fills still wait.
    tracker.apply_fill(book, fill("BUY", 30, 10.0, 2, order="o2"))
    with pytest.raises(InvalidMessage) as refused:
        tracker.on_order(book, order("PLACED", 0, order_id="o2", qty=20))
    assert refused.value.reason == "overfill" and "o2" in book.early
    # Unclaimed, they go after the retention.
    tracker.apply_fill(book, fill("BUY", 1, 10.0, 7300, order="o3"))
    assert sorted(book.early) == ["o3"]


def test_amend_below_the_filled_quantity_is_refused_and_one_to_it_completes_the_order():
    tracker, book = OrderTracker(), OrderBook()
    tracker.on_order(book, order("PLACED", 0, qty=100))
    tracker.apply_fill(book, fill("BUY", 60, 1.0, 1, order="o1"))
    with pytest.raises(InvalidMessage) as refused:
        tracker.on_order(book, order("AMENDED", 2, qty=50))
    assert refused.value.reason == "overfill"
    (amended,) = tracker.on_order(book, order("AMENDED", 3, qty=60))
    assert (amended.status, amended.quantity, amended.fill_ratio) == ("FILLED", 60, 1.0)


def test_placed_twice_is_a_duplicate_unless_it_differs_and_a_reject_needs_no_placement():
    tracker, book = OrderTracker(), OrderBook()
    assert len(tracker.on_order(book, order("PLACED", 0))) == 1
    assert tracker.on_order(book, order("PLACED", 0)) == []
    with pytest.raises(InvalidMessage) as refused:
        tracker.on_order(book, order("PLACED", 0, qty=5))
    assert refused.value.reason == "conflicting_id"
    (rejected,) = tracker.on_order(book, order("REJECTED", 1, order_id="o2", reason="no margin"))
    assert (rejected.status, rejected.reason) == ("REJECTED", "no margin")
    with pytest.raises(InvalidMessage) as refused:
        tracker.on_order(book, order("CANCELLED", 2, order_id="o3"))
    assert refused.value.reason == "unknown_order"
    with pytest.raises(InvalidMessage) as refused:
        tracker.on_order(book, order("CANCELLED", -1))
    assert refused.value.reason == "out_of_order"


def test_ended_orders_are_forgotten_after_the_retention_and_open_ones_kept():
    tracker, book = OrderTracker(OrderConfig(retention_s=3600)), OrderBook()
    tracker.on_order(book, order("PLACED", 0, order_id="open"))
    tracker.on_order(book, order("PLACED", 0, order_id="done"))
    tracker.on_order(book, order("CANCELLED", 1, order_id="done"))
    tracker.on_order(book, order("PLACED", 7200, order_id="later"))
    assert sorted(book.orders) == ["later", "open"]


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"event": "FILLED"}, "invalid_value"),
        ({"order_type": "LIMIT"}, "invalid_value"),  # a limit order without its price
        ({"quantity": 0}, "invalid_value"),
        ({"limit_price": 1e9}, "invalid_value"),
        ({"order_id": "o1\n"}, "schema"),
        ({"reason": "x" * 201}, "schema"),
    ],
)
def test_the_order_contract_refuses_bad_values(changes, reason):
    raw = json.loads(msgspec.json.encode(order("PLACED", 0)))
    raw.update(changes)
    with pytest.raises(InvalidMessage) as refused:
        Codec(Order).decode(json.dumps(raw).encode(), now=NOW)
    assert refused.value.reason == reason


# --- positions ------------------------------------------------------------------------

def apply(keeper: PositionKeeper, book: PositionBook, f: Fill) -> PositionRow:
    keeper.check_fill(book, f)
    return keeper.apply_fill(book, f)


def test_a_long_position_adds_closes_part_and_is_marked_to_the_bars():
    keeper, book = PositionKeeper({"AAPL": "tech"}), PositionBook()
    apply(keeper, book, fill("BUY", 100, 10.0, 0, commission=1.0))
    row = apply(keeper, book, fill("BUY", 100, 12.0, 60, commission=1.0))
    assert (row.quantity, row.avg_cost, row.sector) == (200, 11.0, "tech")
    row = apply(keeper, book, fill("SELL", 50, 13.0, 120, commission=0.5))
    # Realised: 50 * (13 - 11) = 100, less 2.5 of fees = 97.5; 150 left at 11.
    assert (row.quantity, row.avg_cost, row.realized_pnl, row.fees) == (150, 11.0, 97.5, 2.5)
    assert row.cash_flow == pytest.approx(-1000 - 1200 + 650 - 2.5)
    (marked,) = keeper.on_close(book, "AAPL", 14.0, int((T0 + timedelta(minutes=3)).timestamp() * 1e6))
    assert (marked.cause, marked.mark_price, marked.market_value, marked.unrealized_pnl) == ("MARK", 14.0, 2100.0, 450.0)
    # Total P&L two ways: realised + unrealised = market value + cash flow.
    assert marked.realized_pnl + marked.unrealized_pnl == pytest.approx(marked.market_value + marked.cash_flow)
    assert marked.version == 4


def test_a_sell_through_zero_flips_to_short_at_the_fill_price():
    keeper, book = PositionKeeper(), PositionBook()
    apply(keeper, book, fill("BUY", 10, 100.0, 0))
    row = apply(keeper, book, fill("SELL", 25, 110.0, 10))
    # 10 closed at +10 each = 100 realised; 15 short opened at 110, from the flip's time.
    assert (row.quantity, row.avg_cost, row.realized_pnl) == (-15, 110.0, 100.0)
    assert row.opened_at == T0 + timedelta(seconds=10)
    (marked,) = keeper.on_close(book, "AAPL", 100.0, int((T0 + timedelta(minutes=1)).timestamp() * 1e6))
    assert (marked.market_value, marked.exposure, marked.unrealized_pnl) == (-1500.0, 1500.0, 150.0)
    closed = apply(keeper, book, fill("BUY", 15, 105.0, 70))
    assert (closed.quantity, closed.avg_cost, closed.opened_at, closed.realized_pnl) == (0, None, None, 175.0)


def test_portfolios_keep_their_own_positions_in_one_symbol():
    keeper, book = PositionKeeper(), PositionBook()
    apply(keeper, book, fill("BUY", 10, 5.0, 0, portfolio="A"))
    apply(keeper, book, fill("SELL", 4, 5.0, 1, portfolio="B"))
    rows = keeper.on_close(book, "AAPL", 6.0, int((T0 + timedelta(minutes=1)).timestamp() * 1e6))
    assert {(r.portfolio_id, r.quantity, r.unrealized_pnl) for r in rows} == {("A", 10, 10.0), ("B", -4, -4.0)}


def test_an_older_fill_or_bar_changes_nothing():
    keeper, book = PositionKeeper(), PositionBook()
    apply(keeper, book, fill("BUY", 10, 5.0, 60))
    with pytest.raises(InvalidMessage) as refused:
        keeper.check_fill(book, fill("BUY", 10, 5.0, 30))
    assert refused.value.reason == "out_of_order"
    assert keeper.on_close(book, "AAPL", 9.0, int(T0.timestamp() * 1e6)) == []
    assert book.mark == 5.0


def test_day_pnl_starts_again_each_utc_day():
    keeper, book = PositionKeeper(), PositionBook()
    day = int(T0.timestamp() * 1e6)
    apply(keeper, book, fill("BUY", 10, 100.0, 0))
    (first,) = keeper.on_close(book, "AAPL", 103.0, day + 3_600_000_000)
    assert first.day_pnl == pytest.approx(30.0)
    next_day = day + 86_400_000_000
    (second,) = keeper.on_close(book, "AAPL", 101.0, next_day)
    assert second.day_pnl == pytest.approx(-20.0)  # from 103 at yesterday's last update


def test_a_position_cannot_pass_2_to_the_53():
    keeper, book = PositionKeeper(), PositionBook()
    apply(keeper, book, fill("BUY", 2**31 - 1, 1.0, 0))
    book.positions["P1"].quantity = 2**53 - 5  # 2^22 such fills would take it there
    with pytest.raises(InvalidMessage) as refused:
        keeper.check_fill(book, fill("BUY", 10, 1.0, 10))
    assert refused.value.reason == "invalid_value"


# --- portfolios -----------------------------------------------------------------------

def position(symbol: str, version: int, quantity: int, mark: float, cash_flow: float, *, sector: str | None = None,
             seconds: float = 0, day_pnl: float = 0.0) -> PositionRow:
    value = quantity * mark
    return PositionRow(
        portfolio_id="P1", symbol=symbol, ts=T0 + timedelta(seconds=seconds), cause="MARK", quantity=quantity, avg_cost=None,
        mark_price=mark, market_value=value, exposure=abs(value), unrealized_pnl=0.0, realized_pnl=0.0, fees=0.0,
        cash_flow=cash_flow, day_pnl=day_pnl, sector=sector, opened_at=None, version=version,
    )


def test_a_portfolio_sums_its_positions_and_ignores_a_row_it_holds():
    book, state, limits = PortfolioBook(), PortfolioState(), PortfolioLimits(cash=10_000.0)
    book.on_position(state, position("AAPL", 1, 10, 100.0, -1000.0, sector="tech", day_pnl=5.0), limits)
    row = book.on_position(state, position("XOM", 1, -20, 50.0, 1000.0, sector="energy", seconds=1, day_pnl=-2.0), limits).portfolio
    assert (row.cash, row.market_value, row.total_value) == (10_000.0, 0.0, 10_000.0)
    assert (row.gross_exposure, row.net_exposure, row.positions_count) == (2000.0, 0.0, 2)
    assert row.sector_exposure == {"tech": 1000.0, "energy": 1000.0}
    assert (row.largest_position_symbol, row.day_pnl, row.version) == ("AAPL", 3.0, 2)
    assert book.on_position(state, position("AAPL", 1, 10, 100.0, -1000.0, sector="tech"), limits) == (None, [], [])
    newer = book.on_position(state, position("AAPL", 2, 10, 110.0, -1000.0, sector="tech", seconds=2), limits).portfolio
    assert (newer.total_value, newer.largest_position_symbol, newer.largest_position_value) == (10_100.0, "AAPL", 1100.0)


def test_limits_breach_once_and_clear_once():
    book, state = PortfolioBook(), PortfolioState()
    limits = PortfolioLimits(cash=1000.0, margin=False, max_position_value=1500.0, max_gross_exposure=3000.0, max_sector_share=0.6)
    events = book.on_position(state, position("AAPL", 1, 10, 100.0, -1000.0, sector="tech"), limits).risks
    # One position: the whole gross is tech.
    assert [(e.rule, e.subject, e.state) for e in events] == [("max_sector_share", "tech", "BREACH")]
    events = book.on_position(state, position("AAPL", 2, 20, 100.0, -2000.0, sector="tech", seconds=1), limits).risks
    assert [(e.rule, e.subject, e.state, e.observed) for e in events] == [
        ("max_position_value", "AAPL", "BREACH", 2000.0), ("negative_cash", "P1", "BREACH", -1000.0),
    ]
    again = book.on_position(state, position("AAPL", 3, 20, 101.0, -2000.0, sector="tech", seconds=2), limits).risks
    assert again == []
    cleared = book.on_position(state, position("AAPL", 4, 5, 100.0, 0.0, sector="tech", seconds=3), limits).risks
    assert {(e.rule, e.state) for e in cleared} == {("max_position_value", "CLEARED"), ("negative_cash", "CLEARED")}


def test_the_same_rows_in_any_order_give_the_same_portfolio():
    rows = [position(s, v, q, m, c, sector="x", seconds=v) for s, v, q, m, c in
            [("A", 1, 3, 1.1, -3.3), ("B", 1, 7, 2.7, -18.9), ("A", 2, 3, 1.3, -3.3), ("C", 1, -2, 0.1, 0.2), ("B", 2, 0, 2.9, 1.4)]]
    first, second = PortfolioState(), PortfolioState()
    limits = PortfolioLimits()
    for row in rows:
        last_a = PortfolioBook().on_position(first, row, limits).portfolio
    for row in sorted(rows, key=lambda r: (r.symbol != "B", r.version)):
        last_b = PortfolioBook().on_position(second, row, limits).portfolio
    assert msgspec.structs.replace(last_a, version=0) == msgspec.structs.replace(last_b, version=0)


def test_the_portfolios_file(tmp_path):
    path = tmp_path / "portfolios.json"
    path.write_text(json.dumps({"P1": {"cash": 5e6, "margin": False}, "*": {"max_gross_exposure": 1e6}}))
    portfolios = load_portfolios(path, default_cash=100.0)
    assert portfolios.limits("P1") == PortfolioLimits(cash=5e6, margin=False)
    assert portfolios.limits("other") == PortfolioLimits(cash=100.0, max_gross_exposure=1e6)
    path.write_text(json.dumps({"P1": {}}))
    assert load_portfolios(path, default_cash=1.0).limits("other") is None
    path.write_text(json.dumps({"P1": {"max_sector_share": -1}}))
    with pytest.raises(ValueError, match="P1"):
        load_portfolios(path, default_cash=1.0)
    path.write_text(json.dumps({"P1": {"cahs": 1}}))
    with pytest.raises(ValueError, match="cahs"):
        load_portfolios(path, default_cash=1.0)


# --- portfolio performance ------------------------------------------------------------

MONDAY = (datetime(2026, 3, 2, tzinfo=timezone.utc).date() - datetime(1970, 1, 1).date()).days


def test_a_week_of_closes_gives_its_return_deviation_ratios_drawdown_and_beta():
    # Monday to Thursday: closes 100 (from a first value of 100), 110, 99, 108.9.
    days = [Day(MONDAY + n, first, close, max(first, close), 0.0)
            for n, (first, close) in enumerate([(100.0, 100.0), (101.0, 110.0), (108.0, 99.0), (100.0, 108.9)])]
    benchmark = {MONDAY + n: close for n, close in enumerate([400.0, 404.0, 399.96, 403.9596])}
    day, week, month = performance_rows("P1", days, benchmark)
    # Daily returns 0, +10%, -10%, +10%: mean 0.025, sample stdev sqrt(0.0275 / 3).
    stdev = (0.0275 / 3) ** 0.5
    assert (week.period_type, week.trading_days) == ("WEEK", 4)
    assert week.period_start.isoformat() == "2026-03-02" and week.period_end.isoformat() == "2026-03-05"
    assert (week.start_value, week.end_value) == (100.0, 108.9)
    assert week.period_return == pytest.approx(0.089)
    assert week.volatility == pytest.approx(stdev * 252 ** 0.5)
    assert week.sharpe_ratio == pytest.approx(0.025 / stdev * 252 ** 0.5)
    assert week.sortino_ratio == pytest.approx(0.025 / 0.05 * 252 ** 0.5)  # downside: sqrt(0.01 / 4)
    # Peak 110 (Tuesday, also intraday), trough 99 on Wednesday: a tenth.
    assert week.max_drawdown == pytest.approx(0.1)
    # The benchmark moved +1%, -1%, +1% on the days the portfolio moved +10%, -10%, +10%.
    assert week.beta == pytest.approx(10.0)
    assert week.benchmark_return == pytest.approx(1.01 * 0.99 * 1.01 - 1)
    assert (day.period_type, day.trading_days, day.start_value, day.end_value) == ("DAY", 1, 99.0, 108.9)
    assert day.period_return == pytest.approx(0.1) and (day.volatility, day.sharpe_ratio, day.beta) == (None, None, None)
    assert month.period_start.isoformat() == "2026-03-01" and month.period_return == pytest.approx(week.period_return)


def test_a_day_closes_with_the_first_update_of_the_next_once_the_benchmark_closed_it_too():
    book, state, limits = PortfolioBook(), PortfolioState(), PortfolioLimits(cash=0.0)
    start = datetime(2026, 3, 2, 14, tzinfo=timezone.utc)

    def update(version: int, value: float, at: datetime, benchmark: dict | None = None):
        row = msgspec.structs.replace(position("AAPL", version, 1, value, 0.0), ts=at)
        return book.on_position(state, row, limits, PortfolioState(benchmark=benchmark or {})).performance

    for n, (value, hour) in enumerate([(100.0, 0), (120.0, 1), (90.0, 2), (95.0, 3)]):  # Monday
        assert update(n + 1, value, start + timedelta(hours=hour)) == []
    # Tuesday begins, but the benchmark's Monday close is not known yet: Monday waits.
    assert update(5, 99.0, start + timedelta(days=1)) == []
    rows = update(6, 98.0, start + timedelta(days=1, hours=1), {MONDAY: 400.0, MONDAY + 1: 401.0})
    day = {row.period_type: row for row in rows}["DAY"]
    assert (day.start_value, day.end_value, day.period_end.isoformat()) == (100.0, 95.0, "2026-03-02")
    assert day.max_drawdown == pytest.approx(0.25)  # 120 -> 90 within the day
    assert update(7, 97.0, start + timedelta(days=1, hours=2), {MONDAY: 400.0, MONDAY + 1: 401.0}) == []  # once
    # Without the benchmark a closed day waits one whole day, then goes without a beta.
    rows = update(8, 96.0, start + timedelta(days=3))
    assert [(r.period_type, r.period_end.isoformat()) for r in rows] == [
        ("DAY", "2026-03-03"), ("WEEK", "2026-03-03"), ("MONTH", "2026-03-03"),
    ]
    assert [d.day for d in state.days] == [MONDAY, MONDAY + 1, MONDAY + 3]


def test_the_benchmark_keeps_each_days_latest_close_and_a_month_of_days():
    book, state = PortfolioBook(), PortfolioState()
    midnight = MONDAY * 86_400_000_000
    book.on_benchmark(state, midnight + 60_000_000, 10.0)
    book.on_benchmark(state, midnight + 120_000_000, 11.0)
    book.on_benchmark(state, midnight + 90_000_000, 99.0)  # older than the last: ignored
    book.on_benchmark(state, midnight, 5.0)  # the bar that closed at midnight is the day before's; also older
    assert state.benchmark == {MONDAY: 11.0}
    book.on_benchmark(state, midnight + 40 * 86_400_000_000 + 60_000_000, 12.0)
    assert state.benchmark == {MONDAY + 40: 12.0}


def test_two_open_positions_correlated_past_the_limit_breach_until_one_closes():
    book, state = PortfolioBook(), PortfolioState()
    limits = PortfolioLimits(max_pair_correlation=0.8)
    context = PortfolioState()
    book.on_pairs(context, 10, [("MSFT", "AAPL", 0.85), ("AAPL", "XOM", -0.9), ("MSFT", "XOM", 0.7)])
    book.on_pairs(context, 5, [])  # an older snapshot changes nothing
    assert context.pairs == {"AAPL/MSFT": 0.85, "AAPL/XOM": -0.9, "MSFT/XOM": 0.7}
    events = book.on_position(state, position("AAPL", 1, 10, 1.0, 0.0), limits, context).risks
    assert events == []  # one position: no pair
    events = book.on_position(state, position("MSFT", 1, 5, 1.0, 0.0, seconds=1), limits, context).risks
    assert [(e.rule, e.subject, e.state, e.observed) for e in events] == [("max_pair_correlation", "AAPL/MSFT", "BREACH", 0.85)]
    events = book.on_position(state, position("XOM", 1, -5, 1.0, 0.0, seconds=2), limits, context).risks
    assert [(e.subject, e.state) for e in events] == [("AAPL/XOM", "BREACH")]  # |-0.9|; MSFT/XOM's 0.7 is within
    events = book.on_position(state, position("AAPL", 2, 0, 1.0, 0.0, seconds=3), limits, context).risks
    assert sorted((e.subject, e.state) for e in events) == [("AAPL/MSFT", "CLEARED"), ("AAPL/XOM", "CLEARED")]


def test_a_pair_limit_below_the_published_threshold_is_refused(tmp_path):
    path = tmp_path / "portfolios.json"
    path.write_text(json.dumps({"P1": {"max_pair_correlation": 0.5}}))
    with pytest.raises(ValueError, match="below TICKWIRE_CORRELATION_THRESHOLD"):
        load_portfolios(path, default_cash=1.0, correlation_threshold=0.7)
    assert load_portfolios(path, default_cash=1.0, correlation_threshold=0.5).limits("P1").max_pair_correlation == 0.5
