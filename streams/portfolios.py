"""Portfolios from their positions, and the risk limits each one sets.

A portfolio's state is the latest row of each of its positions (``exec.positions.v1``),
so it is built from absolute figures only: a row applied again, or one older than the
pair's stored ``version``, changes nothing.

- ``cash`` = the portfolio's starting cash + the positions' ``cash_flow``;
  ``market_value`` = sum of ``market_value``; ``total_value`` = cash + market value;
  ``gross_exposure`` = sum of ``exposure``; ``net_exposure`` = market value;
  ``sector_exposure``: gross exposure by sector (``"unknown"`` without one);
  ``largest_position_*``: the symbol of largest exposure, and its signed market value.
- ``day_pnl``: the sum of the positions' ``day_pnl`` over those updated in the latest UTC
  day the portfolio has seen (a position not updated since has no P&L today).
- ``positions_count``: positions not flat.

Limits (``PortfolioLimits``, from ``TICKWIRE_PORTFOLIOS_FILE``), each checked after every
update; crossing one is a BREACH event, coming back within it a CLEARED event:

- ``max_position_value``: a position's exposure above it (subject: the symbol);
- ``max_gross_exposure``: gross exposure above it (subject: the portfolio);
- ``max_sector_share``: a sector's share of gross exposure above it (subject: the sector);
- ``max_pair_correlation``: two open positions whose symbols' correlation is above it in
  absolute value (subject: ``A/B``), from the correlation stage's latest snapshot of its
  first timeframe and longest window. The snapshot carries the pairs at or above
  ``TICKWIRE_CORRELATION_THRESHOLD`` only, so the limit may not be set below it (seed
  000's CorrelationConflict, for positions);
- ``margin`` false: cash below zero (rule ``negative_cash``). A fill is an execution that
  happened, so it is booked and the breach reported, not refused: its position and the
  broker's must agree.

Each update recomputes the portfolio from its positions, in symbol order: O(positions),
and the same figures whatever order the symbols' updates arrived in.

Performance (``portfolio_performance``), from the total values the portfolio took at its
updates, by UTC day. A day closes at the portfolio's first update of a later day (an
update of a closed day arriving after that counts to the new one); the DAY, WEEK (ISO,
from Monday) and MONTH rows holding it are computed at the first update after the
benchmark's close of that day is known (the symbols stage sends a day's last close when
the benchmark's next day begins, on a topic of its own, which a backlog may read behind
the positions; that close, when it comes, sends the rows its day made due for every
portfolio, whether or not it is updated again), or a whole day later while no benchmark close
has come at all, or once the benchmark has been silent ``BENCHMARK_STALE_DAYS``. In a
backlog whose fills run ahead of the benchmark's bars, a day may so go out without its
beta; the WEEK and MONTH rows are computed again with each later day, and then have it:

- a day's return ``r = close / previous close - 1`` (the portfolio's first day: against
  its first value); ``period_return = end_value / start_value - 1``, start_value the
  close before the period's first day (or that day's first value);
- ``volatility = stdev(r) * sqrt(252)`` (n - 1), ``sharpe_ratio = mean(r) / stdev(r) *
  sqrt(252)``, ``sortino_ratio = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(252)``, risk
  free rate 0; None below two days (a DAY row has none) or without deviation; the
  ratios clamped to +-9999.9999;
- ``max_drawdown``: the largest fall from a running peak of the values, as a fraction,
  the peak carried across the period's days (intraday peaks and troughs included);
- ``beta = cov(r, b) / var(b)`` over the days both the portfolio and the benchmark
  closed, b the benchmark's daily return (``TICKWIRE_CORRELATION_BENCHMARK``'s closes,
  from ``tickwire.portfolio_context.v1``); ``benchmark_return`` over the period; None
  below two common days.

A portfolio keeps its last ``PERFORMANCE_DAYS`` days (a month and the close before it).
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import date, timedelta
from pathlib import Path
from typing import Mapping, NamedTuple

import msgspec

from tickwire.schemas.execution import PortfolioPerformanceRow, PortfolioRow, PositionRow, RiskEvent
from tickwire.schemas.market import DAY_US, closing_day, epoch_us, from_epoch_us
from tickwire.schemas.signals import PERIOD_TYPES
from tickwire.streams.performance import clamp_ratio, period_start

_EPOCH_DAY = date(1970, 1, 1)
PERFORMANCE_DAYS = 32
BENCHMARK_STALE_DAYS = 5
TRADING_DAYS_PER_YEAR = 252


class PortfolioLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cash: float = 100_000.0
    margin: bool = True
    max_position_value: float | None = None
    max_gross_exposure: float | None = None
    max_sector_share: float | None = None
    max_pair_correlation: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.cash):
            raise ValueError("cash must be finite")
        if self.max_pair_correlation is not None and not 0 < self.max_pair_correlation <= 1:
            raise ValueError("max_pair_correlation must be in (0, 1]")
        for name in ("max_position_value", "max_gross_exposure", "max_sector_share"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number")


class Portfolios(NamedTuple):
    """Which portfolios may trade, and their limits: ``listed`` by id, ``others`` for the
    rest (None: a portfolio not listed is refused)."""

    listed: dict[str, PortfolioLimits]
    others: PortfolioLimits | None

    def limits(self, portfolio_id: str) -> PortfolioLimits | None:
        return self.listed.get(portfolio_id, self.others)


def load_portfolios(path: str | Path, default_cash: float, correlation_threshold: float = 0.0) -> Portfolios:
    """``{"<portfolio id>": {limits}, "*": {limits of any other}}``; without a file, every
    portfolio trades, with ``default_cash`` and no limits. Raises ``ValueError`` naming the problem."""
    if not path:
        return Portfolios({}, PortfolioLimits(cash=default_cash))
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object of portfolio ids")
    parsed = {}
    for portfolio_id, limits in raw.items():
        try:
            parsed[portfolio_id] = msgspec.convert({"cash": default_cash, **limits}, PortfolioLimits)
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: portfolio {portfolio_id!r}: {exc}") from None
        pair_limit = parsed[portfolio_id].max_pair_correlation
        if pair_limit is not None and pair_limit < correlation_threshold:
            raise ValueError(
                f"{path}: portfolio {portfolio_id!r}: max_pair_correlation {pair_limit} is below TICKWIRE_CORRELATION_THRESHOLD"
                f" ({correlation_threshold}): pairs below the threshold are not published"
            )
    others = parsed.pop("*", None)
    return Portfolios(parsed, others)


class Held(msgspec.Struct, array_like=True):
    """A position's latest row, as far as its portfolio needs it."""

    version: int
    quantity: int
    market_value: float
    exposure: float
    realized_pnl: float
    unrealized_pnl: float
    cash_flow: float
    day: int
    day_pnl: float
    sector: str | None


