"""Log lines: one JSON object each, and a library's repeated lines collapsed."""

from __future__ import annotations

import json
import logging

from tickwire.streams.jsonlog import JsonFormatter, RepeatFilter


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_library_line_repeated_through_an_outage_passes_once_a_minute_with_its_count():
    now = [0.0]
    repeats = RepeatFilter(interval_s=60, clock=lambda: now[0])
    passed = []
    for second in range(0, 181):  # three minutes of ten lines a second, for two nodes
        now[0] = float(second)
        for _ in range(10):
            for node in (1, 2):
                line = record("aiokafka.conn", "Unable connect to node with id %s: %s", node, "refused")
                if repeats.filter(line):
                    passed.append(line.getMessage())
    assert len(passed) == 4  # at 0, 60, 120 and 180 s: one line each instead of 3,620
    assert passed[0] == "Unable connect to node with id 1: refused"
    assert passed[1].endswith("[and 1199 more like it in the last 60 s]")


def test_tickwire_lines_and_different_messages_are_never_collapsed():
    repeats = RepeatFilter(interval_s=60, clock=lambda: 0.0)
    assert all(repeats.filter(record("tickwire.worker", "rejected: %s", n)) for n in range(100))
    assert repeats.filter(record("aiokafka", "Unable to update metadata"))
    assert repeats.filter(record("aiokafka", "Heartbeat failed"))
    assert not repeats.filter(record("aiokafka", "Unable to update metadata"))


def test_a_line_is_one_json_object_with_its_kafka_coordinates():
    line = record("tickwire.worker", "rejected: %s", "schema")
    line.topic, line.partition, line.offset = "md.bars.v1", 3, 17
    entry = json.loads(JsonFormatter().format(line))
    assert entry["message"] == "rejected: schema" and (entry["topic"], entry["partition"], entry["offset"]) == ("md.bars.v1", 3, 17)
