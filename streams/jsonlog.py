"""Structured logs: one JSON object per line, with topic/partition/offset when given.

Pass Kafka coordinates as ``extra={"topic": ..., "partition": ..., "offset": ...}`` so a
log shipper can index them instead of parsing message text. The clients' own repeated
lines are collapsed (``RepeatFilter``).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

_FIELDS = ("topic", "partition", "offset", "table", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in _FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RepeatFilter(logging.Filter):
    """At most one line per ``interval_s`` for each message of a library's logger.

    Through a broker outage aiokafka logs "Unable connect to node" and "Unable to update
    metadata" many times a second (290 MB of log in two minutes): each such message
    passes once per interval, carrying how many like it were dropped since. Tickwire's
    own loggers pass untouched; readiness, metrics and ``watch_broker``'s lines say
    when an outage starts and ends.
    """

    def __init__(self, interval_s: float = 60.0, clock=time.monotonic) -> None:
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._seen: dict[tuple[str, int, object], list] = {}  # (logger, level, template) -> [passed at, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("tickwire"):
            return True
        key, now = (record.name, record.levelno, record.msg), self.clock()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.interval_s:
            if seen is not None and seen[1]:
                record.msg = f"{record.msg} [and {seen[1]} more like it in the last {now - seen[0]:.0f} s]"
            if len(self._seen) >= 1000:  # templates are few; arbitrary texts must not grow this
                self._seen.clear()
            self._seen[key] = [now, 0]
            return True
        seen[1] += 1
        return False


def logging_config(level: str) -> dict:
    """A ``logging.config.dictConfig`` that sends every logger to stderr as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"repeats": {"()": RepeatFilter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["repeats"]}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
