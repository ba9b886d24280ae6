"""Rows of a CSV or Parquet file turned into validated messages, and ``publish_file``, which
sends them for ``tickwire replay``.

Reading and validation are pure, so a bad row is reported with its line number before
anything is sent. Column names are the message's field names, matched case-insensitively
(``Open`` is ``open``); an empty CSV cell is a missing value; ``--symbol`` and
``--timeframe`` fill columns a file does not have (one-symbol files such as exports
from charting tools). Row numbers are the file's line numbers for CSV (header = line 1)
and 1-based row numbers for Parquet.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, NamedTuple, get_args, get_origin

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from tickwire.schemas.decisions import ExitDecision, SizingConfig, SizingDecision
from tickwire.schemas.errors import InvalidMessage, TickwireError, Unreachable
from tickwire.schemas.kafka import start_kafka
from tickwire.schemas.market import Bar
from tickwire.schemas.settings import Settings
from tickwire.schemas.execution import Order
from tickwire.schemas.signals import Fill, Prediction
from tickwire.schemas.topics import BARS, EXITS, FILLS, ORDERS, PREDICTIONS, SIZING, TRADES, Topic
from tickwire.schemas.trades import Trade


class Kind(NamedTuple):
    """What a file holds: its message type, topic and event-time field (for ``--speed``)."""

    message_type: type[msgspec.Struct]
    topic: Topic
    time_field: str


KINDS = {
    "bars": Kind(Bar, BARS, "ts"),
    "trades": Kind(Trade, TRADES, "ts"),
    "predictions": Kind(Prediction, PREDICTIONS, "predicted_at"),
    "fills": Kind(Fill, FILLS, "ts"),
    "orders": Kind(Order, ORDERS, "ts"),
    # One file holds one kind; both go to exec.sizing.v1, tagged by their type.
    "sizing": Kind(SizingDecision, SIZING, "ts"),
    "sizing-configs": Kind(SizingConfig, SIZING, "ts"),
    "exits": Kind(ExitDecision, EXITS, "ts"),
}


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Row(NamedTuple):
    line: int
    message: msgspec.Struct | None  # None: rejected, see ``error``
    error: InvalidMessage | None


class ReplayError(TickwireError, ValueError):
    """The file as a whole cannot be replayed (missing, unreadable, unknown format)."""


def count_rows(path: Path) -> int:
    """Data rows in ``path``, for the progress ETA."""
    if _is_parquet(path):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as f:
        return max(0, sum(1 for _ in f) - 1)


def read_rows(
    path: Path,
    message_type: type[msgspec.Struct],
    *,
    defaults: dict[str, Any],
    columns: dict[str, str] | None = None,
    skip: int = 0,
    now: datetime | None = None,
    max_future_skew_s: float = 86_400.0,
) -> Iterator[Row]:
    """Each data row after the first ``skip`` ones, decoded and validated. ``columns`` maps a
    file's own column names (any case) to fields, for headers such as ``Date`` or ``Last``."""
    fields = {f.lower(): f for f in message_type.__struct_fields__}
    for column, field in (columns or {}).items():
        if field not in message_type.__struct_fields__:
            raise ReplayError(f"--column {column}={field}: {message_type.__name__} has no field {field!r}")
        fields[column.strip().lower()] = field
    # Object fields (a prediction's feature_vector) are JSON text in a CSV cell.
    objects = {f.name for f in msgspec.structs.fields(message_type) if (get_origin(f.type) or f.type) is dict}
    # A vendor's daily file gives a date: the bar's open, midnight UTC.
    times = {f.name for f in msgspec.structs.fields(message_type) if datetime in (f.type, *get_args(f.type))}
    now = now or datetime.now(timezone.utc)
    for line, raw in _records(path, skip):
        record = dict(defaults)
        for column, value in raw.items():
            name = fields.get(str(column).strip().lower())
            if name is not None and value not in ("", None):
                record[name] = value
        for name in times & record.keys():
            if isinstance(record[name], str) and _DATE.fullmatch(record[name].strip()):
                record[name] = record[name].strip() + "T00:00:00Z"
        try:
            for name in objects & record.keys():
                if isinstance(record[name], str):
                    record[name] = msgspec.json.decode(record[name])
            message = msgspec.convert(record, message_type, strict=False)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            yield Row(line, None, InvalidMessage("schema", str(exc)))
            continue
        try:
            if hasattr(message, "validate"):
                message.validate(now=now, max_future_skew_s=max_future_skew_s)
        except InvalidMessage as exc:
            yield Row(line, None, exc)
            continue
        yield Row(line, message, None)


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def _records(path: Path, skip: int) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    if _is_parquet(path):
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for record in batch.to_pylist():
                number += 1
                if number > skip:
                    yield number, record
        return
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise ReplayError(f"{path}: empty file, a header line is needed")
            for index, record in enumerate(reader, start=1):
                if index > skip:
                    yield reader.line_num, {k: v for k, v in record.items() if k is not None}
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{path}: not UTF-8 text or Parquet ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ReplayError(f"{path}: not a readable CSV file ({exc})") from None