class Day(msgspec.Struct, array_like=True):
    """A UTC day of a portfolio's total value (or of the benchmark's close)."""

    day: int  # days since 1970-01-01
    first: float
    close: float
    peak: float  # highest value since the day began
    drawdown: float  # largest fall from ``peak`` within the day, a fraction


class PortfolioState(msgspec.Struct):
    positions: dict[str, Held] = {}
    latest_us: int = 0
    version: int = 0
    breaches: list[tuple[str, str]] = []  # (rule, subject) in breach
    days: list[Day] = []  # the last PERFORMANCE_DAYS days of total value, oldest first
    reported_day: int = 0  # the last closed day whose performance rows went out
    # Only in the record of a partition's context key: the benchmark's closes by day, and
    # the latest snapshot's correlated pairs ("A/B", A < B, -> value).
    benchmark: dict[int, float] = {}
    benchmark_us: int = 0
    pairs: dict[str, float] = {}
    pairs_us: int = 0


class PortfolioChange(NamedTuple):
    portfolio: PortfolioRow | None  # None: a row the portfolio holds already
    risks: list[RiskEvent]
    performance: list[PortfolioPerformanceRow]


class PortfolioBook:
    """The rules in the module docstring; the caller keeps one ``PortfolioState`` per portfolio."""

    def on_position(
        self, state: PortfolioState, row: PositionRow, limits: PortfolioLimits, context: PortfolioState | None = None,
    ) -> PortfolioChange:
        """The portfolio after ``row``, the risk events it caused, and the performance rows of
        a day it closed (``context``: the partition's benchmark closes and correlated pairs)."""
        context = context or PortfolioState()
        held = state.positions.get(row.symbol)
        if held is not None and held.version >= row.version:
            return PortfolioChange(None, [], [])
        ts_us = epoch_us(row.ts)
        state.positions[row.symbol] = Held(
            row.version, row.quantity, row.market_value, row.exposure, row.realized_pnl, row.unrealized_pnl,
            row.cash_flow, ts_us // DAY_US, row.day_pnl, row.sector,
        )
        state.latest_us = max(state.latest_us, ts_us)
        state.version += 1
        portfolio = self.row(state, row.portfolio_id, limits)
        self._track(state, portfolio.total_value)
        risks = self._risk(state, portfolio, limits, context.pairs)
        return PortfolioChange(portfolio, risks, self.closed_days(state, row.portfolio_id, context.benchmark))

    @staticmethod
    def closed_days(state: PortfolioState, portfolio_id: str, benchmark: Mapping[int, float]) -> list[PortfolioPerformanceRow]:
        """The rows of each closed day not reported yet: once the benchmark's close of that
        day has come (only a day's last close is sent), or, without any benchmark close,
        after a whole day's wait, or once the benchmark has been silent for
        ``BENCHMARK_STALE_DAYS``."""
        rows: list[PortfolioPerformanceRow] = []
        today, latest = state.days[-1].day, max(benchmark, default=None)
        for n, day in enumerate(state.days[:-1]):
            if day.day <= state.reported_day:
                continue
            if latest is None:
                due = today >= day.day + 2  # no benchmark (yet): a whole day's wait
            else:
                due = latest >= day.day or latest < today - BENCHMARK_STALE_DAYS
            if not due:
                break
            rows += performance_rows(portfolio_id, state.days[: n + 1], benchmark)
            state.reported_day = day.day
        return rows

    @staticmethod
    def on_benchmark(state: PortfolioState, close_us: int, close: float) -> None:
        """The benchmark's last bar of a day closed at ``close_us``: that day's close."""
        day = closing_day(close_us)
        if close_us >= state.benchmark_us:
            state.benchmark_us = close_us
            state.benchmark[day] = close
            for old in [d for d in state.benchmark if d <= day - PERFORMANCE_DAYS]:
                del state.benchmark[old]

    @staticmethod
    def on_pairs(state: PortfolioState, timestamp_us: int, pairs: list[tuple[str, str, float]]) -> None:
        """A correlation snapshot's pairs replace the last, unless they are older."""
        if timestamp_us >= state.pairs_us:
            state.pairs_us = timestamp_us
            state.pairs = {pair_key(a, b): value for a, b, value in pairs}

    @staticmethod
    def _track(state: PortfolioState, value: float) -> None:
        """Add ``value`` to its day."""
        today = state.latest_us // DAY_US
        days = state.days
        if days and days[-1].day >= today:
            last = days[-1]
            last.close = value
            last.peak = max(last.peak, value)
            if last.peak > 0:
                last.drawdown = max(last.drawdown, (last.peak - value) / last.peak)
            return
        days.append(Day(today, value, value, value, 0.0))
        del days[:-PERFORMANCE_DAYS - 1]

    def row(self, state: PortfolioState, portfolio_id: str, limits: PortfolioLimits) -> PortfolioRow:
        today = state.latest_us // DAY_US
        market_value = gross = realized = unrealized = cash_flow = day_pnl = 0.0
        sectors: dict[str, float] = {}
        largest: tuple[float, str, float] | None = None
        count = 0
        for symbol in sorted(state.positions):
            held = state.positions[symbol]
            market_value += held.market_value
            gross += held.exposure
            realized += held.realized_pnl
            unrealized += held.unrealized_pnl
            cash_flow += held.cash_flow
            if held.day == today:
                day_pnl += held.day_pnl
            if held.quantity:
                count += 1
                sector = held.sector or "unknown"
                sectors[sector] = sectors.get(sector, 0.0) + held.exposure
                if largest is None or held.exposure > largest[0]:
                    largest = (held.exposure, symbol, held.market_value)
        cash = limits.cash + cash_flow
        return PortfolioRow(
            portfolio_id=portfolio_id, ts=from_epoch_us(state.latest_us),
            cash=cash, market_value=market_value, total_value=cash + market_value, gross_exposure=gross,
            net_exposure=market_value, realized_pnl=realized, unrealized_pnl=unrealized, day_pnl=day_pnl,
            positions_count=count, largest_position_symbol=largest[1] if largest else None,
            largest_position_value=largest[2] if largest else None, sector_exposure=sectors, version=state.version,
        )

    @staticmethod
    def _risk(state: PortfolioState, portfolio: PortfolioRow, limits: PortfolioLimits, pairs: Mapping[str, float]) -> list[RiskEvent]:
        observed: dict[tuple[str, str], tuple[float, float]] = {}  # (rule, subject) -> (observed, limit)
        if limits.max_pair_correlation is not None and pairs:
            held = sorted(symbol for symbol, h in state.positions.items() if h.quantity)
            # The smaller side: the held pairs, or the correlated ones.
            candidates = ((pair_key(a, b) for i, a in enumerate(held) for b in held[i + 1:])
                          if len(held) * (len(held) - 1) // 2 <= len(pairs) else
                          (key for key in pairs if set(key.split("/", 1)) <= set(held)))
            for key in candidates:
                value = pairs.get(key)
                if value is not None and abs(value) > limits.max_pair_correlation:
                    observed["max_pair_correlation", key] = (value, limits.max_pair_correlation)
        if limits.max_position_value is not None:
            for symbol, held in state.positions.items():
                if held.exposure > limits.max_position_value:
                    observed["max_position_value", symbol] = (held.exposure, limits.max_position_value)
        if limits.max_gross_exposure is not None and portfolio.gross_exposure > limits.max_gross_exposure:
            observed["max_gross_exposure", portfolio.portfolio_id] = (portfolio.gross_exposure, limits.max_gross_exposure)
        if limits.max_sector_share is not None and portfolio.gross_exposure > 0:
            for sector, exposure in portfolio.sector_exposure.items():
                share = exposure / portfolio.gross_exposure
                if share > limits.max_sector_share:
                    observed["max_sector_share", sector] = (share, limits.max_sector_share)
        if not limits.margin and portfolio.cash < 0:
            observed["negative_cash", portfolio.portfolio_id] = (portfolio.cash, 0.0)
        before = set(state.breaches)
        events = [
            RiskEvent(portfolio_id=portfolio.portfolio_id, ts=portfolio.ts, rule=rule, subject=subject, state="BREACH",
                      observed=value, limit_value=limit)
            for (rule, subject), (value, limit) in sorted(observed.items()) if (rule, subject) not in before
        ]
        events += [
            RiskEvent(portfolio_id=portfolio.portfolio_id, ts=portfolio.ts, rule=rule, subject=subject, state="CLEARED",
                      observed=_now(rule, subject, state, portfolio, pairs), limit_value=_limit(rule, limits))
            for rule, subject in sorted(before - observed.keys())
        ]
        state.breaches = sorted(observed)
        return events


