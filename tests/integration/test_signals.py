"""Predictions and fills through the worker into their tables, checked against the pure cores."""

from __future__ import annotations

import csv
import subprocess
import sys

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from tickwire.schemas.topics import BARS, FILLS, PREDICTIONS
from tickwire.streams.topics import ensure_topics
from tickwire.streams.fills import TradeBuilder, TradeBook
from tickwire.streams.predictions import PredictionState, PredictionValidator
from tickwire.streams.simulator import SIGNAL_TOPICS, MarketSimulator, ToyStrategy
from tests.conftest import wait_for
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration
SYMBOLS = ["SIGA", "SIGB", "SIGC", "SIGD"]


def messages():
    """Bars and, right after the bar that triggered them, the toy strategy's signals."""
    strategy, out = ToyStrategy(seed=5), []
    for bar in MarketSimulator(SYMBOLS, seed=5, start=START).bars(400):
        out.append((BARS, bar))
        out += [(SIGNAL_TOPICS[type(m)], m) for m in strategy.on_bar(bar)]
    return out


def expected(stream):
    """What the cores give when fed the same per-symbol sequence."""
    validator, builder = PredictionValidator(), TradeBuilder()
    predictions, books, outcomes, trades = {}, {}, {}, {}
    for spec, message in stream:
        state = predictions.setdefault(message.symbol, PredictionState())
        book = books.setdefault(message.symbol, TradeBook())
        if spec is BARS:
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
    return outcomes, trades


async def test_predictions_are_validated_and_fills_become_trades(isolated, processes, tmp_path):
    await ensure_topics(isolated)
    stream = messages()
    want_outcomes, want_trades = expected(stream)
    processes.start("worker")
    processes.start("sink")
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    encode = msgspec.json.Encoder().encode
    for spec, message in stream:
        await producer.send(isolated.topic(spec.name), key=message.symbol.encode(), value=encode(message))
    await producer.stop()

    conn = await asyncpg.connect(**isolated.pg_options())
    final = sum(1 for o in want_outcomes.values() if o.validated_at or o.expiry_reason)
    closed = sum(1 for t in want_trades.values() if t.outcome_type != "OPEN")
    assert final > 20 and closed > 10  # the comparison below means something

    async def done():
        validated = await conn.fetchval("SELECT count(*) FROM model_predictions WHERE validated_at IS NOT NULL OR expiry_reason IS NOT NULL")
        trades = await conn.fetchval("SELECT count(*) FROM trade_outcomes WHERE outcome_type <> 'OPEN'")
        return validated >= final and trades >= closed

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

    async def statistics():
        models = await conn.fetchval("SELECT sum(testing_samples) FROM model_performance WHERE model_version = 'toy-1.0'")
        strategy = await conn.fetchval("SELECT sum(total_trades) FROM strategy_performance WHERE strategy_id = 'toy-momentum' AND period_type = 'DAY'")
        return models == sum(1 for o in want_outcomes.values() if o.validated_at) and strategy == closed

    assert await wait_for(statistics, timeout_s=60, check=processes.check_alive)
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
