"""Orders, fills and bars through the worker into orders, positions, portfolios, risk events
and the audit trail, checked against the pure cores; bad execution input to the DLQ."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import pytest

from tickwire.schemas.signals import Fill
from tickwire.schemas.topics import BARS, PORTFOLIO_CONTEXT, DLQ, FILLS, ORDERS
from tickwire.streams.orders import OrderBook, OrderTracker
from tickwire.streams.positions import PositionBook, PositionKeeper
from tickwire.streams.simulator import SIGNAL_TOPICS, MarketSimulator, ToyStrategy
from tickwire.streams.topics import ensure_topics
from tests.conftest import publish_stream, scraped, wait_for
from tests.integration.test_dlq_replay import records_of
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration
# The toy strategy calls every 15th bar: 4 symbols take turns. SPY is the benchmark.
SYMBOLS = ["SPY", "EXB", "EXC", "EXD"]
BARS_EACH = 4000  # from Monday 14:30 to Thursday 09:10: three days close, two with the benchmark's returns
LIMITS = {
    "toy-a": {"cash": 1e6, "max_position_value": 2_000.0},
    "toy-b": {"cash": 5e5, "margin": False, "max_pair_correlation": 0.7, "max_sector_share": 0.9},
    "bad-actor": {},
}


def messages():
    """The toy strategy's bars, orders and fills; then, on Friday, one more fill in each
    portfolio, sent once the rest is in (a portfolio's closed days are reported at its next
    update, and in a backlog the fills topic may run ahead of the benchmark's bars)."""
    strategy, out = ToyStrategy(seed=11), []
    for bar in MarketSimulator(SYMBOLS, seed=11, start=START).bars(BARS_EACH):
        out.append((BARS, bar))
        out += [(SIGNAL_TOPICS[type(m)], m) for m in strategy.on_bar(bar)]
    last = {m.symbol: m for spec, m in out if spec is BARS}
    friday = START + timedelta(days=4)
    out += [(FILLS, Fill(
        fill_id=f"friday-{portfolio}", trade_id=uuid.uuid4(), strategy_id="toy-momentum", model_version="toy-1.0",
        symbol=symbol, side="BUY", ts=friday, price=last[symbol].close, quantity=1, portfolio_id=portfolio,
    )) for portfolio, symbol in (("toy-a", "EXB"), ("toy-b", "EXC"))]
    return [(spec, m) for spec, m in out if spec in (BARS, ORDERS, FILLS)]


def is_tail(message) -> bool:
    return isinstance(message, Fill) and message.fill_id.startswith("friday-")


def expected_orders(stream):
    """order id -> the pure core's final order update (orders and fills per symbol, in order)."""
    tracker, books, final = OrderTracker(), {}, {}
    for spec, message in stream:
        book = books.setdefault(message.symbol, OrderBook())
        updates = tracker.on_order(book, message) if spec is ORDERS else [tracker.apply_fill(book, message)] if spec is FILLS else []
        final.update((update.order_id, update) for update in updates if update is not None)
    return final


def expected_positions(stream):
    """(portfolio, symbol) -> the pure core's final position; the last close of each symbol."""
    keeper, books, closes = PositionKeeper(), {}, {}
    final = {}
    for spec, message in stream:
        book = books.setdefault(message.symbol, PositionBook())
        if spec is FILLS:
            row = keeper.apply_fill(book, message)
            final[row.portfolio_id, row.symbol] = row
        elif spec is BARS:
            closes[message.symbol] = message.close
    return final, closes


def hostile(stream):
    """Each a fill or order the execution rules refuse, with the reason it must get (None: let
    through, changing nothing)."""
    fill = next(m for spec, m in stream if spec is FILLS and m.order_id)
    order = next(m for spec, m in stream if spec is ORDERS)
    late = fill.ts + timedelta(hours=1)

    def new_fill(**kw):
        fields = msgspec.structs.asdict(fill) | {"fill_id": f"bad-{uuid.uuid4().hex[:8]}", "trade_id": uuid.uuid4(), "ts": late}
        return Fill(**(fields | kw))

    last_of_pair = [m for spec, m in stream if spec is FILLS and (m.portfolio_id, m.symbol) == (fill.portfolio_id, fill.symbol)][-1]
    return [
        (FILLS, last_of_pair, None),  # the same fill again: a duplicate, counted, booked once
        (FILLS, new_fill(ts=fill.ts, order_id=None), "out_of_order"),  # older than its pair's last fill
        (FILLS, new_fill(portfolio_id="nobody"), "unknown_portfolio"),
        (FILLS, new_fill(order_id=order.order_id, quantity=order.quantity), "order_state"),  # the order is filled already
        (ORDERS, msgspec.structs.replace(order, event="CANCELLED", ts=late), "order_state"),
        (ORDERS, msgspec.structs.replace(order, order_id="never", event="AMENDED", ts=late), "unknown_order"),
        (ORDERS, msgspec.structs.replace(order, quantity=order.quantity + 1), "conflicting_id"),
    ]


async def test_the_execution_stream_fills_its_tables_as_the_cores_say(isolated, processes, tmp_path):
    limits = tmp_path / "portfolios.json"
    limits.write_text(json.dumps(LIMITS))
    processes.extra_env["TICKWIRE_PORTFOLIOS_FILE"] = str(limits)
    await ensure_topics(isolated)
    stream = messages()
    want, closes = expected_positions(stream)
    orders = [m for spec, m in stream if spec is ORDERS]
    fills = [m for spec, m in stream if spec is FILLS]
    assert len(orders) > 20 and len(want) >= 6  # both portfolios, several symbols
    _, worker_port = processes.start("worker")
    processes.start("sink")
    await publish_stream(isolated, [(spec, m) for spec, m in stream if not is_tail(m)])
    conn = await asyncpg.connect(**isolated.pg_options())

    async def benchmark_in():
        # The portfolios' stage has the benchmark's Monday, Tuesday and Wednesday closes, in each
        # partition (a day's close goes out with the next day's first bar).
        consumed = f'tickwire_messages_consumed_total{{topic="{isolated.topic(PORTFOLIO_CONTEXT.name)}"}}'
        return scraped(worker_port, consumed) >= 3 * PORTFOLIO_CONTEXT.partitions

    assert await wait_for(benchmark_in, timeout_s=180, check=processes.check_alive)
    bad = hostile(stream)
    await publish_stream(isolated, [(spec, m) for spec, m in stream if is_tail(m)] + [(spec, m) for spec, m, _ in bad])
    marked = {key: row for key, row in want.items() if row.quantity}

    async def done():
        filled = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'FILLED'")
        at_close = await conn.fetchval(
            "SELECT count(*) FROM positions p JOIN unnest($1::text[], $2::float8[]) AS c(symbol, close) USING (symbol)"
            " WHERE p.quantity = 0 OR p.mark_price = c.close::numeric(18, 8)",
            list(closes), list(closes.values()),
        )
        audit = await conn.fetchval("SELECT count(*) FROM execution_audit")
        # Each table has its own sink pipeline: the positions may land after the audit rows.
        quantities = {(r["portfolio_id"], r["symbol"]): r["quantity"] for r in await conn.fetch("SELECT * FROM positions")}
        return (filled == len(orders) and at_close == len(want) and audit == len(orders) + 2 * len(fills)
                and quantities == {key: row.quantity for key, row in want.items()})

    assert await wait_for(done, timeout_s=180, check=processes.check_alive)
    rows = {(r["portfolio_id"], r["symbol"]): r for r in await conn.fetch("SELECT * FROM positions")}
    assert set(rows) == set(want)
    for key, expected in want.items():
        got = rows[key]
        assert got["quantity"] == expected.quantity, key
        assert float(got["realized_pnl"]) == pytest.approx(expected.realized_pnl, abs=1e-6), key
        assert float(got["cash_flow"]) == pytest.approx(expected.cash_flow, abs=1e-6), key
        assert float(got["fees"]) == pytest.approx(expected.fees, abs=1e-9), key
        if expected.quantity:
            assert float(got["avg_cost"]) == pytest.approx(expected.avg_cost, abs=1e-8), key
            assert float(got["market_value"]) == pytest.approx(expected.quantity * closes[key[1]], rel=1e-9), key
    assert marked  # some positions are open at the end, so marking was tested

    async def portfolios_settled():
        got = {r["portfolio_id"]: r for r in await conn.fetch("SELECT * FROM portfolios")}
        for portfolio in ("toy-a", "toy-b"):
            mine = [row for (p, _), row in want.items() if p == portfolio]
            cash = LIMITS[portfolio]["cash"] + sum(r.cash_flow for r in mine)
            value = sum(r.quantity * closes[r.symbol] for r in mine)
            row = got.get(portfolio)
            if row is None or abs(float(row["cash"]) - cash) > 1e-6 or abs(float(row["market_value"]) - value) > 1e-6:
                return False
            if row["positions_count"] != sum(1 for r in mine if r.quantity):
                return False
        return True

    assert await wait_for(portfolios_settled, timeout_s=60, check=processes.check_alive)
    # The order lifecycle: each PLACED and each FILL an event; the fill ratio and slippage joined.
    assert await conn.fetchval("SELECT count(*) FROM order_events") == 2 * len(orders)
    got_orders = {r["order_id"]: r for r in await conn.fetch("SELECT * FROM orders")}
    want_orders = expected_orders(stream)
    assert set(got_orders) == set(want_orders)
    for order_id, want_order in want_orders.items():
        got = got_orders[order_id]
        assert (got["status"], got["filled_quantity"], got["version"]) == (want_order.status, want_order.filled_quantity, want_order.version)
        assert float(got["avg_fill_price"]) == pytest.approx(want_order.avg_fill_price, abs=1e-8), order_id
        assert float(got["slippage"]) == pytest.approx(want_order.slippage, abs=1e-8), order_id
        assert (got["fill_ratio"], got["time_to_fill_ms"]) == (1.0, want_order.time_to_fill_ms), order_id
    snapshots = await conn.fetchval("SELECT count(*) FROM position_snapshots")
    assert snapshots >= len(fills)
    # toy-a's limit of 2,000 a position is crossed by the simulator's trades; each breach is an event.
    breaches = await conn.fetch("SELECT * FROM risk_events WHERE portfolio_id = 'toy-a' AND rule = 'max_position_value'")
    assert breaches and all(float(r["observed"]) > 2000 for r in breaches if r["state"] == "BREACH")
    assert await conn.fetchval("SELECT count(*) FROM portfolio_realtime") == 2
    # Three UTC days closed: each portfolio's DAY, WEEK and MONTH rows, consistent; from the
    # third, the week has two days of benchmark returns beside its own, so a beta.
    wednesday = START.date() + timedelta(days=2)
    wanted = {(p, t, wednesday) for p in ("toy-a", "toy-b") for t in ("DAY", "WEEK", "MONTH")}

    async def performance_rows():
        rows = await conn.fetch("SELECT * FROM portfolio_performance")
        return rows if {(r["portfolio_id"], r["period_type"], r["period_end"]) for r in rows} >= wanted else None

    performance = await wait_for(performance_rows, timeout_s=60, check=processes.check_alive)
    assert performance, sorted({(r["portfolio_id"], r["period_type"], r["period_end"]) for r in await conn.fetch("SELECT * FROM portfolio_performance")})
    for row in performance:
        assert row["period_return"] == pytest.approx(float(row["end_value"]) / float(row["start_value"]) - 1)
        assert row["max_drawdown"] >= 0
    weeks = [r for r in performance if r["period_type"] == "WEEK" and r["period_end"] == wednesday]
    assert all(r["trading_days"] == 3 and r["beta"] is not None and r["volatility"] is not None for r in weeks)
    # The audit trail names the coordinates of what caused each row, and refuses changes.
    sources = await conn.fetch("SELECT DISTINCT source_topic FROM execution_audit")
    assert {r["source_topic"] for r in sources} == {isolated.topic(ORDERS.name), isolated.topic(FILLS.name)}
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await conn.execute("UPDATE execution_audit SET subject = 'x'")
    await conn.close()

    dead = [dict(r.headers) for r in await records_of(isolated, DLQ.name)]
    assert sorted(h["tickwire.reason"].decode() for h in dead) == sorted(reason for _, _, reason in bad if reason)
