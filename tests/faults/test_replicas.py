"""Worker and sink replicas joining and leaving mid-stream: the tables must equal an
uninterrupted run (the comparison of test_crash.py)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.faults.test_crash import equals_an_uninterrupted_run

pytestmark = pytest.mark.integration


async def test_replicas_joining_and_leaving_mid_stream_lose_and_duplicate_nothing(isolated, processes):
    """Every join and leave moves partitions between live workers with records in flight:
    what faust fetched before its seek reaches the stages after it (worker/sequence.py)."""

    async def rebalances():
        first, _ = processes.start("worker")
        processes.start("sink")
        processes.start("sink")
        await asyncio.sleep(8)
        second, _ = processes.start("worker")  # takes half the partitions over
        await asyncio.sleep(8)
        processes.start("worker")  # three workers, a third of the partitions each
        await asyncio.sleep(6)
        first.send_signal(signal.SIGTERM)  # leaves: the other two take its share
        first.wait()
        await asyncio.sleep(4)
        os.kill(second.pid, signal.SIGKILL)  # dies: the third takes everything once its session expires
        await asyncio.sleep(4)
        processes.start("worker")  # and gives half back

    await equals_an_uninterrupted_run(isolated, processes, rebalances, pause_s=1.0)
