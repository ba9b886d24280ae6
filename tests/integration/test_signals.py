"""Predictions and fills through the worker into their tables, checked against the pure cores."""

from __future__ import annotations

import csv
import subprocess
import sys
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import pytest

from tickwire.schemas.signals import Fill, RegimePerformanceRow, StrategyScoreRow
from tickwire.schemas.topics import BARS, FILLS, PREDICTIONS
from tickwire.streams.topics import ensure_topics
from tickwire.streams.fills import TradeBuilder, TradeBook
from tickwire.streams.performance import StrategyPerformance, StrategyPerformanceState
from tickwire.streams.predictions import PredictionState, PredictionValidator
from tickwire.streams.simulator import SIGNAL_TOPICS, MarketSimulator, ToyStrategy
from tickwire.streams.symbol import SymbolProcessor, SymbolState
from tests.conftest import publish_stream, wait_for
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration
SYMBOLS = ["SIGA", "SIGB", "SIGC", "SIGD"]


def messages():
    """Bars and, right after the bar that triggered them, the toy strategy's signals; then a
    trade the next day, which closes the first day's periods (their scores)."""
    strategy, out = ToyStrategy(seed=5), []
    for bar in MarketSimulator(SYMBOLS, seed=5, start=START).bars(400):
        out.append((BARS, bar))
        out += [(SIGNAL_TOPICS[type(m)], m) for m in strategy.on_bar(bar)]
    next_day, trade_id = START + timedelta(days=1), uuid.UUID(int=99)
    for n, side in enumerate(("BUY", "SELL")):
        out.append((FILLS, Fill(
            fill_id=f"next-day-{n}", trade_id=trade_id, strategy_id="toy-momentum", model_version="toy-1.0", symbol=SYMBOLS[0],
            side=side, ts=next_day + timedelta(minutes=n), price=100.0 + n, quantity=10,
        )))
    return out


def expected(stream):
    """What the cores give when fed the same per-symbol sequence."""
    validator, builder, processor = PredictionValidator(), TradeBuilder(), SymbolProcessor()
    predictions, books, symbols, outcomes, trades = {}, {}, {}, {}, {}
    for spec, message in stream:
        state = predictions.setdefault(message.symbol, PredictionState())
        book = books.setdefault(message.symbol, TradeBook())
        bars = symbols.setdefault(message.symbol, SymbolState())
        if spec is BARS:
            processor.process(bars, message)
            for row in builder.place_regimes(book, bars.regimes.at):
                trades[row.trade_id] = row
            for outcome in validator.on_bar(state, message):
                outcomes[outcome.prediction_id] = outcome
            for row in builder.on_bar(book, message):
                trades[row.trade_id] = row
        elif spec is PREDICTIONS:
            for outcome in validator.on_prediction(state, message).outputs:
                outcomes[outcome.prediction_id] = outcome
        elif spec is FILLS:
            row = builder.on_fill(book, message).row
            trades[row.trade_id] = row
            for row in builder.place_regimes(book, bars.regimes.at):
                trades[row.trade_id] = row
    return outcomes, trades


def expected_statistics(trades):
    """Scores and figures by regime: the core over the closed trades (order does not matter
    within the days they settle in)."""
    core, state, rows = StrategyPerformance(), StrategyPerformanceState(), []
    for trade in sorted(trades.values(), key=lambda t: (t.exit_time is None, t.exit_time)):
        rows += core.add(state, trade)
    scores = {(r.model_version, r.period_type, r.period_start): r for r in rows if isinstance(r, StrategyScoreRow)}
    regimes = {(r.regime, r.timeframe): r for r in rows if isinstance(r, RegimePerformanceRow)}
    return scores, regimes