def pair_key(a: str, b: str) -> str:
    return f"{a}/{b}" if a < b else f"{b}/{a}"


def _now(rule: str, subject: str, state: PortfolioState, portfolio: PortfolioRow, pairs: Mapping[str, float]) -> float:
    """What a rule measures now (for a CLEARED event; a pair below the published threshold: 0)."""
    if rule == "max_pair_correlation":
        return pairs.get(subject, 0.0)
    if rule == "max_position_value":
        held = state.positions.get(subject)
        return held.exposure if held else 0.0
    if rule == "max_gross_exposure":
        return portfolio.gross_exposure
    if rule == "max_sector_share":
        gross = portfolio.gross_exposure
        return portfolio.sector_exposure.get(subject, 0.0) / gross if gross else 0.0
    return portfolio.cash


def _limit(rule: str, limits: PortfolioLimits) -> float:
    return 0.0 if rule == "negative_cash" else getattr(limits, rule)


def performance_rows(portfolio_id: str, days: list[Day], benchmark: Mapping[int, float]) -> list[PortfolioPerformanceRow]:
    """The DAY, WEEK and MONTH rows of the last of ``days`` (closed days, oldest first)."""
    closed = _EPOCH_DAY + timedelta(days=days[-1].day)
    rows = []
    for period_type in PERIOD_TYPES:
        start = period_start(closed, period_type)
        first = next(i for i, d in enumerate(days) if _EPOCH_DAY + timedelta(days=d.day) >= start)
        rows.append(_period(portfolio_id, period_type, start, closed, days, first, benchmark))
    return rows


