"""``tickwire run``, the embedded default, as a second local stack beside the test stack:
its own directory and ports (TICKWIRE_VAR_DIR, TICKWIRE_LOCAL_*_PORT), rows landing, its
logs and password in its directory, and a clean stop that takes its services down."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import ROOT, free_port, free_port_run, wait_for

pytestmark = pytest.mark.integration


def test_run_refuses_a_taken_metrics_port_before_starting_anything(tmp_path):
    # Four free ports below the ephemeral range (where no outgoing connection takes the
    # worker's), the sink's then taken here.
    first = free_port_run(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        sink_port = first + 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWIRE_")}
        env |= {"TICKWIRE_VAR_DIR": str(tmp_path), "TICKWIRE_METRICS_PORT": str(first)}
        run = subprocess.run([sys.executable, "-m", "tickwire.streams.cli", "run", "--no-services"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert f"metrics port 127.0.0.1:{sink_port} for the sink is not free" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "log" / "worker.log").exists()


async def test_a_second_stack_runs_from_its_own_directory_and_ports_and_stops_cleanly():
    # Not pytest's tmp_path: PostgreSQL runs as its own user, who must be able to enter it.
    top = Path(tempfile.mkdtemp(prefix="tickwire-second-stack-"))
    top.chmod(0o755)
    var = top / "var"
    ports = {name: free_port() for name in ("KAFKA", "KAFKA_CONTROLLER", "KAFKA_SASL", "PG")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWIRE_")}
    env |= {f"TICKWIRE_LOCAL_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {"TICKWIRE_VAR_DIR": str(var), "TICKWIRE_METRICS_PORT": str(free_port_run(4)), "TICKWIRE_LOCAL_TIMESCALEDB": "off"}
    run = subprocess.Popen([sys.executable, "-m", "tickwire.streams.cli", "run", "--symbols", "5", "--rate", "50"], env=env,
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        password = var / "pg" / "password"
        started = await wait_for(lambda: asyncio.sleep(0, password.exists() or run.poll() is not None), timeout_s=120)
        assert started and run.poll() is None, run.stdout.read() if run.poll() is not None else "no password file in 120 s"

        async def rows(query: str = "SELECT count(*) FROM market_conditions") -> int:
            if run.poll() is not None:
                return -1
            try:
                conn = await asyncpg.connect(host="127.0.0.1", port=ports["PG"], user="tickwire", database="tickwire",
                                             password=password.read_text().strip())
            except (OSError, asyncpg.PostgresError):
                return 0
            try:
                return await conn.fetchval(query)
            except asyncpg.UndefinedTableError:
                return 0
            finally:
                await conn.close()

        assert await wait_for(rows, timeout_s=240, interval_s=2) > 0, run.stdout.read() if run.poll() is not None else ""
        # The toy strategy's orders, fills and the positions and portfolios they make, live.
        execution = ("SELECT least((SELECT count(*) FROM orders), (SELECT count(*) FROM positions),"
                     " (SELECT count(*) FROM portfolios), (SELECT count(*) FROM execution_audit))")
        assert await wait_for(lambda: rows(execution), timeout_s=120, interval_s=2) > 0
        # The correlation stage's summaries and thresholds, and its daily history once the
        # simulated day (from 14:30 UTC, about a minute of 1m bars at this rate) has closed.
        correlations = ("SELECT least((SELECT count(*) FROM correlation_analysis_results), (SELECT count(*) FROM correlation_thresholds),"
                        " (SELECT count(*) FROM historical_correlations))")
        assert await wait_for(lambda: rows(correlations), timeout_s=240, interval_s=2) > 0
        # Each symbol's multi-timeframe analysis, the toy strategy's figures by regime, and
        # the scores of its closed days.
        strategies = ("SELECT least((SELECT count(*) FROM multi_timeframe_analysis), (SELECT count(*) FROM regime_performance_stats),"
                      " (SELECT count(*) FROM strategy_scores))")
        assert await wait_for(lambda: rows(strategies), timeout_s=120, interval_s=2) > 0
        # Its sizing and exit decisions, joined with the trades they led to once those closed.
        decisions = ("SELECT least((SELECT count(*) FROM position_sizing_config_history),"
                     " (SELECT count(*) FROM position_sizing_history WHERE realized_pnl IS NOT NULL),"
                     " (SELECT count(*) FROM smart_exit_history WHERE exit_efficiency IS NOT NULL OR trade_pnl IS NOT NULL),"
                     " (SELECT count(*) FROM partial_exit_history WHERE remaining_quantity IS NOT NULL))")
        assert await wait_for(lambda: rows(decisions), timeout_s=120, interval_s=2) > 0
        conn = await asyncpg.connect(host="127.0.0.1", port=ports["PG"], user="tickwire", database="tickwire",
                                     password=password.read_text().strip())
        try:  # the sink writes as the least-privilege role, not as the tables' owner
            assert await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tickwire_sink'") > 0
            assert not await conn.fetchval("SELECT has_table_privilege('tickwire_sink', 'market_conditions_daily', 'DELETE')")
        finally:
            await conn.close()
        assert {"worker.log", "sink.log", "simulate.log"} <= {p.name for p in (var / "log").iterdir()}
    finally:
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=120)
    assert run.returncode == 0 and "tickwire: stopped" in out, out[-3000:]
    assert str(var / "log") in out and str(password) in out  # what it printed points into its own directory
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ports["KAFKA"]), timeout=1).close()
    shutil.rmtree(top)
