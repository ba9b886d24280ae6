"""Correlation records (``md.correlations.v1``), one flat Struct per table row.

Field names are the column names of migration 0005 (``id`` and ``created_at`` are filled
by the database). The topic carries a tagged union: the tag (``record``) is not a field,
so a sink routes each message to its table by type and derives the columns from the
Struct as for any other table. Correlations are ``None`` when the pair has fewer common
returns than the configured minimum or a constant series; ``timestamp`` is the close of
the bars the snapshot covers (UTC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Union

import msgspec

_ROW = {"frozen": True, "kw_only": True, "omit_defaults": False, "tag_field": "record"}


class CorrelationMatrix(msgspec.Struct, tag="matrix", **_ROW):
    """One snapshot of one window: counts and summary statistics of its pairs' values."""

    timeframe: str
    window_bars: int
    timestamp: datetime
    symbol_count: int
    pair_count: int  # pairs with a value
    mean_correlation: float | None = None
    median_correlation: float | None = None
    stddev_correlation: float | None = None  # population
    min_correlation: float | None = None
    max_correlation: float | None = None
    mean_abs_correlation: float | None = None
    threshold: float | None = None
    pairs_above_threshold: int | None = None


class CorrelationEntry(msgspec.Struct, tag="entry", **_ROW):
    """One pair of one snapshot; ``symbol_a < symbol_b`` in Python string order."""

    timeframe: str
    window_bars: int
    timestamp: datetime
    symbol_a: str
    symbol_b: str
    value: float | None
    common_bars: int  # returns both symbols have in the window


class CorrelationGroup(msgspec.Struct, tag="group", **_ROW):
    """A connected component (two or more symbols) of the graph ``|corr| >= threshold``."""

    timeframe: str
    window_bars: int
    timestamp: datetime
    group_no: int
    threshold: float
    member_count: int
    mean_abs_correlation: float | None = None  # over all pairs of the group
    min_abs_correlation: float | None = None


class CorrelationGroupMember(msgspec.Struct, tag="group_member", **_ROW):
    timeframe: str
    window_bars: int
    timestamp: datetime
    group_no: int
    symbol: str
    mean_abs_correlation: float | None = None  # to the other members


class CorrelationConflict(msgspec.Struct, tag="conflict", **_ROW):
    """A pair's ``|corr|`` crossing the threshold between two snapshots.

    ``previous_value`` is the value at the previous snapshot for a ``below`` crossing and
    ``None`` for ``above`` (only pairs above the threshold are remembered); ``value`` is
    ``None`` when the pair lost its value (a symbol went quiet, too few common returns).
    """

    timeframe: str
    window_bars: int
    timestamp: datetime
    symbol_a: str
    symbol_b: str
    crossing: str  # "above" | "below"
    threshold: float
    value: float | None = None
    previous_value: float | None = None


CorrelationRecord = Union[CorrelationMatrix, CorrelationEntry, CorrelationGroup, CorrelationGroupMember, CorrelationConflict]
