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
- ``margin`` false: cash below zero (rule ``negative_cash``). A fill is an execution that
  happened, so it is booked and the breach reported, not refused: its position and the
  broker's must agree.

Each update recomputes the portfolio from its positions, in symbol order: O(positions),
and the same figures whatever order the symbols' updates arrived in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import msgspec

from tickwire.schemas.execution import PortfolioRow, PositionRow, RiskEvent
from tickwire.schemas.market import epoch_us, from_epoch_us

_DAY_US = 86_400_000_000


class PortfolioLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cash: float = 100_000.0
    margin: bool = True
    max_position_value: float | None = None
    max_gross_exposure: float | None = None
    max_sector_share: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.cash):
            raise ValueError("cash must be finite")
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


def load_portfolios(path: str | Path, default_cash: float) -> Portfolios:
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


class PortfolioState(msgspec.Struct):
    positions: dict[str, Held] = {}
    latest_us: int = 0
    version: int = 0
    breaches: list[tuple[str, str]] = []  # (rule, subject) in breach


class PortfolioBook:
    """The rules in the module docstring; the caller keeps one ``PortfolioState`` per portfolio."""

    def on_position(self, state: PortfolioState, row: PositionRow, limits: PortfolioLimits) -> tuple[PortfolioRow | None, list[RiskEvent]]:
        """The portfolio after ``row`` and the risk events it caused; (None, []) for a row
        it already holds."""
        held = state.positions.get(row.symbol)
        if held is not None and held.version >= row.version:
            return None, []
        ts_us = epoch_us(row.ts)
        state.positions[row.symbol] = Held(
            row.version, row.quantity, row.market_value, row.exposure, row.realized_pnl, row.unrealized_pnl,
            row.cash_flow, ts_us // _DAY_US, row.day_pnl, row.sector,
        )
        state.latest_us = max(state.latest_us, ts_us)
        state.version += 1
        portfolio = self.row(state, row.portfolio_id, limits)
        return portfolio, self._risk(state, portfolio, limits)

    def row(self, state: PortfolioState, portfolio_id: str, limits: PortfolioLimits) -> PortfolioRow:
        today = state.latest_us // _DAY_US
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
    def _risk(state: PortfolioState, portfolio: PortfolioRow, limits: PortfolioLimits) -> list[RiskEvent]:
        observed: dict[tuple[str, str], tuple[float, float]] = {}  # (rule, subject) -> (observed, limit)
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
                      observed=_now(rule, subject, state, portfolio), limit_value=_limit(rule, limits))
            for rule, subject in sorted(before - observed.keys())
        ]
        state.breaches = sorted(observed)
        return events


def _now(rule: str, subject: str, state: PortfolioState, portfolio: PortfolioRow) -> float:
    """What a rule measures now (for a CLEARED event)."""
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
