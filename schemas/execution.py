"""The live execution stream: order events (``exec.orders.v1``, in) and what the worker
derives from them and from fills and bars: order states (``exec.order_updates.v1``:
``orders`` and ``order_events``), positions (``exec.positions.v1``: ``positions`` and
``position_snapshots``), portfolios (``exec.portfolios.v1``: ``portfolios`` and
``portfolio_snapshots``), portfolio performance by day, week and month
(``exec.portfolio_performance.v1``: ``portfolio_performance``), risk events (``exec.risk_events.v1``: ``risk_events``) and
the audit trail (``exec.audit.v1``: ``execution_audit``).

``streams.orders``, ``streams.positions`` and ``streams.portfolios`` hold the rules;
here are the messages, their bounds and the rows. A row Struct names the columns of its
table; it accepts unknown fields, so one message fills two tables (a current-state table
and its history).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import MAX_PRICE, MIN_PRICE, Symbol, UtcDatetime, check_timestamp
from tickwire.schemas.signals import SIDES, OrderId, PortfolioId, StrategyId

# What an order message says happened. Fills (``exec.fills.v1`` with ``order_id``) move an
# order to PARTIALLY_FILLED and FILLED; these events come from the order management system.
ORDER_EVENTS = ("PLACED", "AMENDED", "CANCELLED", "REJECTED", "EXPIRED")
ORDER_TYPES = ("MARKET", "LIMIT", "STOP", "STOP_LIMIT")
TIME_IN_FORCE = ("DAY", "GTC", "IOC", "FOK")
OPEN_STATUSES = ("OPEN", "PARTIALLY_FILLED")
# orders.quantity and positions.quantity are BIGINT, but a position summed from orders of
# up to 2^31 - 1 units each must stay exact in float64 money arithmetic: 2^53 units at most.
MAX_POSITION_UNITS = 2**53


class Order(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One order event, keyed by symbol; ``ts`` is its event time (UTC).

    PLACED gives the whole order; AMENDED gives its new quantity and prices (the rest must
    repeat the order's); CANCELLED, REJECTED and EXPIRED end it (``reason`` optional).
    ``arrival_price`` is the market price when the order was decided, against which a
    market order's slippage is measured (limit and stop orders use their price).
    """

    order_id: OrderId
    portfolio_id: PortfolioId
    strategy_id: StrategyId
    symbol: Symbol
    event: str
    ts: UtcDatetime
    side: str
    order_type: str = "MARKET"
    quantity: int
    limit_price: float | None = None
    stop_price: float | None = None
    arrival_price: float | None = None
    time_in_force: str = "DAY"
    reason: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*\Z")] | None = None

    def validate(self, *, now: datetime, max_future_skew_s: float) -> "Order":
        check_timestamp(self.ts, now=now, max_future_skew_s=max_future_skew_s)
        for name, allowed in (("event", ORDER_EVENTS), ("side", SIDES), ("order_type", ORDER_TYPES), ("time_in_force", TIME_IN_FORCE)):
            if getattr(self, name) not in allowed:
                raise InvalidMessage("invalid_value", f"{name} {getattr(self, name)[:20]!r} is not one of {', '.join(allowed)}")
        if not 0 < self.quantity < 2**31:
            raise InvalidMessage("invalid_value", f"quantity {self.quantity} is not a positive 32-bit integer")
        for name in ("limit_price", "stop_price", "arrival_price"):
            value = getattr(self, name)
            if value is not None and not MIN_PRICE <= value < MAX_PRICE:  # NaN fails too
                raise InvalidMessage("invalid_value", f"{name} {value} is not in [{MIN_PRICE:g}, {MAX_PRICE:g})")
        needs = {"LIMIT": ("limit_price",), "STOP": ("stop_price",), "STOP_LIMIT": ("limit_price", "stop_price")}
        for name in needs.get(self.order_type, ()):
            if getattr(self, name) is None:
                raise InvalidMessage("invalid_value", f"a {self.order_type} order needs {name}")
        return self


class OrderRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """An ``orders`` row: the order's current state, joined with its fills.

    ``fill_ratio`` = filled / quantity; ``slippage`` per unit against the order's reference
    price (limit, else stop, else arrival), adverse positive (BUY: fill - reference, SELL:
    reference - fill), None without a reference or a fill; ``time_to_fill_ms`` from
    placement to the fill that completed it.
    """

    order_id: str
    portfolio_id: str
    strategy_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    quantity: int
    limit_price: float | None
    stop_price: float | None
    status: str
    filled_quantity: int
    avg_fill_price: float | None
    fill_ratio: float
    slippage: float | None
    placed_at: datetime
    updated_at: datetime
    first_fill_at: datetime | None
    completed_at: datetime | None
    time_to_fill_ms: int | None
    reason: str | None
    version: int  # events applied to the order: a stored row is replaced only by a later one


class OrderEventRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """An ``order_events`` row: one event of an order (an order message or a fill), append-only."""

    order_id: str
    version: int
    ts: datetime
    event: str  # ORDER_EVENTS or FILL
    status: str
    portfolio_id: str
    symbol: str
    quantity: int
    filled_quantity: int
    fill_id: str | None
    fill_price: float | None
    fill_quantity: int | None
    limit_price: float | None
    reason: str | None


class OrderUpdate(OrderRow, kw_only=True):
    """An ``exec.order_updates.v1`` message, keyed by portfolio: the order after one event."""

    ts: datetime
    event: str
    fill_id: str | None = None
    fill_price: float | None = None
    fill_quantity: int | None = None


class PositionRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``positions`` and ``position_snapshots`` row, also the ``exec.positions.v1`` message
    (keyed by portfolio): one (portfolio, symbol) after a fill or a bar.

    Every figure is absolute, never a change, so a message applied twice changes nothing;
    ``version`` counts the updates of the pair, so an older one never replaces a newer.
    """

    portfolio_id: str
    symbol: str
    ts: datetime  # event time of the fill or bar
    cause: str  # FILL or MARK
    quantity: int  # signed: short below zero
    avg_cost: float | None  # None while flat
    mark_price: float
    market_value: float
    exposure: float
    unrealized_pnl: float
    realized_pnl: float  # net of fees
    fees: float
    cash_flow: float  # the cash the pair's fills moved, fees included (buying is negative)
    day_pnl: float  # P&L since the UTC day of ``ts`` began
    sector: str | None
    opened_at: datetime | None
    version: int


class PortfolioRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``portfolios`` and ``portfolio_snapshots`` row, also the ``exec.portfolios.v1`` message."""

    portfolio_id: str
    ts: datetime
    cash: float
    market_value: float
    total_value: float
    gross_exposure: float
    net_exposure: float
    realized_pnl: float
    unrealized_pnl: float
    day_pnl: float
    positions_count: int
    largest_position_symbol: str | None
    largest_position_value: float | None
    sector_exposure: dict[str, Any]
    version: int


class RiskEvent(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``risk_events`` row, also the ``exec.risk_events.v1`` message: a limit breached
    (BREACH) or back within (CLEARED). ``subject`` is the symbol, the sector or the
    portfolio the rule measured."""

    portfolio_id: str
    ts: datetime
    rule: str
    subject: str
    state: str
    observed: float
    limit_value: float


class AuditRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """An ``execution_audit`` row, also the ``exec.audit.v1`` message: an order event, a
    fill, or the position change a fill made (marks to market are valuations, not changes,
    and are not audited), with the coordinates of the message that caused it."""

    source_topic: str
    source_partition: int
    source_offset: int
    kind: str  # ORDER, FILL or POSITION
    subject: str  # the order id, the fill id, or the portfolio id
    ts: datetime
    portfolio_id: str
    symbol: str
    payload: dict[str, Any]


class PortfolioPerformanceRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``portfolio_performance`` row, also the ``exec.portfolio_performance.v1`` message:
    one portfolio's DAY, WEEK or MONTH up to its last closed day (``streams.portfolios``
    has the formulas)."""

    portfolio_id: str
    period_type: str
    period_start: date
    period_end: date  # the last UTC day the row covers
    trading_days: int
    start_value: float
    end_value: float
    period_return: float
    volatility: float | None
    sharpe_ratio: float | None
    sortino_ratio: float | None
    max_drawdown: float
    beta: float | None
    benchmark_return: float | None


class BenchmarkClose(msgspec.Struct, frozen=True, tag="benchmark"):
    """An internal ``tickwire.portfolio_context.v1`` message: the benchmark's base bar
    close, sent to every partition, so each portfolio's partition knows the benchmark's days."""

    close_us: int
    close: float


class CorrelatedPairs(msgspec.Struct, frozen=True, tag="pairs"):
    """An internal ``tickwire.portfolio_context.v1`` message: a correlation snapshot's pairs
    at or above the correlation threshold (its longest window), sent to every partition,
    for the portfolios' pair-correlation limit. ``pairs``: (symbol a, symbol b, value)."""

    timestamp_us: int
    timeframe: str
    window_bars: int
    pairs: list[tuple[str, str, float]]


PortfolioContext = BenchmarkClose | CorrelatedPairs
