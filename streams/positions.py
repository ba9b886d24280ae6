"""Positions per (portfolio, symbol) from fills, marked to the symbol's latest price.

Rules:

- A fill adds ``quantity`` (BUY) or takes it away (SELL); the position is signed, short
  below zero. A fill on the position's side adds to its cost; one against it closes
  ``min(|position|, quantity)`` at ``avg_cost`` and realises ``(price - avg_cost) *
  closed`` (times -1 for a short); what is left of the fill opens a position the other
  way at the fill's price (a flip), with ``opened_at`` the fill's time.
- ``realized_pnl`` is net of ``fees`` (the fills' commissions); ``cash_flow`` is the
  cash the fills moved: ``-signed quantity * price - commission`` summed.
- The mark is the symbol's latest price by event time: a base bar's close (at the bar's
  close time) or a fill's price, whichever is later. ``market_value = quantity * mark``,
  ``exposure = |market_value|``, ``unrealized_pnl = market_value - quantity * avg_cost``.
  So ``realized_pnl + unrealized_pnl = market_value + cash_flow``, the pair's total P&L.
- ``day_pnl``: the total P&L now minus the total P&L at the pair's last update before
  the UTC day of ``ts`` began.
- A fill older than the pair's last fill is refused (``out_of_order``); one that would
  take the position past ``MAX_POSITION_UNITS`` units is refused (``invalid_value``).
- Every update (a fill, or a base bar of a symbol held) increments ``version`` and is one
  row. A pair once traded keeps its entry in its symbol's record (about 100 bytes a
  portfolio), so a position opened again continues its cash flow and realised P&L.

A duplicate fill never reaches here: the trade book recognises its ``fill_id`` first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import DAY_US, epoch_us, from_epoch_us
from tickwire.schemas.execution import MAX_POSITION_UNITS, PositionRow
from tickwire.schemas.signals import Fill

_NEVER = -(2**62)


def _dt(us: int | None) -> datetime | None:
    return None if us is None else from_epoch_us(us)


class PositionState(msgspec.Struct, array_like=True):
    quantity: int = 0
    cost: float = 0.0  # avg_cost * |quantity|
    realized_gross: float = 0.0
    fees: float = 0.0
    cash_flow: float = 0.0
    opened_us: int | None = None
    last_fill_us: int = _NEVER
    version: int = 0
    day: int = 0  # UTC day number of the last update
    day_start_pnl: float = 0.0  # total P&L at the last update before ``day``
    total_pnl: float = 0.0  # at the last update


class PositionBook(msgspec.Struct):
    """One symbol's positions, by portfolio, and its mark."""

    positions: dict[str, PositionState] = {}
    mark: float | None = None
    mark_us: int = _NEVER


class PositionKeeper:
    """The rules in the module docstring, over a ``PositionBook`` the caller keeps."""

    def __init__(self, sectors: Mapping[str, str] | None = None) -> None:
        self.sectors = dict(sectors or {})

    def check_fill(self, book: PositionBook, fill: Fill) -> None:
        """Raise ``InvalidMessage`` (nothing changed) if ``fill`` may not apply."""
        state = book.positions.get(fill.portfolio_id)
        if state is None:
            return
        if epoch_us(fill.ts) < state.last_fill_us:
            raise InvalidMessage(
                "out_of_order", f"fill {fill.fill_id} at {fill.ts.isoformat()} is older than the last fill of {fill.portfolio_id}'s {fill.symbol}"
            )
        signed = fill.quantity if fill.side == "BUY" else -fill.quantity
        if abs(state.quantity + signed) > MAX_POSITION_UNITS:
            raise InvalidMessage("invalid_value", f"fill {fill.fill_id} takes {fill.portfolio_id}'s {fill.symbol} past {MAX_POSITION_UNITS} units")

    def apply_fill(self, book: PositionBook, fill: Fill) -> PositionRow:
        ts_us = epoch_us(fill.ts)
        state = book.positions.setdefault(fill.portfolio_id, PositionState())
        signed = fill.quantity if fill.side == "BUY" else -fill.quantity
        held = state.quantity
        if held == 0 or (held > 0) == (signed > 0):
            state.cost += fill.price * fill.quantity
            if held == 0:
                state.opened_us = ts_us
        else:
            closed = min(abs(held), fill.quantity)
            avg = state.cost / abs(held)
            state.realized_gross += (1 if held > 0 else -1) * closed * (fill.price - avg)
            state.cost -= avg * closed
            left = fill.quantity - closed
            if left:
                state.cost, state.opened_us = fill.price * left, ts_us
            elif closed == abs(held):
                state.cost, state.opened_us = 0.0, None
        state.quantity = held + signed
        state.fees += fill.commission
        state.cash_flow -= signed * fill.price + fill.commission
        state.last_fill_us = ts_us
        if ts_us >= book.mark_us:
            book.mark, book.mark_us = fill.price, ts_us
        return self._row(book, fill.portfolio_id, fill.symbol, state, ts_us, "FILL")

    def on_close(self, book: PositionBook, symbol: str, close: float, close_us: int) -> list[PositionRow]:
        """A base bar closed at ``close_us``: every position held in the symbol, marked again.
        A bar older than the mark changes nothing."""
        if close_us < book.mark_us:
            return []
        book.mark, book.mark_us = close, close_us
        return [
            self._row(book, portfolio_id, symbol, state, close_us, "MARK")
            for portfolio_id, state in book.positions.items() if state.quantity
        ]

    def _row(self, book: PositionBook, portfolio_id: str, symbol: str, state: PositionState, ts_us: int, cause: str) -> PositionRow:
        mark = book.mark
        market_value = state.quantity * mark
        total = market_value + state.cash_flow
        day = ts_us // DAY_US
        if day != state.day:
            state.day, state.day_start_pnl = day, state.total_pnl
        state.total_pnl = total
        state.version += 1
        return PositionRow(
            portfolio_id=portfolio_id, symbol=symbol, ts=_dt(ts_us), cause=cause, quantity=state.quantity,
            avg_cost=state.cost / abs(state.quantity) if state.quantity else None, mark_price=mark,
            market_value=market_value, exposure=abs(market_value),
            unrealized_pnl=market_value - (state.cost if state.quantity > 0 else -state.cost),
            realized_pnl=state.realized_gross - state.fees, fees=state.fees, cash_flow=state.cash_flow,
            day_pnl=total - state.day_start_pnl, sector=self.sectors.get(symbol), opened_at=_dt(state.opened_us),
            version=state.version,
        )
