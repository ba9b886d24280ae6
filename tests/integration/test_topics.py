"""``tickwire topics`` against the real broker: missing topics created with the settings'
replication, and existing ones that differ from the registry reported (exit 1 when a
partition count differs: keys would move away from their state)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tickwire.schemas.topics import BARS, CONDITIONS
from tickwire.streams.topics import ensure_topics

pytestmark = pytest.mark.integration


def topics_cli(processes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tickwire.streams.cli", "topics"], env=processes.env(),
                          capture_output=True, text=True, timeout=120)


async def test_topics_that_differ_from_the_registry_are_reported(isolated, processes):
    admin = AIOKafkaAdminClient(**isolated.kafka_options())
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(isolated.topic(BARS.name), 3, 1),
            NewTopic(isolated.topic(CONDITIONS.name), CONDITIONS.partitions, 1, topic_configs={"retention.ms": "60000"}),
        ])
    finally:
        await admin.close()

    first = topics_cli(processes)
    assert first.returncode == 1, first.stderr
    assert f"{isolated.topic(BARS.name)}: 3 partitions, the registry says {BARS.partitions}" in first.stderr
    assert f"{isolated.topic(CONDITIONS.name)}: retention.ms is 60000, the registry says {CONDITIONS.retention_ms}" in first.stderr
    assert "Traceback" not in first.stderr
    # Everything else was created as the registry says: no other line.
    assert len([line for line in first.stderr.splitlines() if line.startswith("tickwire topics:")]) == 2


async def test_topics_made_by_tickwire_match_the_registry(isolated):
    clean = dataclasses.replace(isolated, topic_prefix=isolated.topic_prefix + "clean.")  # none made by hand
    assert await ensure_topics(clean) == []
    assert await ensure_topics(clean) == []  # and a second run finds nothing to say
