"""Fills into trades: one ``TradeOutcomeRow`` per trade_id, re-sent after every fill.

Rules:

- The first fill of a trade opens it: BUY makes it LONG, SELL makes it SHORT, and its
  ``ts`` is ``entry_time`` for good (part of the table key). Fills on the same side add
  to the position; fills on the other side close part or all of it. A closing fill
  larger than the open position (a flip), a fill after the position reached zero, a
  fill older than the trade's last fill, or one whose symbol, strategy or model
  version differs from the trade's, raises ``InvalidMessage`` (DLQ).
- ``entry_price``: VWAP of all opening fills; ``quantity``: total opened quantity;
  ``exit_price``: VWAP of the closing fills so far (partial exits), ``exit_time`` the
  fill that brought the position to zero.
- ``gross_pnl = sign * (exit notional - entry_price * closed quantity)``, sign +1 LONG
  and -1 SHORT: realised P&L only, the open remainder is not marked to market.
  ``commission``: sum over all fills; ``net_pnl = gross_pnl - commission`` (slippage
  is already in the fill prices, so it is not subtracted twice).
- ``slippage``: quantity-weighted mean adverse price difference per unit against each
  fill's ``decision_price`` (BUY: price - decision, SELL: decision - price; positive
  costs money); ``None`` when no fill carried a decision price.
- ``outcome_type``: OPEN while the position is open; then WIN when ``net_pnl`` exceeds
  ``breakeven_band`` times the entry notional (``entry_price * quantity``, default
  0.0001 = 1 bp), LOSS below minus that, BREAKEVEN within (bounds included).
- Excursions, in money, both reported as non-negative magnitudes: the trade's gross
  P&L had the open remainder been closed at a price seen while open. Prices seen are
  the fill prices (before each fill applies) and the highs (LONG favourable) and lows
  of the symbol's bars of ``timeframe`` whose open time is in [entry_time, exit_time).
  Each bar is evaluated against the position in effect at its open time, whatever
  the order bars and fills arrive in on their two topics: a bar after the last fill
  is held back ("tentative") until a later fill or ``bar_lateness_s`` of bar time has
  passed; a bar older than the last fill is evaluated against the position recorded
  after the fill before it, and if that changes a closed trade's excursions,
  ``on_bar`` returns the trade's new row.
- A duplicate ``fill_id`` changes nothing and re-sends the trade's current row.
  Closed trades are remembered for ``closed_retention_s`` of event time (fills and
  bars) after their exit, to drop duplicates and reject late fills; after that a fill
  of the same trade_id would open a new trade.
- A closed trade is *settled* once the bars of ``timeframe`` have reached its exit:
  bars are applied in time order (an older one is refused), so none can change it
  again. The caller may then keep it out of the book (``settled``: the stage stores
  each under a key of its own) and put it back in ``trades`` when a fill or a decision
  names it: the book holds the open trades and the unsettled closed ones, not a week
  of every trade, and what a bar or a fill walks stays as small.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from typing import Callable, Iterable, NamedTuple

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Bar, epoch_us, from_epoch_us, timeframe_seconds
from tickwire.schemas.signals import MAX_MONEY, Fill, TradeOutcomeRow

_NEVER = -(2**62)



class TradeConfig(msgspec.Struct, frozen=True, kw_only=True):
    breakeven_band: float = 0.0001
    timeframe: str = "1m"
    bar_lateness_s: float = 300.0
    closed_retention_s: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        if self.breakeven_band < 0 or self.bar_lateness_s < 0 or self.closed_retention_s < 0:
            raise ValueError("breakeven_band, bar_lateness_s and closed_retention_s must not be negative")
        timeframe_seconds(self.timeframe)


class TradeState(msgspec.Struct, array_like=True):
    trade_id: str
    strategy_id: str
    model_version: str
    symbol: str
    sign: int
    entry_us: int
    last_fill_us: int
    opened_qty: int = 0
    open_qty: int = 0
    entry_notional: float = 0.0
    closed_qty: int = 0
    exit_notional: float = 0.0
    commission: float = 0.0
    slippage_cost: float = 0.0
    slippage_qty: int = 0
    exit_us: int | None = None
    mfe: float | None = None
    mae: float | None = None
    tentative: list[tuple[int, float, float]] = []  # (bar open time µs, high, low)
    fill_ids: list[str] = []
    # After each fill: (ts µs, opened_qty, open_qty, entry_notional, closed_qty, exit_notional)
    positions: list[tuple[int, int, int, float, int, float]] = []
    regimes: dict[str, str] | None = None  # timeframe -> the symbol's regime when the trade opened; None: not known yet


class TradeBook(msgspec.Struct):
    """The trades of one key (the wiring keys by symbol, as ``exec.fills.v1`` is)."""

    trades: dict[str, TradeState] = {}
    clock_us: int = _NEVER
    bars_us: int = _NEVER  # the open time of the latest bar of the builder's timeframe


class FillResult(NamedTuple):
    row: TradeOutcomeRow
    duplicate: bool


class TradeBuilder:
    """The rules in the module docstring, over a ``TradeBook`` the caller keeps."""

    def __init__(self, config: TradeConfig | None = None) -> None:
        self.config = config or TradeConfig()
        self._lateness_us = int(self.config.bar_lateness_s * 1_000_000)
        self._retention_us = int(self.config.closed_retention_s * 1_000_000)

    def on_fill(self, book: TradeBook, fill: Fill) -> FillResult:
        """Apply one validated fill; raise ``InvalidMessage`` if it breaks the trade."""
        ts_us = epoch_us(fill.ts)
        tid = str(fill.trade_id)
        trade = book.trades.get(tid)
        if trade is None:
            trade = TradeState(
                tid, fill.strategy_id, fill.model_version, fill.symbol, 1 if fill.side == "BUY" else -1, ts_us, ts_us
            )
        elif self.known(book, fill):
            return FillResult(self._row(trade), True)
        else:
            self._check(trade, fill, ts_us)
        opening = (fill.side == "BUY") == (trade.sign > 0)
        if not opening and fill.quantity > trade.open_qty:
            raise InvalidMessage(
                "invalid_value", f"closing quantity {fill.quantity} exceeds the open position {trade.open_qty} of trade {tid}"
            )
        if opening and trade.opened_qty + fill.quantity >= 2**31:
            # trade_outcomes.quantity is INTEGER: a total it cannot hold would be refused there.
            raise InvalidMessage(
                "invalid_value", f"opening quantity {fill.quantity} takes trade {tid} past 2^31 - 1 units"
            )
        if trade.commission + fill.commission >= MAX_MONEY:
            # trade_outcomes.commission is DECIMAL(18, 4).
            raise InvalidMessage("invalid_value", f"commission {fill.commission} takes trade {tid}'s total past {MAX_MONEY:g}")
        book.trades[tid] = trade
        self._fold(trade, lambda bar_us: bar_us < ts_us)
        if trade.open_qty:
            self._observe(trade, fill.price, fill.price, _position(trade, ts_us))
        if opening:
            trade.opened_qty += fill.quantity
            trade.open_qty += fill.quantity
            trade.entry_notional += fill.price * fill.quantity
        else:
            trade.open_qty -= fill.quantity
            trade.closed_qty += fill.quantity
            trade.exit_notional += fill.price * fill.quantity
            if trade.open_qty == 0:
                trade.exit_us = ts_us
                trade.tentative = []
        trade.commission += fill.commission
        if fill.decision_price is not None:
            adverse = fill.price - fill.decision_price if fill.side == "BUY" else fill.decision_price - fill.price
            trade.slippage_cost += adverse * fill.quantity
            trade.slippage_qty += fill.quantity
        trade.last_fill_us = ts_us
        trade.fill_ids.append(fill.fill_id)
        trade.positions.append(_position(trade, ts_us))
        self._advance(book, ts_us)
        return FillResult(self._row(trade), False)

    def place_regimes(self, book: TradeBook, regimes_at: Callable[[int], dict[str, str] | None]) -> list[TradeOutcomeRow]:
        """Give each trade whose entry regimes are not known yet ``regimes_at(entry time)``,
        once that is known (``symbol.RegimeHistory.at``); the rows of the trades it changed."""
        rows = []
        for trade in book.trades.values():
            if trade.regimes is None:
                trade.regimes = regimes_at(trade.entry_us)
                if trade.regimes is not None:
                    rows.append(self._row(trade))
        return rows

    @staticmethod
    def settled(book: TradeBook) -> list[TradeState]:
        """The closed trades no bar can change any more (their exit at or before the latest
        bar's open time, their regimes placed)."""
        return [t for t in book.trades.values() if t.exit_us is not None and t.exit_us <= book.bars_us and t.regimes is not None]

    def expires_us(self, trade: TradeState) -> int:
        """When a closed trade is forgotten: once the book's clock passes this."""
        return trade.exit_us + self._retention_us

    @staticmethod
    def known(book: TradeBook, fill: Fill) -> bool:
        """Whether ``fill`` is a duplicate: its trade holds its ``fill_id``."""
        trade = book.trades.get(str(fill.trade_id))
        return trade is not None and fill.fill_id in trade.fill_ids

    def on_bar(self, book: TradeBook, bar: Bar) -> list[TradeOutcomeRow]:
        """Track the excursions of the symbol's trades; return the rows of closed trades it changed.

        Bars of other timeframes are ignored.
        """
        if bar.timeframe != self.config.timeframe:
            return []
        bar_us = epoch_us(bar.ts)
        book.bars_us = max(book.bars_us, bar_us)
        changed = []
        for trade in book.trades.values():
            if bar_us < trade.entry_us or (trade.exit_us is not None and bar_us >= trade.exit_us):
                continue
            if trade.exit_us is None and bar_us >= trade.last_fill_us:
                trade.tentative.append((bar_us, bar.high, bar.low))
                continue
            before = (trade.mfe, trade.mae)
            position = trade.positions[bisect_right(trade.positions, (bar_us, 2**62)) - 1]
            self._observe(trade, bar.high, bar.low, position)
            if trade.exit_us is not None and (trade.mfe, trade.mae) != before:
                changed.append(self._row(trade))
        self._advance(book, bar_us)
        settled_before = book.clock_us - self._lateness_us
        for trade in book.trades.values():
            if trade.tentative:
                self._fold(trade, lambda t: t < settled_before)
        return changed

    def on_bars(self, book: TradeBook, bars: Iterable[Bar]) -> list[TradeOutcomeRow]:
        """Batch form of ``on_bar``."""
        return [row for bar in bars for row in self.on_bar(book, bar)]

    def row(self, book: TradeBook, trade_id: uuid.UUID) -> TradeOutcomeRow:
        """The trade's current row (open trades include their tentative bars)."""
        return self._row(book.trades[str(trade_id)])

    def _check(self, trade: TradeState, fill: Fill, ts_us: int) -> None:
        tid = trade.trade_id
        if trade.exit_us is not None:
            raise InvalidMessage("invalid_value", f"trade {tid} is already closed")
        for name in ("symbol", "strategy_id", "model_version"):
            if getattr(fill, name) != getattr(trade, name):
                raise InvalidMessage("invalid_value", f"{name} {getattr(fill, name)!r} differs from trade {tid}'s {getattr(trade, name)!r}")
        if ts_us < trade.last_fill_us:
            raise InvalidMessage("out_of_order", f"fill at {fill.ts.isoformat()} is older than trade {tid}'s last fill")

    def _advance(self, book: TradeBook, now_us: int) -> None:
        book.clock_us = max(book.clock_us, now_us)
        for tid in [tid for tid, t in book.trades.items() if t.exit_us is not None and self.expires_us(t) < book.clock_us]:
            del book.trades[tid]

    def _fold(self, trade: TradeState, settled) -> None:
        keep = []
        for bar in trade.tentative:
            if settled(bar[0]):
                self._observe(trade, bar[1], bar[2], _position(trade, trade.last_fill_us))
            else:
                keep.append(bar)
        trade.tentative = keep

    @staticmethod
    def _observe(trade: TradeState, high: float, low: float, position: tuple[int, int, int, float, int, float]) -> None:
        favourable, adverse = (high, low) if trade.sign > 0 else (low, high)
        trade.mfe = max(trade.mfe or 0.0, _pnl_at(trade.sign, position, favourable))
        trade.mae = max(trade.mae or 0.0, -_pnl_at(trade.sign, position, adverse))

    def _row(self, trade: TradeState) -> TradeOutcomeRow:
        entry_price = trade.entry_notional / trade.opened_qty
        gross = trade.sign * (trade.exit_notional - entry_price * trade.closed_qty)
        net = gross - trade.commission
        mfe, mae = trade.mfe, trade.mae
        if trade.tentative:
            pending = msgspec.structs.replace(trade, tentative=[])
            for _, high, low in trade.tentative:
                self._observe(pending, high, low, _position(trade, trade.last_fill_us))
            mfe, mae = pending.mfe, pending.mae
        if trade.exit_us is None:
            outcome = "OPEN"
        else:
            band = self.config.breakeven_band * entry_price * trade.opened_qty
            outcome = "WIN" if net > band else "LOSS" if net < -band else "BREAKEVEN"
        return TradeOutcomeRow(
            trade_id=uuid.UUID(trade.trade_id),
            strategy_id=trade.strategy_id,
            model_version=trade.model_version,
            symbol=trade.symbol,
            direction="LONG" if trade.sign > 0 else "SHORT",
            entry_time=from_epoch_us(trade.entry_us),
            exit_time=None if trade.exit_us is None else from_epoch_us(trade.exit_us),
            entry_price=entry_price,
            exit_price=trade.exit_notional / trade.closed_qty if trade.closed_qty else None,
            quantity=trade.opened_qty,
            gross_pnl=gross,
            net_pnl=net,
            commission=trade.commission,
            slippage=trade.slippage_cost / trade.slippage_qty if trade.slippage_qty else None,
            duration_seconds=None if trade.exit_us is None else (trade.exit_us - trade.entry_us) // 1_000_000,
            max_favorable_excursion=mfe,
            max_adverse_excursion=mae,
            outcome_type=outcome,
            entry_regimes=trade.regimes or None,
        )


def _position(trade: TradeState, ts_us: int) -> tuple[int, int, int, float, int, float]:
    return (ts_us, trade.opened_qty, trade.open_qty, trade.entry_notional, trade.closed_qty, trade.exit_notional)


def _pnl_at(sign: int, position: tuple[int, int, int, float, int, float], price: float) -> float:
    """Gross P&L had the open remainder of ``position`` been closed at ``price``."""
    _, opened, open_qty, entry_notional, closed, exit_notional = position
    return sign * (exit_notional + price * open_qty - entry_notional / opened * (closed + open_qty))
