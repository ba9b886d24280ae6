"""Orders, fills and bars through the worker into orders, positions, portfolios, risk events
and the audit trail, and sizing and exit decisions into their histories, checked against
the pure cores; bad execution input to the DLQ."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from tickwire.schemas.decisions import ExitDecision, SizingConfig, SizingDecision
from tickwire.schemas.execution import Order
from tickwire.schemas.signals import Fill
from tickwire.schemas.topics import BARS, PORTFOLIO_CONTEXT, DLQ, EXITS, FILLS, ORDERS, SIZING
from tickwire.streams.decisions import DecisionBook, DecisionJoiner
from tickwire.streams.fills import TradeBook, TradeBuilder
from tickwire.streams.orders import OrderBook, OrderTracker
from tickwire.streams.positions import PositionBook, PositionKeeper
from tickwire.streams.simulator import SIGNAL_TOPICS, MarketSimulator, ToyStrategy
from tickwire.streams.topics import ensure_topics
from tests.conftest import scraped, wait_for
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
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    encode = msgspec.json.Encoder().encode
    for spec, message in stream:
        if not is_tail(message):
            await producer.send(isolated.topic(spec.name), key=message.symbol.encode(), value=encode(message))
    await producer.flush()
    conn = await asyncpg.connect(**isolated.pg_options())

    async def benchmark_in():
        # The portfolios' stage has the benchmark's Monday, Tuesday and Wednesday closes, in each
        # partition (a day's close goes out with the next day's first bar).
        consumed = f'tickwire_messages_consumed_total{{topic="{isolated.topic(PORTFOLIO_CONTEXT.name)}"}}'
        return scraped(worker_port, consumed) >= 3 * PORTFOLIO_CONTEXT.partitions

    assert await wait_for(benchmark_in, timeout_s=180, check=processes.check_alive)
    for spec, message in stream:
        if is_tail(message):
            await producer.send(isolated.topic(spec.name), key=message.symbol.encode(), value=encode(message))
    await producer.flush()
    bad = hostile(stream)
    for spec, message, _ in bad:
        await producer.send(isolated.topic(spec.name), key=message.symbol.encode(), value=encode(message))
    await producer.stop()
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


# --- sizing and exit decisions ----------------------------------------------------------------

DECISION_SYMBOLS = ["SPY", "EXE", "EXF", "EXG"]  # 4: the toy strategy's every 15th bar takes each in turn


def decision_stream():
    """The toy strategy's bars, orders, fills, sizing and exit decisions over 12 hours, but
    those of the trades still open at the end."""
    strategy, out = ToyStrategy(seed=23), []
    for bar in MarketSimulator(DECISION_SYMBOLS, seed=23, start=START).bars(700):
        out.append((BARS, bar))
        out += [(SIGNAL_TOPICS[type(m)], m) for m in strategy.on_bar(bar)]
    open_ids = {trade[0] for trade in strategy.open_trades.values()}

    def of_open_trade(message) -> bool:
        if isinstance(message, Order):
            return any(message.order_id.startswith(t.hex[:16]) for t in open_ids)
        return getattr(message, "trade_id", None) in open_ids

    return [(spec, m) for spec, m in out if not of_open_trade(m)]


def expected_decisions(stream):
    """(record, id) -> the pure core's last row of each decision, fed per symbol in stream order."""
    builder = TradeBuilder()
    joiner, trades, books, final = DecisionJoiner(builder), {}, {}, {}
    for spec, message in stream:
        book, trade_book = books.setdefault(message.symbol, DecisionBook()), trades.setdefault(message.symbol, TradeBook())
        rows = []
        if spec is BARS:
            for row in builder.on_bar(trade_book, message):
                rows += joiner.on_trade(book, trade_book, row.trade_id).rows
        elif spec is FILLS:
            rows = joiner.on_trade(book, trade_book, builder.on_fill(trade_book, message).row.trade_id).rows
        elif isinstance(message, SizingConfig):
            rows = joiner.on_config(book, trade_book, message).rows
        elif isinstance(message, SizingDecision):
            rows = joiner.on_sizing(book, trade_book, message).rows
        elif isinstance(message, ExitDecision):
            rows = joiner.on_exit(book, trade_book, message).rows
        for row in rows:
            final[type(row).__name__, getattr(row, "decision_id", None) or getattr(row, "config_id", None) or row.exit_id] = row
    return final


