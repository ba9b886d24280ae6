"""SIGKILL the worker and the sink at random moments: the tables must equal an uninterrupted run.

Bars with the toy strategy's predictions, orders and fills. CI size: 20,000 bars for 20 symbols
and 6 kills; TICKWIRE_FAULT_SCALE=full runs the issue's 200,000 bars for 50 symbols.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tickwire.schemas.market import MultiTimeframeAnalysis
from tickwire.schemas.tables import MARKET_CONDITIONS
from tickwire.schemas.topics import BARS, FILLS, ORDERS
from tickwire.sinks.postgres import TableWriter
from tickwire.streams.predictions import ValidatorConfig
from tickwire.streams.symbol import SymbolProcessor, SymbolState
from tickwire.streams.topics import ensure_topics
from tickwire.streams.simulator import SIGNAL_TOPICS, MarketSimulator, ToyStrategy, default_symbols
from tests.conftest import wait_for
from tests.integration.test_execution import expected_positions
from tests.integration.test_pipeline import START
from tests.integration.test_signals import expected as expected_signals, expected_statistics

pytestmark = pytest.mark.integration
FULL = os.environ.get("TICKWIRE_FAULT_SCALE") == "full"
SYMBOLS, STEPS, KILLS = (50, 4_000, 8) if FULL else (20, 1_000, 6)


def expected_rows(bars) -> tuple[list[tuple], dict]:
    """The uninterrupted result, computed by the same pure core: the conditions' rows, and
    the multi-timeframe analyses by (symbol, timestamp)."""
    processor, states, rows, analyses = SymbolProcessor(), {}, [], {}
    for bar in bars:
        outputs, _ = processor.process(states.setdefault(bar.symbol, SymbolState()), bar)
        rows += [msgspec.structs.astuple(msgspec.json.decode(v, type=MARKET_CONDITIONS.record)) for kind, v in outputs if kind == "condition"]
        for analysis in (msgspec.json.decode(v, type=MultiTimeframeAnalysis) for kind, v in outputs if kind == "mtf"):
            analyses[analysis.symbol, analysis.timestamp] = analysis
    return rows, analyses


async def test_random_sigkills_lose_and_duplicate_nothing(isolated, processes):
    async def sigkills():
        worker, _ = processes.start("worker")
        sink, _ = processes.start("sink")
        rng = random.Random(7)
        for kill in range(KILLS):
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            victim_name = "worker" if kill % 2 == 0 else "sink"
            victim = worker if victim_name == "worker" else sink
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            if victim_name == "worker":
                worker, _ = processes.start("worker")
            else:
                sink, _ = processes.start("sink")

    await equals_an_uninterrupted_run(isolated, processes, sigkills)


async def lagging(settings) -> list[str]:
    """Every consumer group of the run with a partition it has not committed to the end:
    which stage (worker or one of the sink's pipelines) stopped, and where."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    reader = AIOKafkaConsumer(**settings.kafka_options(), enable_auto_commit=False)
    await admin.start()
    await reader.start()
    try:
        out = []
        for group, _ in await admin.list_consumer_groups():
            if not group.startswith(settings.topic_prefix):
                continue
            committed = {tp: at.offset for tp, at in (await admin.list_consumer_group_offsets(group)).items()}
            topics = await admin.describe_topics(sorted({tp.topic for tp in committed}))  # for the partitions never committed
            every = [TopicPartition(t["topic"], p["partition"]) for t in topics for p in t["partitions"]]
            ends = await reader.end_offsets(every)
            out += [f"  {group} {tp.topic}[{tp.partition}] at {committed.get(tp, 'no commit')} of {ends[tp]}"
                    for tp in sorted(every) if committed.get(tp, -1) < ends[tp] and ends[tp]]
        return out
    finally:
        await reader.stop()
        await admin.close()


async def explain(conn, columns: str, processes) -> str:
    """What a failing run's rows, groups and logs say: where rows are missing (one partition
    stalled, or a handful of bars skipped), which group lags, and the processes' distinct
    warnings, for a CI log."""
    missing = await conn.fetch(
        f"SELECT symbol, timeframe, count(*) AS n, min(\"timestamp\") AS first FROM (SELECT {columns} FROM expected_conditions"
        f" EXCEPT SELECT {columns} FROM market_conditions) d GROUP BY symbol, timeframe ORDER BY n DESC LIMIT 20")
    warnings: dict[str, tuple[int, str]] = {}  # template -> (times, its last line), last seen last
    for line in processes.logs().splitlines():
        if '"WARNING"' in line or '"ERROR"' in line or "Traceback" in line:
            template = re.sub(r"\d+", "N", line.split('"message": ', 1)[-1])[:160]
            times, _ = warnings.pop(template, (0, ""))
            warnings[template] = (times + 1, line[:400])
    return "\n".join(["missing (symbol, timeframe, rows, first):"]
                     + [f"  {r['symbol']} {r['timeframe']} {r['n']} {r['first']}" for r in missing]
                     + ["groups short of the end:"] + await lagging(processes.settings)
                     + [f"{len(warnings)} distinct warnings, the last 40 (times, last line):"]
                     + [f"{times}x {line}" for times, line in list(warnings.values())[-40:]])


async def equals_an_uninterrupted_run(isolated, processes, disrupt, pause_s: float = 0.2) -> None:
    """Feed the stream, pausing ``pause_s`` every 2,000 messages, while ``disrupt()`` starts
    and stops processes; then compare.

    The reference replays the stream in publishing order; the worker reads bars, predictions
    and fills from three topics, and in a backlog one can run minutes of bar time behind
    another. A prediction validates the same either way while its bars are still in the
    validator's history, so the worker keeps as much history as the reference (the
    default, 60 bars, would expire a prediction that came 60 bars late)."""
    processes.extra_env["TICKWIRE_PREDICTION_HISTORY_BARS"] = str(ValidatorConfig().max_history_bars)
    await ensure_topics(isolated)
    bars = list(MarketSimulator(default_symbols(SYMBOLS), seed=99, start=START).bars(STEPS))
    strategy = ToyStrategy(seed=99)
    stream = [(spec, message) for bar in bars for spec, message in [(BARS, bar)] + [
        (SIGNAL_TOPICS[type(m)], m) for m in strategy.on_bar(bar)
    ]]
    want_outcomes, want_trades = expected_signals(stream)
    conn = await asyncpg.connect(**isolated.pg_options())
    # The reference goes through the same writer into a twin table, so numeric rounding is identical.
    await conn.execute('CREATE TABLE expected_conditions (LIKE market_conditions INCLUDING DEFAULTS, UNIQUE (symbol, timeframe, "timestamp"))')
    reference = TableWriter(MARKET_CONDITIONS._replace(name="expected_conditions", stored_in=()))
    await reference.prepare(conn)
    expected, want_analyses = expected_rows(bars)
    await reference.write(conn, expected)

    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all", linger_ms=10)
    await producer.start()
    encode = msgspec.json.Encoder().encode

    async def feed():
        for i, (spec, message) in enumerate(stream):
            await producer.send(isolated.topic(spec.name), key=message.symbol.encode(), value=encode(message))
            if i % 2000 == 1999:
                await asyncio.sleep(pause_s)  # spread the input so the disruptions land mid-stream
        await producer.flush()

    feeding = asyncio.create_task(feed())
    await disrupt()
    await feeding
    await producer.stop()

    async def caught_up():
        return await conn.fetchval("SELECT count(*) FROM market_conditions") >= len(expected)

    await wait_for(caught_up, timeout_s=2400 if FULL else 300, interval_s=1, check=processes.check_none_crashed)
    final = sum(1 for o in want_outcomes.values() if o.validated_at or o.expiry_reason)

    async def signals_caught_up():
        done = await conn.fetchval("SELECT count(*) FROM model_predictions WHERE validated_at IS NOT NULL OR expiry_reason IS NOT NULL")
        return done >= final

    await wait_for(signals_caught_up, timeout_s=600 if FULL else 120, interval_s=1, check=processes.check_none_crashed)
    closed = sum(1 for t in want_trades.values() if t.exit_time)

    placed = sum(bool(t.entry_regimes) for t in want_trades.values())

    async def trades_caught_up():
        row = await conn.fetchrow("SELECT count(*) AS n, count(exit_time) AS closed, count(entry_regimes) AS placed FROM trade_outcomes")
        return row["n"] >= len(want_trades) and row["closed"] >= closed and row["placed"] >= placed

    await wait_for(trades_caught_up, timeout_s=600 if FULL else 120, interval_s=1, check=processes.check_none_crashed)
    want_positions, _ = expected_positions(stream)
    orders = sum(1 for spec, _ in stream if spec is ORDERS)
    fills = sum(1 for spec, _ in stream if spec is FILLS)

    async def execution_caught_up():
        filled = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'FILLED'")
        audited = await conn.fetchval("SELECT count(*) FROM execution_audit")
        # Each table has its own sink pipeline: the positions may land after the audit rows.
        quantities = {(r["portfolio_id"], r["symbol"]): r["quantity"] for r in await conn.fetch("SELECT * FROM positions")}
        return filled >= orders and audited >= orders + 2 * fills and quantities == {k: p.quantity for k, p in want_positions.items()}

    await wait_for(execution_caught_up, timeout_s=600 if FULL else 120, interval_s=1, check=processes.check_none_crashed)
    want_scores, want_regimes = expected_statistics(want_trades)
    assert want_scores and want_regimes

    async def statistics_caught_up():
        analysed = await conn.fetchval("SELECT count(*) FROM multi_timeframe_analysis")
        regimes = await conn.fetchval("SELECT sum(total_trades) FROM regime_performance_stats")
        scores = await conn.fetchval("SELECT count(*) FROM strategy_scores")
        return (analysed, regimes, scores) == (len(want_analyses), sum(r.total_trades for r in want_regimes.values()), len(want_scores))

    await wait_for(statistics_caught_up, timeout_s=600 if FULL else 120, interval_s=1, check=processes.check_none_crashed)
    await asyncio.sleep(3)  # let any late duplicate show itself
    # The correlation stage's columns are compared in tests/integration/test_correlations_stage.py.
    columns = ", ".join(f'"{c}"' for c in MARKET_CONDITIONS.columns if not c.endswith("_correlation"))
    missing = await conn.fetchval(f"SELECT count(*) FROM (SELECT {columns} FROM expected_conditions EXCEPT SELECT {columns} FROM market_conditions) d")
    extra = await conn.fetchval(f"SELECT count(*) FROM (SELECT {columns} FROM market_conditions EXCEPT SELECT {columns} FROM expected_conditions) d")
    total = await conn.fetchval("SELECT count(*) FROM market_conditions")
    predictions = {r["prediction_id"]: r for r in await conn.fetch("SELECT * FROM model_predictions")}
    trades = {r["trade_id"]: r for r in await conn.fetch("SELECT * FROM trade_outcomes")}
    execution = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM order_events) AS events,"
        " (SELECT count(*) FROM execution_audit) AS audited,"
        " (SELECT count(*) FROM position_snapshots WHERE cause = 'FILL') AS fill_updates"
    )
    positions = {(r["portfolio_id"], r["symbol"]): (r["quantity"], float(r["realized_pnl"]), float(r["cash_flow"]))
                 for r in await conn.fetch("SELECT * FROM positions")}
    analyses = {(r["symbol"], r["timestamp"]): (r["trigger_timeframe"], r["alignment_score"])
                for r in await conn.fetch("SELECT * FROM multi_timeframe_analysis")}
    by_regime = {(r["regime"], r["timeframe"]): (r["total_trades"], r["winning_trades"], float(r["net_pnl"]))
                 for r in await conn.fetch("SELECT * FROM regime_performance_stats")}
    scores = {(r["model_version"], r["period_type"], r["period_start"]): r["score"] for r in await conn.fetch("SELECT * FROM strategy_scores")}
    processes.check_none_crashed()
    diagnosis = await explain(conn, columns, processes) if (missing, extra) != (0, 0) else ""
    await conn.close()
    assert len(expected) > len(bars)  # the higher timeframes are in the comparison too
    assert (missing, extra, total) == (0, 0, len(expected)), diagnosis
    assert set(predictions) == set(want_outcomes) and set(trades) == set(want_trades)
    def prediction(row) -> tuple:
        return row["validated_at"], row["actual_direction"], row["expiry_reason"]

    def trade(row) -> tuple:
        return row["outcome_type"], row["exit_time"], row["quantity"], row["entry_regimes"] and msgspec.json.decode(row["entry_regimes"])

    wrong = [(prediction(predictions[p]), (w.validated_at, w.actual_direction, w.expiry_reason)) for p, w in want_outcomes.items()
             if prediction(predictions[p]) != (w.validated_at, w.actual_direction, w.expiry_reason)]
    wrong += [(trade(trades[t]), (w.outcome_type, w.exit_time, w.quantity, w.entry_regimes)) for t, w in want_trades.items()
              if trade(trades[t]) != (w.outcome_type, w.exit_time, w.quantity, w.entry_regimes)]
    assert not wrong, f"{len(wrong)} predictions or trades differ from the uninterrupted run, e.g. (got, want): {wrong[:3]}"
    # Each order placed and filled once, each fill booked once, each change audited once.
    assert dict(execution) == {"orders": orders, "events": 2 * orders, "audited": orders + 2 * fills, "fill_updates": fills}
    assert set(positions) == set(want_positions)
    wrong_positions = [(key, got) for key, got in positions.items() if got[0] != want_positions[key].quantity
                       or abs(got[1] - want_positions[key].realized_pnl) > 1e-6 or abs(got[2] - want_positions[key].cash_flow) > 1e-6]
    assert not wrong_positions, f"{len(wrong_positions)} positions differ from the uninterrupted run, e.g. {wrong_positions[:3]}"
    # Each analysis, the figures by regime and the scores once each, as uninterrupted.
    assert analyses == {key: (a.trigger_timeframe, a.alignment_score) for key, a in want_analyses.items()}
    assert by_regime.keys() == want_regimes.keys() and all(
        got[:2] == (want_regimes[key].total_trades, want_regimes[key].winning_trades)
        and abs(got[2] - want_regimes[key].net_pnl) < 1e-3 for key, got in by_regime.items())
    assert scores.keys() == want_scores.keys()
    assert all(abs(scores[key] - want.score) < 1e-9 for key, want in want_scores.items())
