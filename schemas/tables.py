"""Table contracts: which Struct fills which table, its natural key and its conflict rule.

The columns a sink writes are the Struct's fields, in order; their staging types are
derived from the field types so the message and the row cannot drift apart.
"""

from __future__ import annotations

import types
from datetime import date, datetime
from typing import Literal, NamedTuple, Union, get_args, get_origin

import msgspec

from schemas.market import Condition, RegimeChange
from schemas.topics import CONDITIONS, REGIMES

_STAGING_TYPES = {float: "float8", int: "int8", str: "text", bool: "bool", datetime: "timestamptz", date: "date", dict: "jsonb"}


class Table(NamedTuple):
    name: str
    record: type[msgspec.Struct]
    key: tuple[str, ...]
    on_conflict: Literal["nothing", "update"]
    time_column: str | None = None  # the event time, for the latency metric

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in msgspec.structs.fields(self.record))

    @property
    def staging_types(self) -> tuple[str, ...]:
        return tuple(_staging_type(f.type) for f in msgspec.structs.fields(self.record))


def _staging_type(annotation: object) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    base = get_origin(annotation) or annotation
    return _STAGING_TYPES[base]


MARKET_CONDITIONS = Table("market_conditions", Condition, ("symbol", "timeframe", "timestamp"), "nothing", "timestamp")

MARKET_REGIME_HISTORY = Table(
    "market_regime_history", RegimeChange, ("symbol", "timeframe", "timestamp"), "nothing", "timestamp"
)

ALL = (MARKET_CONDITIONS, MARKET_REGIME_HISTORY)

# Which topic fills which table: one sink pipeline (and consumer group) per pair.
SINKS = ((CONDITIONS, MARKET_CONDITIONS), (REGIMES, MARKET_REGIME_HISTORY))
