"""The broker stopped while the worker is in the middle of a backlog, for longer than the
client's timeouts: no batch whose outputs or state could not be written is committed, so
every bar still becomes its row once the broker is back; and the clients' repeated
connection errors are collapsed instead of flooding the log.

Before the worker retried such a batch, its offsets were committed regardless and 6,142
of 154,080 rows were lost in the same scenario (issue 16).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tickwire.schemas.topics import BARS
from tickwire.streams.simulator import MarketSimulator
from tickwire.streams.topics import ensure_topics
from tests.conftest import scraped, wait_for
from tests.faults.test_outages import count, publish, service
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration
# Longer than the clients' 40 s request timeout, so a delivery in flight fails rather than waits.
OUTAGE_S = 180 if os.environ.get("TICKWIRE_FAULT_SCALE") == "full" else 60
SYMBOLS = [f"OUT{i}" for i in range(10)]  # test_outages' count() selects these
BARS_PER_SYMBOL = 8_000


def consumed(port: int, topic: str) -> float:
    return scraped(port, f'tickwire_messages_consumed_total{{topic="{topic}"}}')


async def test_broker_lost_mid_backlog_loses_no_row(isolated, processes):
    await ensure_topics(isolated)
    bars = list(MarketSimulator(SYMBOLS, seed=7, start=START).bars(BARS_PER_SYMBOL))
    await publish(isolated, bars)
    _, worker_port = processes.start("worker")
    processes.start("sink")
    topic = isolated.topic(BARS.name)

    async def mid_backlog() -> bool:
        return consumed(worker_port, topic) >= len(bars) * 0.1

    assert await wait_for(mid_backlog, timeout_s=180, interval_s=0.2, check=processes.check_alive)
    service("kafka.sh", "stop")
    lines_before = len(processes.logs().splitlines())
    try:
        assert consumed(worker_port, topic) < len(bars), "the backlog was done before the broker stopped"
        for _ in range(OUTAGE_S):
            await asyncio.sleep(1)
            processes.check_alive()
    finally:
        service("kafka.sh", "start")
    logged = len(processes.logs().splitlines()) - lines_before
    assert logged < 10 * OUTAGE_S, f"{logged} log lines in a {OUTAGE_S} s outage"

    async def all_rows() -> bool:
        return await count(isolated) >= len(bars)

    assert await wait_for(all_rows, timeout_s=360, interval_s=2, check=processes.check_alive), (
        f"{len(bars) - await count(isolated)} of {len(bars)} rows never arrived"
    )
    await asyncio.sleep(2)
    assert await count(isolated) == len(bars)
