"""Order lifecycles: order events and fills into each order's current state.

Rules:

- PLACED opens an order (status OPEN). The same PLACED again is a duplicate (nothing
  changes, nothing is sent); a PLACED of a known id with other values is refused
  (``conflicting_id``).
- AMENDED changes an open order's quantity and prices; the new quantity must cover
  what is filled. Its portfolio, strategy, side and type must repeat the order's.
- CANCELLED and EXPIRED end an open order; REJECTED ends an order nothing filled, and
  may come without a PLACED (the venue refused it at entry).
- A fill naming an order: the order must be open, on the fill's side and portfolio, and
  the fill must not take it past its quantity (``overfill``). It moves the order to
  PARTIALLY_FILLED, or FILLED when the quantity is reached. A fill after a cancel, an
  expiry, a reject or the last fill is refused (``order_state``).
- Orders and fills come on two topics, so a fill may overtake its order. A fill naming
  an order not seen yet books its trade and position at once (it happened) and waits
  on the order book; the PLACED that follows takes it in, as if it had come after
  (a PLACED whose quantity its waiting fills exceed is refused: ``overfill``). A fill
  that no order claims within ``retention_s`` of event time is dropped from the book.
- Where orders are required, a fill must name an order (``unknown_order``); otherwise
  a fill without one books its trade and position alone.
- An event older than the order's last is refused (``out_of_order``).
- Ended orders are remembered for ``retention_s`` of event time after their end, to
  refuse late fills; then forgotten, so the state holds the open orders and a week's
  ended ones, however many orders a symbol ever had. Nothing changes an ended order, so
  the caller may keep it out of the book (``ended``: the stage stores each under a key
  of its own) and put it back in ``orders`` when an event or a fill names it.

``check_*`` raise before anything changes; ``apply_*`` cannot fail after them.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import epoch_us, from_epoch_us
from tickwire.schemas.execution import OPEN_STATUSES, Order, OrderUpdate
from tickwire.schemas.signals import Fill

_NEVER = -(2**62)


def _dt(us: int | None) -> datetime | None:
    return None if us is None else from_epoch_us(us)


class OrderState(msgspec.Struct, array_like=True):
    order_id: str
    symbol: str
    portfolio_id: str
    strategy_id: str
    side: str
    order_type: str
    time_in_force: str
    quantity: int
    limit_price: float | None
    stop_price: float | None
    arrival_price: float | None
    status: str
    placed_us: int
    updated_us: int
    filled: int = 0
    fill_notional: float = 0.0
    first_fill_us: int | None = None
    completed_us: int | None = None
    reason: str | None = None
    version: int = 0


class EarlyFill(msgspec.Struct, array_like=True):
    fill_id: str
    ts_us: int
    portfolio_id: str
    side: str
    quantity: int
    price: float


class OrderBook(msgspec.Struct):
    """The orders of one symbol, and the fills waiting for theirs."""

    orders: dict[str, OrderState] = {}
    early: dict[str, list[EarlyFill]] = {}
    clock_us: int = _NEVER


class OrderConfig(NamedTuple):
    required: bool = False  # every fill must name a known order
    retention_s: float = 7 * 86_400.0


class OrderTracker:
    """The rules in the module docstring, over an ``OrderBook`` the caller keeps."""

    def __init__(self, config: OrderConfig = OrderConfig()) -> None:
        self.config = config
        self._retention_us = int(config.retention_s * 1_000_000)

    def expires_us(self, state: OrderState) -> int:
        """When an ended order is forgotten: once the book's clock passes this."""
        return state.completed_us + self._retention_us

    @staticmethod
    def ended(book: OrderBook) -> list[OrderState]:
        return [state for state in book.orders.values() if state.completed_us is not None]

    def on_order(self, book: OrderBook, order: Order) -> list[OrderUpdate]:
        """Apply one order event: the order after it (and after each fill that waited for
        it); [] for a duplicate PLACED. Raises ``InvalidMessage`` (nothing changed) for an
        event the lifecycle forbids."""
        ts_us = epoch_us(order.ts)
        state = book.orders.get(order.order_id)
        if order.event == "PLACED":
            if state is not None:
                if _placed(order) == _placed_state(state):
                    return []
                raise InvalidMessage("conflicting_id", f"order {order.order_id} was placed already, with other values")
            waiting = sorted(book.early.get(order.order_id, ()), key=lambda f: f.ts_us)
            for early in waiting:
                if (early.portfolio_id, early.side) != (order.portfolio_id, order.side):
                    raise InvalidMessage("invalid_value", f"order {order.order_id} differs in portfolio or side from its fill {early.fill_id}")
            if sum(f.quantity for f in waiting) > order.quantity:
                raise InvalidMessage("overfill", f"order {order.order_id} of {order.quantity} has more filled already")
            state = _opened(order, "OPEN")
            state.version = 1
            book.orders[order.order_id] = state
            updates = [self._update(state, "PLACED", ts_us)]
            book.early.pop(order.order_id, None)
            for early in waiting:
                updates.append(self._fill(state, early))
            self._advance(book, ts_us)
            return updates
        elif state is None:
            if order.event != "REJECTED":
                raise InvalidMessage("unknown_order", f"{order.event} for order {order.order_id}, never placed")
            state = _opened(order, "REJECTED")
        else:
            self._check_same(state, order.portfolio_id, order.side, f"{order.event} of order {order.order_id}", strategy_id=order.strategy_id, order_type=order.order_type)
            self._check_time(state, ts_us, order.event)
            if state.status not in OPEN_STATUSES:
                raise InvalidMessage("order_state", f"{order.event} for order {order.order_id}, which is {state.status}")
            if order.event == "AMENDED":
                if order.quantity < state.filled:
                    raise InvalidMessage("overfill", f"amended quantity {order.quantity} is below the {state.filled} filled of order {order.order_id}")
                state.quantity, state.limit_price, state.stop_price = order.quantity, order.limit_price, order.stop_price
                state.time_in_force = order.time_in_force
                if state.filled == state.quantity:
                    state.status, state.completed_us = "FILLED", ts_us
            else:
                if order.event == "REJECTED" and state.filled:
                    raise InvalidMessage("order_state", f"REJECTED for order {order.order_id}, which has fills")
                state.status, state.completed_us, state.reason = order.event, ts_us, order.reason
            state.updated_us = ts_us
        state.version += 1
        book.orders[order.order_id] = state
        self._advance(book, ts_us)
        return [self._update(state, order.event, ts_us)]

    def check_fill(self, book: OrderBook, fill: Fill) -> None:
        """Raise ``InvalidMessage`` if ``fill`` may not apply to its order."""
        if fill.order_id is None:
            if self.config.required:
                raise InvalidMessage("unknown_order", f"fill {fill.fill_id} names no order; orders are required")
            return
        state = book.orders.get(fill.order_id)
        if state is None:
            return
        self._check_same(state, fill.portfolio_id, fill.side, f"fill {fill.fill_id} of order {state.order_id}", strategy_id=fill.strategy_id)
        self._check_time(state, epoch_us(fill.ts), f"fill {fill.fill_id}")
        if state.status not in OPEN_STATUSES:
            raise InvalidMessage("order_state", f"fill {fill.fill_id} for order {state.order_id}, which is {state.status}")
        if state.filled + fill.quantity > state.quantity:
            raise InvalidMessage(
                "overfill", f"fill {fill.fill_id} of {fill.quantity} takes order {state.order_id} past its {state.quantity} ({state.filled} filled)"
            )

    def apply_fill(self, book: OrderBook, fill: Fill) -> OrderUpdate | None:
        """The order after ``fill`` (checked by ``check_fill``); None when it names no order
        known yet (it waits for its order, if it names one)."""
        if fill.order_id is None:
            return None
        early = EarlyFill(fill.fill_id, epoch_us(fill.ts), fill.portfolio_id, fill.side, fill.quantity, fill.price)
        state = book.orders.get(fill.order_id)
        if state is None:
            book.early.setdefault(fill.order_id, []).append(early)
            self._advance(book, early.ts_us)
            return None
        update = self._fill(state, early)
        self._advance(book, early.ts_us)
        return update

    def _fill(self, state: OrderState, fill: EarlyFill) -> OrderUpdate:
        state.filled += fill.quantity
        state.fill_notional += fill.price * fill.quantity
        if state.first_fill_us is None:
            state.first_fill_us = fill.ts_us
        if state.filled == state.quantity:
            state.status, state.completed_us = "FILLED", fill.ts_us
        else:
            state.status = "PARTIALLY_FILLED"
        state.updated_us = max(state.updated_us, fill.ts_us)
        state.version += 1
        return self._update(state, "FILL", fill.ts_us, fill=fill)

    @staticmethod
    def _check_same(state: OrderState, portfolio_id: str, side: str, what: str, **more: str) -> None:
        for name, value in (("portfolio_id", portfolio_id), ("side", side), *more.items()):
            stored = getattr(state, name)
            if value != stored:
                raise InvalidMessage("invalid_value", f"{what}: {name} {value!r} differs from the order's {stored!r}")

    @staticmethod
    def _check_time(state: OrderState, ts_us: int, what: str) -> None:
        if ts_us < state.updated_us:
            raise InvalidMessage("out_of_order", f"{what} at {_dt(ts_us).isoformat()} is older than order {state.order_id}'s last event")

    def _advance(self, book: OrderBook, now_us: int) -> None:
        book.clock_us = max(book.clock_us, now_us)
        horizon = book.clock_us - self._retention_us
        for order_id in [i for i, o in book.orders.items() if o.completed_us is not None and self.expires_us(o) < book.clock_us]:
            del book.orders[order_id]
        for order_id in [i for i, fills in book.early.items() if fills[-1].ts_us < horizon]:
            del book.early[order_id]

    @staticmethod
    def _update(state: OrderState, event: str, ts_us: int, *, fill: EarlyFill | None = None) -> OrderUpdate:
        avg = state.fill_notional / state.filled if state.filled else None
        reference = state.limit_price or state.stop_price or state.arrival_price
        slippage = None
        if avg is not None and reference is not None:
            slippage = avg - reference if state.side == "BUY" else reference - avg
        return OrderUpdate(
            order_id=state.order_id, portfolio_id=state.portfolio_id, strategy_id=state.strategy_id, symbol=state.symbol,
            side=state.side, order_type=state.order_type, time_in_force=state.time_in_force, quantity=state.quantity,
            limit_price=state.limit_price, stop_price=state.stop_price, status=state.status, filled_quantity=state.filled,
            avg_fill_price=avg, fill_ratio=state.filled / state.quantity, slippage=slippage,
            placed_at=_dt(state.placed_us), updated_at=_dt(state.updated_us), first_fill_at=_dt(state.first_fill_us),
            completed_at=_dt(state.completed_us),
            time_to_fill_ms=(state.completed_us - state.placed_us) // 1000 if state.status == "FILLED" else None,
            reason=state.reason, version=state.version, ts=_dt(ts_us), event=event,
            fill_id=fill.fill_id if fill else None, fill_price=fill.price if fill else None,
            fill_quantity=fill.quantity if fill else None,
        )


def _opened(order: Order, status: str) -> OrderState:
    ts_us = epoch_us(order.ts)
    ended = status != "OPEN"
    return OrderState(
        order.order_id, order.symbol, order.portfolio_id, order.strategy_id, order.side, order.order_type, order.time_in_force,
        order.quantity, order.limit_price, order.stop_price, order.arrival_price, status, ts_us, ts_us,
        completed_us=ts_us if ended else None, reason=order.reason if ended else None,
    )


def _placed(order: Order) -> tuple:
    return (order.portfolio_id, order.strategy_id, order.side, order.order_type, order.time_in_force, order.quantity,
            order.limit_price, order.stop_price, order.arrival_price, epoch_us(order.ts))


def _placed_state(state: OrderState) -> tuple:
    return (state.portfolio_id, state.strategy_id, state.side, state.order_type, state.time_in_force, state.quantity,
            state.limit_price, state.stop_price, state.arrival_price, state.placed_us)
