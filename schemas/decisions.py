"""The trading system's decisions: position sizing (``exec.sizing.v1``) and smart exits
(``exec.exits.v1``), both keyed by symbol, and the rows the worker derives from them by
joining each decision with the trade it led to (``exec.decision_history.v1``):
``position_sizing_history``, ``position_sizing_config_history``, ``smart_exit_history``
and ``partial_exit_history``.

Sizing configuration changes travel on ``exec.sizing.v1`` with the decisions, as a
tagged union (``"kind": "decision"`` or ``"config"``): one partition then holds a
symbol's configurations and decisions in their order, so each decision is joined with
the configuration in effect when it was made. A change for many symbols is one message
per symbol, with the same ``config_id``.

``streams.decisions`` holds the rules and formulas; here are the messages, their bounds
and the rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import MAX_PRICE, MIN_PRICE, Symbol, UtcDatetime, check_timestamp
from tickwire.schemas.signals import MAX_MONEY, PortfolioId, StrategyId

EXIT_REASONS = ("target", "trailing_stop", "time", "regime_change", "correlation_conflict")
SIZING_METHODS = ("fixed_fractional", "volatility_target", "kelly", "fixed_quantity")
# Multipliers of the base size a correlation or a regime may apply: above 10 is a unit mistake.
MAX_ADJUSTMENT = 10.0
MAX_VOLATILITY = 1e4  # DECIMAL(10, 6), as model_predictions.predicted_volatility

_IN = {"frozen": True, "kw_only": True, "forbid_unknown_fields": True}


def _within(name: str, value: float | None, low: float, high: float, *, low_open: bool = False, high_closed: bool = False) -> None:
    """``value`` in the interval, its ends open or closed as said; NaN fails too."""
    if value is None:
        return
    above = low < value if low_open else low <= value
    below = value <= high if high_closed else value < high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if high_closed else ')'}"
        raise InvalidMessage("invalid_value", f"{name} {value} is not in {interval}")


class SizingDecision(msgspec.Struct, tag="decision", tag_field="kind", **_IN):
    """One sizing decision: the inputs and the quantity they gave. ``risk_per_trade`` is a
    fraction of ``account_value``; ``stop_distance`` is in price units; the adjustments
    are multipliers (1 = none). ``trade_id`` names the trade the decision opened, when it
    led to one; a quantity of 0 is a decision not to trade."""

    decision_id: uuid.UUID
    portfolio_id: PortfolioId = "default"
    strategy_id: StrategyId
    symbol: Symbol
    trade_id: uuid.UUID | None = None
    ts: UtcDatetime
    account_value: float
    risk_per_trade: float
    stop_distance: float
    volatility: float | None = None
    correlation_adjustment: float = 1.0
    regime_adjustment: float = 1.0
    quantity: int

    def validate(self, *, now: datetime, max_future_skew_s: float) -> "SizingDecision":
        check_timestamp(self.ts, now=now, max_future_skew_s=max_future_skew_s)
        _within("account_value", self.account_value, 0.0, MAX_MONEY, low_open=True)
        _within("risk_per_trade", self.risk_per_trade, 0.0, 1.0, low_open=True, high_closed=True)
        _within("stop_distance", self.stop_distance, MIN_PRICE, MAX_PRICE)
        _within("volatility", self.volatility, 0.0, MAX_VOLATILITY)
        _within("correlation_adjustment", self.correlation_adjustment, 0.0, MAX_ADJUSTMENT)
        _within("regime_adjustment", self.regime_adjustment, 0.0, MAX_ADJUSTMENT)
        if not 0 <= self.quantity < 2**31:
            raise InvalidMessage("invalid_value", f"quantity {self.quantity} is not a 32-bit integer >= 0")
        return self


class SizingConfig(msgspec.Struct, tag="config", tag_field="kind", **_IN):
    """One sizing configuration change of a (portfolio, strategy) for ``symbol``, in effect
    from ``ts`` until the next one."""

    config_id: uuid.UUID
    portfolio_id: PortfolioId = "default"
    strategy_id: StrategyId
    symbol: Symbol
    ts: UtcDatetime
    method: str
    risk_per_trade: float
    max_position_fraction: float | None = None  # of account value
    volatility_target: float | None = None
    correlation_scaling: bool = False
    regime_scaling: bool = False

    def validate(self, *, now: datetime, max_future_skew_s: float) -> "SizingConfig":
        check_timestamp(self.ts, now=now, max_future_skew_s=max_future_skew_s)
        if self.method not in SIZING_METHODS:
            raise InvalidMessage("invalid_value", f"method {self.method[:20]!r} is not one of {', '.join(SIZING_METHODS)}")
        _within("risk_per_trade", self.risk_per_trade, 0.0, 1.0, low_open=True, high_closed=True)
        _within("max_position_fraction", self.max_position_fraction, 0.0, 1.0, low_open=True, high_closed=True)
        _within("volatility_target", self.volatility_target, 0.0, MAX_VOLATILITY, low_open=True)
        return self


SizingMessage = SizingDecision | SizingConfig


class ExitDecision(msgspec.Struct, **_IN):
    """One exit decision of an open trade: why, at what price and for how much of it
    (``partial``: the trade stays open for the rest)."""

    exit_id: uuid.UUID
    trade_id: uuid.UUID
    strategy_id: StrategyId
    symbol: Symbol
    ts: UtcDatetime
    reason: str
    price: float
    quantity: int
    partial: bool = False

    def validate(self, *, now: datetime, max_future_skew_s: float) -> "ExitDecision":
        check_timestamp(self.ts, now=now, max_future_skew_s=max_future_skew_s)
        if self.reason not in EXIT_REASONS:
            raise InvalidMessage("invalid_value", f"reason {self.reason[:20]!r} is not one of {', '.join(EXIT_REASONS)}")
        _within("price", self.price, MIN_PRICE, MAX_PRICE)
        if not 0 < self.quantity < 2**31:
            raise InvalidMessage("invalid_value", f"quantity {self.quantity} is not a positive 32-bit integer")
        return self


_ROW = {"kw_only": True, "omit_defaults": False, "tag_field": "record"}


class PositionSizingRow(msgspec.Struct, tag="decision", **_ROW):
    """A ``position_sizing_history`` row: the decision, the configuration in effect, and
    once its trade has closed, planned against realised risk. ``version`` counts the
    row's changes: a stored row is replaced only by a later one."""

    decision_id: uuid.UUID
    portfolio_id: str
    strategy_id: str
    symbol: str
    trade_id: uuid.UUID | None
    ts: datetime
    account_value: float
    risk_per_trade: float
    stop_distance: float
    volatility: float | None
    correlation_adjustment: float
    regime_adjustment: float
    quantity: int
    config_id: uuid.UUID | None
    planned_risk: float
    trade_quantity: int | None = None
    trade_closed_at: datetime | None = None
    max_adverse_excursion: float | None = None
    realized_pnl: float | None = None
    realized_loss: float | None = None
    mae_to_planned: float | None = None
    loss_to_planned: float | None = None
    version: int = 1


