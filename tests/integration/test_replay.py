"""``tickwire replay`` against the real broker: good rows sent, bad rows named, resume sends nothing twice."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from tickwire.schemas.market import Bar
from tickwire.schemas.topics import BARS
from tickwire.streams.topics import ensure_topics
from tickwire.streams.simulator import MarketSimulator
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration


async def topic_values(settings) -> list[bytes]:
    consumer = AIOKafkaConsumer(settings.topic(BARS.name), **settings.kafka_options(), auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=3000)
            if not batch:
                return values
            values += [r.value for records in batch.values() for r in records]
    finally:
        await consumer.stop()


def replay(processes, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tickwire.streams.cli", "replay", *args], env=processes.env(), capture_output=True, text=True,
        timeout=timeout_s,
    )


async def test_replay_sends_good_rows_names_bad_ones_and_resumes(isolated, processes, tmp_path):
    await ensure_topics(isolated)
    bars = list(MarketSimulator(["RPA", "RPB"], seed=2, start=START).bars(100))
    lines = ["symbol,ts,open,high,low,close,volume"]
    lines += [f"{b.symbol},{b.ts.isoformat()},{b.open},{b.high},{b.low},{b.close},{b.volume}" for b in bars]
    lines.insert(11, "RPA,2026-03-02T14:30:00Z,10,9,11,10,5")  # high below low: line 12
    lines.insert(51, "RPA,not a time,10,11,9,10,5")  # line 52
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(lines) + "\n")

    first = replay(processes, str(path), "--kind", "bars")
    assert first.returncode == 1, first.stderr  # some rows were refused
    assert f"{path}:12: rejected (invalid_value)" in first.stderr
    assert f"{path}:52: rejected (schema)" in first.stderr
    assert "200 sent" in first.stderr and "Traceback" not in first.stderr
    sent = [msgspec.json.decode(v, type=Bar) for v in await topic_values(isolated)]
    order = lambda b: (b.symbol, b.ts)  # noqa: E731 - partitions interleave symbols
    assert sorted(sent, key=order) == sorted(bars, key=order)  # values intact

    again = replay(processes, str(path), "--kind", "bars", "--resume")
    assert again.returncode == 0 and "0 sent" in again.stderr, again.stderr
    assert len(await topic_values(isolated)) == len(bars)

    path.write_text("\n".join(lines[:50]) + "\n")  # a different file under the same name
    changed = replay(processes, str(path), "--kind", "bars", "--resume")
    assert changed.returncode == 1 and "changed since the replay" in changed.stderr
