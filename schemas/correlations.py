"""Correlation records (``md.correlations.v1``), one flat Struct per table row.

Field names are the column names of migrations 0005 and 0013 (``id`` and ``created_at``
are filled by the database). The topic carries a tagged union: the tag (``record``) is not a field,
so a sink routes each message to its table by type and derives the columns from the
Struct as for any other table. Correlations are ``None`` when the pair has fewer common
returns than the configured minimum or a constant series; ``timestamp`` is the close of
the bars the snapshot covers (UTC).
"""

from __future__ import annotations

from datetime import date, datetime
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


class CorrelationHistory(msgspec.Struct, tag="history", **_ROW):
    """A pair's value at a UTC day's close (its last bar of the day), one row per window."""

    timeframe: str
    window_bars: int
    day: date
    timestamp: datetime  # the day's last bar
    symbol_a: str
    symbol_b: str
    value: float | None
    common_bars: int


class CorrelationThreshold(msgspec.Struct, tag="threshold", **_ROW):
    """The group and conflict threshold of a timeframe from ``timestamp`` on (a change, or
    the first in force); ``regime`` is the benchmark's regime that chose it (``None``: none
    known yet, the single ``correlation_threshold``)."""

    timeframe: str
    timestamp: datetime
    regime: str | None
    threshold: float
    previous_threshold: float | None = None


class CorrelationAnalysis(msgspec.Struct, tag="analysis", **_ROW):
    """One snapshot of one window, as a user reads it. The most correlated pair has the
    highest value, the least correlated the lowest (signed; ties: the first pair in name
    order); ``None`` without a pair with a value."""

    timeframe: str
    window_bars: int
    timestamp: datetime
    symbol_count: int
    pair_count: int  # pairs with a value
    group_count: int
    threshold: float
    regime: str | None
    mean_correlation: float | None = None
    stddev_correlation: float | None = None  # population
    most_correlated_a: str | None = None
    most_correlated_b: str | None = None
    most_correlated_value: float | None = None
    least_correlated_a: str | None = None
    least_correlated_b: str | None = None
    least_correlated_value: float | None = None


CorrelationRecord = Union[
    CorrelationMatrix, CorrelationEntry, CorrelationGroup, CorrelationGroupMember, CorrelationConflict,
    CorrelationHistory, CorrelationThreshold, CorrelationAnalysis,
]