async def test_predictions_are_validated_and_fills_become_trades(isolated, processes, tmp_path):
    await ensure_topics(isolated)
    stream = messages()
    want_outcomes, want_trades = expected(stream)
    processes.start("worker")
    processes.start("sink")
    await publish_stream(isolated, stream)

    conn = await asyncpg.connect(**isolated.pg_options())
    final = sum(1 for o in want_outcomes.values() if o.validated_at or o.expiry_reason)
    closed = sum(1 for t in want_trades.values() if t.outcome_type != "OPEN")
    assert final > 20 and closed > 10  # the comparison below means something

    placed = sum(bool(t.entry_regimes) for t in want_trades.values())

    async def done():
        # A trade may close before the bars reach its entry (two topics): its regimes follow.
        validated = await conn.fetchval("SELECT count(*) FROM model_predictions WHERE validated_at IS NOT NULL OR expiry_reason IS NOT NULL")
        trades = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE outcome_type <> 'OPEN') AS closed, count(entry_regimes) AS placed FROM trade_outcomes")
        return validated >= final and trades["closed"] >= closed and trades["placed"] >= placed

    assert await wait_for(done, timeout_s=180, check=processes.check_alive)
    rows = {r["prediction_id"]: r for r in await conn.fetch("SELECT * FROM model_predictions")}
    assert set(rows) == set(want_outcomes)
    for pid, want in want_outcomes.items():
        got = rows[pid]
        assert got["actual_direction"] == want.actual_direction, pid
        assert got["prediction_accuracy"] == want.prediction_accuracy, pid
        assert got["validated_at"] == want.validated_at, pid
        if want.actual_return is not None:
            assert abs(float(got["actual_return"]) - want.actual_return) <= 0.5e-8, pid
    trades = {r["trade_id"]: r for r in await conn.fetch("SELECT * FROM trade_outcomes")}
    assert set(trades) == set(want_trades)
    for tid, want in want_trades.items():
        got = trades[tid]
        assert (got["outcome_type"], got["direction"], got["quantity"]) == (want.outcome_type, want.direction, want.quantity), tid
        assert abs(float(got["net_pnl"]) - want.net_pnl) <= 1e-6, tid
        assert got["exit_time"] == want.exit_time, tid
        assert (msgspec.json.decode(got["entry_regimes"]) if got["entry_regimes"] else None) == want.entry_regimes, tid
    assert sum(bool(t.entry_regimes) for t in want_trades.values()) > 10

    want_scores, want_regimes = expected_statistics(want_trades)
    assert want_scores and len(want_regimes) >= 4

    async def statistics():
        models = await conn.fetchval("SELECT sum(testing_samples) FROM model_performance WHERE model_version = 'toy-1.0'")
        strategy = await conn.fetchval("SELECT sum(total_trades) FROM strategy_performance WHERE strategy_id = 'toy-momentum' AND period_type = 'DAY'")
        regimes = await conn.fetchval("SELECT sum(total_trades) FROM regime_performance_stats WHERE strategy_id = 'toy-momentum'")
        scores = await conn.fetchval("SELECT count(*) FROM strategy_scores WHERE strategy_id = 'toy-momentum'")
        return (models == sum(1 for o in want_outcomes.values() if o.validated_at) and strategy == closed
                and regimes == sum(r.total_trades for r in want_regimes.values()) and scores == len(want_scores))

    assert await wait_for(statistics, timeout_s=60, check=processes.check_alive)
    for got in await conn.fetch("SELECT * FROM regime_performance_stats WHERE strategy_id = 'toy-momentum'"):
        want = want_regimes[got["regime"], got["timeframe"]]
        assert (got["total_trades"], got["winning_trades"], got["first_trade_at"], got["last_trade_at"]) == (
            want.total_trades, want.winning_trades, want.first_trade_at, want.last_trade_at)
        assert float(got["net_pnl"]) == pytest.approx(want.net_pnl, abs=1e-6)
        assert float(got["max_drawdown"]) == pytest.approx(want.max_drawdown, abs=1e-4)
    for got in await conn.fetch("SELECT * FROM strategy_latest_scores WHERE strategy_id = 'toy-momentum'"):
        want = want_scores[got["model_version"], got["period_type"], got["period_start"]]
        assert got["score"] == pytest.approx(want.score) and got["total_trades"] == want.total_trades
    await conn.close()

    # The analyst's way out: CSV of the same trades, then a clear refusal of a bad argument.
    exported = tmp_path / "trades.csv"
    run = subprocess.run(
        [sys.executable, "-m", "tickwire.streams.cli", "export", "trades", "--strategy", "toy-momentum", "--output", str(exported)],
        env=processes.env(), capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    with exported.open(encoding="utf-8", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert {row["trade_id"] for row in csv_rows} == {str(t) for t in want_trades}
    bad = subprocess.run(
        [sys.executable, "-m", "tickwire.streams.cli", "export", "trades", "--until", "someday"],
        env=processes.env(), capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and "--until" in bad.stderr and "Traceback" not in bad.stderr