def _period(portfolio_id: str, period_type: str, start: date, end: date, days: list[Day], first: int,
            benchmark: Mapping[int, float]) -> PortfolioPerformanceRow:
    inside = days[first:]
    before = [days[first - 1].close if first else inside[0].first] + [d.close for d in inside[:-1]]
    returns = [d.close / b - 1 if b else 0.0 for d, b in zip(inside, before)]
    start_value = before[0]
    peak, drawdown = start_value, 0.0
    for d in inside:
        drawdown = max(drawdown, d.drawdown, (peak - d.first) / peak if peak > 0 else 0.0)
        peak = max(peak, d.peak)
        drawdown = max(drawdown, (peak - d.close) / peak if peak > 0 else 0.0)
    volatility = sharpe = sortino = None
    if period_type != "DAY" and len(returns) >= 2:
        deviation = statistics.stdev(returns)
        mean = statistics.fmean(returns)
        annual = math.sqrt(TRADING_DAYS_PER_YEAR)
        volatility = deviation * annual
        if deviation > 1e-12:
            sharpe = clamp_ratio(mean / deviation * annual)
        downside = math.sqrt(statistics.fmean(min(r, 0.0) ** 2 for r in returns))
        if downside > 1e-12:
            sortino = clamp_ratio(mean / downside * annual)
    pairs, bench_return = [], None
    marks = sorted(d for d in benchmark if d <= inside[-1].day)
    previous = {later: earlier for earlier, later in zip(marks, marks[1:])}
    for d, r in zip(inside, returns):
        if d.day in previous:
            pairs.append((r, benchmark[d.day] / benchmark[previous[d.day]] - 1))
    if pairs:
        bench_return = math.prod(1 + b for _, b in pairs) - 1
    beta = None
    if period_type != "DAY" and len(pairs) >= 2:
        variance = statistics.variance([b for _, b in pairs])
        if variance > 1e-18:
            beta = statistics.covariance([r for r, _ in pairs], [b for _, b in pairs]) / variance
    return PortfolioPerformanceRow(
        portfolio_id=portfolio_id, period_type=period_type, period_start=start, period_end=end, trading_days=len(inside),
        start_value=start_value, end_value=inside[-1].close,
        period_return=inside[-1].close / start_value - 1 if start_value else 0.0, volatility=volatility,
        sharpe_ratio=sharpe, sortino_ratio=sortino, max_drawdown=drawdown, beta=beta, benchmark_return=bench_return,
    )
