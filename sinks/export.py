"""CSV export of trades and strategy performance (seed 004): UTF-8, one header line.

Filters: an optional strategy_id and a half-open time range [since, until) on
``entry_time`` (trades) or ``period_start`` (performance, compared as UTC dates),
plus an optional period type for performance. The SQL is fixed text with ``$n``
parameters; column names come from the row Structs, never from input.

Cells: empty for NULL, ISO 8601 for times (UTC) and dates, ``true``/``false``,
numbers as PostgreSQL returns them (DECIMAL exactly), JSON for objects. Open the
output with ``newline=""`` (the csv module writes CRLF line ends, RFC 4180).
"""

from __future__ import annotations

import csv
import json
import re
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable, Literal, NamedTuple, Sequence, TextIO

import asyncpg
import msgspec

from tickwire.schemas.errors import UsageError
from tickwire.schemas.signals import PERIOD_TYPES, StrategyPerformanceRow, TradeOutcomeRow

Kind = Literal["trades", "performance"]
TRADE_COLUMNS = tuple(f.name for f in msgspec.structs.fields(TradeOutcomeRow))
PERFORMANCE_COLUMNS = tuple(f.name for f in msgspec.structs.fields(StrategyPerformanceRow))


def _cols(columns: Sequence[str]) -> str:
    return ", ".join('"' + c + '"' for c in columns)


_SQL = {
    "trades": (
        f"SELECT {_cols(TRADE_COLUMNS)} FROM trade_outcomes"
        " WHERE ($1::text IS NULL OR strategy_id = $1)"
        " AND ($2::timestamptz IS NULL OR entry_time >= $2)"
        " AND ($3::timestamptz IS NULL OR entry_time < $3)"
        " ORDER BY entry_time, trade_id"
    ),
    "performance": (
        f"SELECT {_cols(PERFORMANCE_COLUMNS)} FROM strategy_performance"
        " WHERE ($1::text IS NULL OR strategy_id = $1)"
        " AND ($2::date IS NULL OR period_start >= $2)"
        " AND ($3::date IS NULL OR period_start < $3)"
        " AND ($4::text IS NULL OR period_type = $4)"
        " ORDER BY strategy_id, model_version, period_type, period_start"
    ),
}
_STRATEGY = re.compile(r"^[\x21-\x7e]{1,50}$")


class ExportArgumentError(UsageError, ValueError):
    """An export argument is wrong; the message names it and says what is expected."""


class ExportRequest(NamedTuple):
    kind: Kind
    strategy_id: str | None
    since: datetime | None
    until: datetime | None
    period_type: str | None


def _time(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ExportArgumentError(f"--{name}: not an ISO 8601 date or time: {text[:40]!r} (e.g. 2026-03-01 or 2026-03-01T09:30:00Z)") from None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def validate_export_args(
    kind: str, *, strategy: str | None = None, since: str | None = None, until: str | None = None, period: str | None = None
) -> ExportRequest:
    """Check the CLI's arguments; raise ``ExportArgumentError`` with a clear message.

    Times without an offset are UTC.
    """
    if kind not in ("trades", "performance"):
        raise ExportArgumentError(f"what to export: {kind[:40]!r} is not 'trades' or 'performance'")
    if strategy is not None and not _STRATEGY.match(strategy):
        raise ExportArgumentError("--strategy: a strategy_id is 1 to 50 printable ASCII characters without spaces")
    start, end = _time("since", since), _time("until", until)
    if start is not None and end is not None and start >= end:
        raise ExportArgumentError(f"--since {start.isoformat()} is not before --until {end.isoformat()}")
    if period is not None:
        if kind != "performance":
            raise ExportArgumentError("--period applies to 'performance' only")
        period = period.upper()
        if period not in PERIOD_TYPES:
            raise ExportArgumentError(f"--period: {period[:20]!r} is not one of {', '.join(PERIOD_TYPES)}")
    return ExportRequest(kind, strategy, start, end, period)  # type: ignore[arg-type]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def start_csv(out: TextIO, columns: Sequence[str]) -> Callable[[Sequence[Any]], None]:
    """Write the header; return the function that writes one row (values in ``columns`` order)."""
    writer = csv.writer(out)
    writer.writerow(columns)
    return lambda row: writer.writerow([_cell(v) for v in row])


def write_csv(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write a header and ``rows``; return the row count."""
    write = start_csv(out, columns)
    count = 0
    for row in rows:
        write(row)
        count += 1
    return count


def query(request: ExportRequest) -> tuple[str, tuple[Any, ...]]:
    """The SQL text and its parameters for ``request``."""
    if request.kind == "trades":
        return _SQL["trades"], (request.strategy_id, request.since, request.until)
    dates = tuple(None if t is None else t.date() for t in (request.since, request.until))
    return _SQL["performance"], (request.strategy_id, *dates, request.period_type)


async def export_csv(conn: asyncpg.Connection, out: TextIO, request: ExportRequest, *, prefetch: int = 1000) -> int:
    """Stream the rows ``request`` selects into ``out`` as CSV; return how many."""
    sql, params = query(request)
    columns = TRADE_COLUMNS if request.kind == "trades" else PERFORMANCE_COLUMNS
    write = start_csv(out, columns)
    count = 0
    # A cursor streams the rows; PostgreSQL cursors live inside a transaction.
    async with conn.transaction(readonly=True):
        async for record in conn.cursor(sql, *params, prefetch=prefetch):
            write(record)
            count += 1
    return count
