"""sinks.export without a database: CSV cells, argument checks and the parameterized SQL."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tickwire.sinks.export import PERFORMANCE_COLUMNS, TRADE_COLUMNS, ExportArgumentError, query, validate_export_args, write_csv


def test_csv_cells_and_header() -> None:
    out = io.StringIO(newline="")
    when = datetime(2026, 3, 2, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    rows = [
        (uuid.UUID(int=1), "straté,gy", Decimal("10.12345678"), None, when, date(2026, 3, 1), True, {"b": 1, "a": "é"}, 3, 0.1),
    ]
    assert write_csv(out, ["id", "s", "d", "n", "t", "day", "flag", "obj", "i", "f"], rows) == 1
    text = out.getvalue()
    assert text.startswith("id,s,d,n,t,day,flag,obj,i,f\r\n")
    (header, row) = list(csv.reader(io.StringIO(text, newline="")))
    assert row == [
        "00000000-0000-0000-0000-000000000001",
        "straté,gy",
        "10.12345678",
        "",
        "2026-03-02T08:30:00+00:00",
        "2026-03-01",
        "true",
        '{"a":"é","b":1}',
        "3",
        "0.1",
    ]
    assert text.encode("utf-8").decode("utf-8") == text  # plain UTF-8, no escapes


def test_empty_export_still_has_a_header() -> None:
    out = io.StringIO(newline="")
    assert write_csv(out, TRADE_COLUMNS, []) == 0
    assert out.getvalue() == ",".join(TRADE_COLUMNS) + "\r\n"


def test_valid_arguments() -> None:
    req = validate_export_args("trades", strategy="mean-rev", since="2026-03-01", until="2026-03-02T12:00:00+02:00")
    assert req.since == datetime(2026, 3, 1, tzinfo=timezone.utc) and req.until == datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    sql, params = query(req)
    assert params == ("mean-rev", req.since, req.until) and "trade_outcomes" in sql and "$3" in sql
    perf = validate_export_args("performance", since="2026-03-01", period="week")
    sql, params = query(perf)
    assert params == (None, date(2026, 3, 1), None, "WEEK") and "strategy_performance" in sql


@pytest.mark.parametrize(
    "kind, kwargs, message",
    [
        ("orders", {}, "'orders' is not 'trades' or 'performance'"),
        ("trades", {"strategy": "has space"}, "--strategy"),
        ("trades", {"strategy": ""}, "--strategy"),
        ("trades", {"strategy": "x" * 51}, "--strategy"),
        ("trades", {"since": "yesterday"}, "--since: not an ISO 8601"),
        ("trades", {"until": "2026-13-01"}, "--until: not an ISO 8601"),
        ("trades", {"since": "2026-03-02", "until": "2026-03-01"}, "is not before --until"),
        ("trades", {"since": "2026-03-02", "until": "2026-03-02"}, "is not before --until"),
        ("trades", {"period": "DAY"}, "--period applies to 'performance' only"),
        ("performance", {"period": "YEAR"}, "not one of DAY, WEEK, MONTH"),
    ],
)
def test_bad_arguments_have_clear_messages(kind: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ExportArgumentError) as err:
        validate_export_args(kind, **kwargs)
    assert message in str(err.value)


def test_data_never_reaches_the_sql_text() -> None:
    hostile = "x';DROP"
    req = validate_export_args("performance", strategy=hostile)
    sql, params = query(req)
    assert hostile not in sql and params[0] == hostile
    assert all(f'"{c}"' in sql for c in PERFORMANCE_COLUMNS)