class SizingConfigRow(msgspec.Struct, tag="config", **_ROW):
    """A ``position_sizing_config_history`` row: one configuration change, append-only."""

    config_id: uuid.UUID
    portfolio_id: str
    strategy_id: str
    symbol: str
    ts: datetime
    method: str
    risk_per_trade: float
    max_position_fraction: float | None
    volatility_target: float | None
    correlation_scaling: bool
    regime_scaling: bool


class SmartExitRow(msgspec.Struct, tag="exit", **_ROW):
    """A ``smart_exit_history`` row: the exit decision and, once its trade has closed, how
    much of what the trade offered it took (``streams.decisions`` has the formulas)."""

    exit_id: uuid.UUID
    trade_id: uuid.UUID
    strategy_id: str
    symbol: str
    ts: datetime
    reason: str
    price: float
    quantity: int
    partial: bool
    direction: str | None = None
    entry_price: float | None = None
    trade_closed_at: datetime | None = None
    exit_pnl: float | None = None
    trade_pnl: float | None = None
    max_favorable_excursion: float | None = None
    exit_efficiency: float | None = None
    trade_efficiency: float | None = None
    version: int = 1


class PartialExitRow(msgspec.Struct, tag="partial", **_ROW):
    """A ``partial_exit_history`` row: a partial exit and, once its trade has closed, what
    the rest of the position did afterwards against exiting it all at the partial's price."""

    exit_id: uuid.UUID
    trade_id: uuid.UUID
    strategy_id: str
    symbol: str
    ts: datetime
    reason: str
    price: float
    quantity: int
    trade_closed_at: datetime | None = None
    remaining_quantity: int | None = None
    remainder_exit_price: float | None = None
    remainder_pnl: float | None = None
    remainder_pnl_at_partial: float | None = None
    remainder_gain: float | None = None
    version: int = 1


DecisionRecord = PositionSizingRow | SizingConfigRow | SmartExitRow | PartialExitRow
