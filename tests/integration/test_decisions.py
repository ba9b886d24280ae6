"""Sizing and exit decisions through the worker into position_sizing_history,
position_sizing_config_history, smart_exit_history and partial_exit_history, checked
against the pure core; bad decisions to the DLQ. A module of its own: its worker, sink,
topics and database are not the other execution test's."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import pytest

from tickwire.schemas.decisions import ExitDecision, SizingConfig, SizingDecision
from tickwire.schemas.execution import Order
from tickwire.schemas.topics import BARS, DLQ, EXITS, FILLS, SIZING
from tickwire.streams.decisions import DecisionBook, DecisionJoiner
from tickwire.streams.fills import TradeBook, TradeBuilder
from tickwire.streams.simulator import SIGNAL_TOPICS, MarketSimulator, ToyStrategy
from tickwire.streams.topics import ensure_topics
from tests.conftest import publish_stream, scraped, wait_for
from tests.integration.test_dlq_replay import records_of
from tests.integration.test_execution import LIMITS
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration


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
    await publish_stream(isolated, stream)
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
    await publish_stream(isolated, [(spec, m) for spec, m, _ in bad])

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