def check_file(settings: Settings, path: Path, kind_name: str, *, defaults: dict[str, str] | None = None,
               columns: dict[str, str] | None = None) -> int:
    """Validate every row of ``path`` without a broker, reporting each rejected one on stderr;
    the number of rejected rows."""
    total = rejected = 0
    for row in read_rows(path, KINDS[kind_name].message_type, defaults=defaults or {}, columns=columns,
                         max_future_skew_s=settings.max_future_skew_s):
        total += 1
        if row.error is not None:
            rejected += 1
            print(f"{path}:{row.line}: rejected ({row.error.reason}): {row.error.detail}", file=sys.stderr)
    print(f"{path}: {total - rejected} valid, {rejected} rejected (dry run: nothing sent)", file=sys.stderr)
    return rejected


async def publish_file(
    settings: Settings, path: Path, kind_name: str, *, speed: float = 0.0, defaults: dict[str, str] | None = None,
    columns: dict[str, str] | None = None, resume: bool = False,
) -> int:
    """Send ``path``'s valid rows to their topic (``speed``: event-time speed-up, 0 = at once),
    reporting progress and every rejected row on stderr; the number of rejected rows.

    Progress is kept beside the file, so ``resume`` continues after the rows the broker
    acknowledged in an earlier run."""
    kind = KINDS[kind_name]
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    # Progress sits beside the file; it names the file's size so a changed file is not resumed.
    progress_path = path.with_name(path.name + ".replay-progress")
    identity = {"size": path.stat().st_size, "kind": kind_name}
    skip = 0
    if resume and progress_path.exists():
        saved = json.loads(progress_path.read_text())
        if {k: saved.get(k) for k in identity} != identity:
            raise ReplayError(f"{path} changed since the replay recorded in {progress_path}; replay it without --resume")
        skip = saved["rows"]
    total = count_rows(path)
    topic = settings.topic(kind.topic.name)
    producer = AIOKafkaProducer(**settings.kafka_options(), linger_ms=20, acks="all", enable_idempotence=True)
    await start_kafka(settings, producer)
    encode = msgspec.json.Encoder().encode
    done, sent, rejected = skip, 0, 0
    started = last_report = time.monotonic()
    progress = sys.stderr.isatty()  # a line rewritten in place is noise in a log file
    first_event = None

    async def checkpoint() -> None:
        await producer.flush()
        progress_path.write_text(json.dumps({**identity, "rows": done}))

    try:
        for row in read_rows(path, kind.message_type, defaults=defaults or {}, columns=columns, skip=skip, max_future_skew_s=settings.max_future_skew_s):
            done += 1
            if row.error is not None:
                rejected += 1
                print(f"{path}:{row.line}: rejected ({row.error.reason}): {row.error.detail}", file=sys.stderr)
                continue
            message = row.message
            if speed:
                event = getattr(message, kind.time_field)
                first_event = first_event or event
                await asyncio.sleep(max(0.0, started + (event - first_event).total_seconds() / speed - time.monotonic()))
            await producer.send(topic, key=getattr(message, kind.topic.key).encode(), value=encode(message))
            sent += 1
            now = time.monotonic()
            if now - last_report >= 1.0:
                await checkpoint()
                last_report = now
                rate = (done - skip) / (now - started)
                eta = (total - done) / rate if rate else 0.0
                if progress:
                    print(f"\r{done}/{total} rows  {rate:,.0f} rows/s  ETA {eta:,.0f} s ", end="", file=sys.stderr, flush=True)
        await checkpoint()
    except KafkaError as exc:
        raise Unreachable(f"Kafka failed after {done} rows (rerun with --resume): {exc}") from None
    finally:
        await producer.stop()
    elapsed = time.monotonic() - started
    print(("\r" if progress else "") + f"{path}: {sent} sent to {topic}, {rejected} rejected, {done - skip} rows in {elapsed:.1f} s", file=sys.stderr)
    return rejected