def hostile_decisions(stream):
    """Each a decision the rules refuse, with its reason (None: let through, changing nothing)."""
    sized = next(m for spec, m in stream if isinstance(m, SizingDecision))
    config = next(m for spec, m in stream if isinstance(m, SizingConfig))
    exited = [m for spec, m in stream if isinstance(m, ExitDecision) and not m.partial][0]
    after = exited.ts + timedelta(hours=1)
    return [
        (SIZING, sized, None),  # the same decision again: a duplicate, counted, changes nothing
        (EXITS, exited, None),
        (SIZING, msgspec.structs.replace(sized, quantity=sized.quantity + 1), "conflicting_id"),
        (SIZING, msgspec.structs.replace(config, risk_per_trade=0.5), "conflicting_id"),
        (SIZING, msgspec.structs.replace(sized, decision_id=uuid.uuid4(), portfolio_id="nobody"), "unknown_portfolio"),
        (SIZING, msgspec.structs.replace(sized, decision_id=uuid.uuid4(), ts=sized.ts + timedelta(days=1)), "unknown_trade"),
        (EXITS, msgspec.structs.replace(exited, exit_id=uuid.uuid4(), ts=after), "unknown_trade"),
        (EXITS, msgspec.structs.replace(exited, exit_id=uuid.uuid4(), strategy_id="other"), "invalid_value"),
        (EXITS, msgspec.structs.replace(exited, exit_id=uuid.uuid4(), reason="panic"), "invalid_value"),
        (EXITS, msgspec.structs.replace(exited, exit_id=uuid.uuid4(), ts=START + timedelta(days=400)), "bad_timestamp"),
    ]


_COMPARED = {
    "position_sizing_history": ("PositionSizingRow", "decision_id", (
        "trade_id", "quantity", "config_id", "planned_risk", "trade_quantity", "trade_closed_at", "max_adverse_excursion",
        "realized_pnl", "realized_loss", "mae_to_planned", "loss_to_planned")),
    "position_sizing_config_history": ("SizingConfigRow", "config_id", ("symbol", "method", "risk_per_trade", "max_position_fraction")),
    "smart_exit_history": ("SmartExitRow", "exit_id", (
        "trade_id", "reason", "quantity", "partial", "direction", "entry_price", "trade_closed_at", "exit_pnl", "trade_pnl",
        "max_favorable_excursion", "exit_efficiency", "trade_efficiency")),
    "partial_exit_history": ("PartialExitRow", "exit_id", (
        "remaining_quantity", "remainder_exit_price", "remainder_pnl", "remainder_pnl_at_partial", "remainder_gain")),
}


def _same(got, want) -> bool:
    if isinstance(want, float) and got is not None:
        return float(got) == pytest.approx(want, rel=1e-9, abs=1e-6)
    return got == want


async def test_sizing_and_exit_decisions_fill_their_histories_as_the_core_says(isolated, processes, tmp_path):
    limits = tmp_path / "portfolios.json"
    limits.write_text(json.dumps(LIMITS))
    processes.extra_env["TICKWIRE_PORTFOLIOS_FILE"] = str(limits)
    await ensure_topics(isolated)
    stream = decision_stream()
    want = expected_decisions(stream)
    counts = {table: sum(1 for kind, _ in want if kind == record) for table, (record, _, _) in _COMPARED.items()}
    assert counts["partial_exit_history"] >= 5 and counts["position_sizing_config_history"] >= 2, counts
    # Every trade of the stream closes within it, so each sizing and exit decision is joined.
    assert all(row.trade_closed_at is not None for (kind, _), row in want.items() if kind != "SizingConfigRow")
    _, worker_port = processes.start("worker")
    processes.start("sink")
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    encode = msgspec.json.Encoder().encode
    for spec, message in stream:
        await producer.send(isolated.topic(spec.name), key=message.symbol.encode(), value=encode(message))
    await producer.flush()
    conn = await asyncpg.connect(**isolated.pg_options())

    async def joined_counts():
        # Each table has its own sink pipeline: wait for every row, joined.
        got = {}
        for table, (_, key, _) in _COMPARED.items():
            condition = "" if table == "position_sizing_config_history" else " WHERE trade_closed_at IS NOT NULL"
            got[table] = await conn.fetchval(f"SELECT count(DISTINCT {key}) FROM {table}{condition}")
        return got

    async def joined():
        return await joined_counts() == counts

    assert await wait_for(joined, timeout_s=180, check=processes.check_alive), (await joined_counts(), counts)
    bad = hostile_decisions(stream)
    for spec, message, _ in bad:
        await producer.send(isolated.topic(spec.name), key=message.symbol.encode(), value=encode(message))
    await producer.stop()

    async def dead_letters():
        dead = [dict(r.headers) for r in await records_of(isolated, DLQ.name)]
        return dead if len(dead) >= sum(1 for _, _, reason in bad if reason) else None

    dead = await wait_for(dead_letters, timeout_s=120, check=processes.check_alive)
    assert sorted(h["tickwire.reason"].decode() for h in dead) == sorted(reason for _, _, reason in bad if reason)
    duplicates = scraped(worker_port, f'tickwire_duplicates_dropped_total{{topic="{isolated.topic(SIZING.name)}"}}')
    assert duplicates >= 1
    for table, (record, key, columns) in _COMPARED.items():
        rows = {r[key]: r for r in await conn.fetch(f"SELECT * FROM {table}")}
        expected = {ident: row for (kind, ident), row in want.items() if kind == record}
        assert set(rows) == set(expected), table  # nothing the refused messages said was stored
        for ident, row in expected.items():
            for column in columns:
                assert _same(rows[ident][column], getattr(row, column)), (table, ident, column, rows[ident][column], getattr(row, column))
    await conn.close()
