"""Sizing and exit decisions joined with the trades they led to.

Rules:

- A decision's row goes out when it arrives (version 1), and again, one version up,
  each time its trade closes or a closed trade's figures change (a late bar moving its
  excursions). The trade is the symbol's ``TradeBook``'s (``streams.fills``): decisions
  and fills come on different topics, so a decision may arrive before its trade's first
  fill; it then waits, and joins when the trade closes.
- Refused (``InvalidMessage``, nothing changes): a decision whose id is known with other
  values (``conflicting_id``); one naming a trade the book holds for another strategy
  (``invalid_value``); a sizing decision made after its trade closed, or an exit decided
  before its trade opened or after it closed (``unknown_trade``); an exit of more than
  its trade opened (``invalid_value``). The same decision again changes nothing and
  sends nothing. A waiting decision whose trade turns out to be another strategy's
  never joins.
- Sizing: ``planned_risk = quantity * stop_distance``. Once the trade has closed:
  ``trade_quantity`` its opened quantity, ``max_adverse_excursion`` its MAE (money),
  ``realized_pnl`` its net P&L, ``realized_loss = max(0, -realized_pnl)``, and the
  realised risk as multiples of the planned one: ``mae_to_planned = MAE / planned_risk``
  and ``loss_to_planned = realized_loss / planned_risk`` (None when nothing was planned).
  ``config_id``: the configuration of the decision's (portfolio, strategy) in effect at
  its time (the latest whose ``ts`` is not after it).
- Exits, once the trade has closed, with ``sign`` +1 LONG and -1 SHORT and ``entry`` the
  trade's entry VWAP: ``exit_pnl = sign * (price - entry) * quantity`` at the decided
  price; ``exit_efficiency = exit_pnl / (MFE * quantity / opened)``, the exit's P&L over
  its share of the best the trade offered (1 = it exited its share at the trade's best);
  ``trade_efficiency = gross_pnl / MFE`` for the whole trade. None where MFE is not
  positive.
- Partial exits, once the trade has closed: the fills before the decision's ``ts`` are
  "before" (a fill at its ``ts`` is after). ``remaining_quantity = open before -
  quantity``; the remainder is taken to exit at ``remainder_exit_price = (exit notional
  after - quantity * price) / (quantity closed after - quantity)`` (the partial assumed
  filled at its price); ``remainder_pnl = sign * (remainder_exit_price - entry) *
  remaining``, ``remainder_pnl_at_partial = sign * (price - entry) * remaining`` (had it
  all exited with the partial) and ``remainder_gain`` their difference: positive when
  holding the rest paid. None when nothing remained.
- Configurations: the same ``config_id`` again with the same values changes nothing;
  with other values it is refused (``conflicting_id``). A configuration superseded more
  than ``retention_s`` of event time ago is forgotten.
- Decisions are kept while their trade is open, and ``retention_s`` of event time after
  their own ``ts`` and their trade's close (as long as the book keeps a closed trade), so
  a symbol's state holds a week's decisions however many it ever had; one naming a trade
  that never closed here is then dropped and counted (``Joined.unjoined``), the one sign
  of a trade id the trading system made up. A decision joined with a trade the book no
  longer holds (settled, ``streams.fills``) cannot change again: the caller may keep it
  out of the book (``settled``) and put it back in ``sizing`` or ``exits`` when it comes again.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from typing import NamedTuple

import msgspec

from tickwire.schemas.decisions import (
    ExitDecision, PartialExitRow, PositionSizingRow, SizingConfig, SizingConfigRow, SizingDecision, SmartExitRow,
)
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import epoch_us
from tickwire.schemas.signals import TradeOutcomeRow
from tickwire.streams.fills import TradeBook, TradeBuilder, TradeState

_NEVER = -(2**62)


class DecisionBook(msgspec.Struct):
    """The decisions and sizing configurations of one symbol."""

    sizing: dict[str, PositionSizingRow] = {}
    exits: dict[str, SmartExitRow] = {}
    configs: list[SizingConfigRow] = []  # by ts
    clock_us: int = _NEVER


class Joined(NamedTuple):
    """What a decision or a trade change sends: rows, whether the message was a duplicate,
    and the decisions it aged out without their trade: {"sizing" or "exit": count}."""

    rows: list[msgspec.Struct]
    duplicate: bool = False
    unjoined: dict[str, int] = {}


class DecisionJoiner:
    """The rules in the module docstring, over a ``DecisionBook`` the caller keeps."""

    def __init__(self, builder: TradeBuilder) -> None:
        self.builder = builder
        self._retention_us = int(builder.config.closed_retention_s * 1_000_000)

    @staticmethod
    def settled(book: DecisionBook, trades: TradeBook) -> tuple[list[PositionSizingRow], list[SmartExitRow]]:
        """The sizing and exit decisions joined with a trade ``trades`` no longer holds."""
        def done(row: PositionSizingRow | SmartExitRow) -> bool:
            return row.trade_closed_at is not None and str(row.trade_id) not in trades.trades
        return [r for r in book.sizing.values() if done(r)], [r for r in book.exits.values() if done(r)]

    def expires_us(self, row: PositionSizingRow | SmartExitRow) -> int:
        """When retention lets a joined decision go."""
        return max(epoch_us(row.ts), epoch_us(row.trade_closed_at)) + self._retention_us

    def on_config(self, book: DecisionBook, trades: TradeBook, config: SizingConfig) -> Joined:
        row = SizingConfigRow(**msgspec.structs.asdict(config))
        known = next((c for c in book.configs if c.config_id == config.config_id), None)
        if known is not None:
            if known == row:
                return Joined([], True)
            raise InvalidMessage("conflicting_id", f"sizing configuration {config.config_id} was applied already, with other values")
        book.configs.append(row)
        book.configs.sort(key=lambda c: c.ts)
        return Joined([row], unjoined=self._advance(book, trades, epoch_us(config.ts)))

    def on_sizing(self, book: DecisionBook, trades: TradeBook, decision: SizingDecision) -> Joined:
        decision_id = str(decision.decision_id)
        inputs = msgspec.structs.asdict(decision)
        if _repeated(book.sizing.get(decision_id), inputs, f"sizing decision {decision_id}"):
            return Joined([], True)
        ts_us = epoch_us(decision.ts)
        trade = None if decision.trade_id is None else trades.trades.get(str(decision.trade_id))
        if trade is not None:
            self._check_strategy(trade, decision.strategy_id, f"sizing decision {decision_id}")
            if trade.exit_us is not None and ts_us > trade.exit_us:
                raise InvalidMessage("unknown_trade", f"sizing decision {decision_id} is later than its trade {trade.trade_id}'s close")
        config = self._config_at(book, decision)
        row = PositionSizingRow(
            **inputs, config_id=None if config is None else config.config_id, planned_risk=decision.quantity * decision.stop_distance
        )
        book.sizing[decision_id] = row = self._sized(row, trade, trades)
        return Joined([row], unjoined=self._advance(book, trades, ts_us))

    def on_exit(self, book: DecisionBook, trades: TradeBook, decision: ExitDecision) -> Joined:
        exit_id = str(decision.exit_id)
        inputs = msgspec.structs.asdict(decision)
        if _repeated(book.exits.get(exit_id), inputs, f"exit decision {exit_id}"):
            return Joined([], True)
        ts_us = epoch_us(decision.ts)
        trade = trades.trades.get(str(decision.trade_id))
        if trade is not None:
            self._check_strategy(trade, decision.strategy_id, f"exit decision {exit_id}")
            if ts_us < trade.entry_us or (trade.exit_us is not None and ts_us > trade.exit_us):
                raise InvalidMessage("unknown_trade", f"exit decision {exit_id}: trade {trade.trade_id} was not open at its time")
            if decision.quantity > trade.opened_qty:
                raise InvalidMessage("invalid_value", f"exit of {decision.quantity} is more than trade {trade.trade_id}'s {trade.opened_qty}")
        row = self._exited(SmartExitRow(**inputs), trade, trades)
        book.exits[exit_id] = row
        return Joined(self._exit_rows(row, trade, trades), unjoined=self._advance(book, trades, ts_us))

    def on_trade(self, book: DecisionBook, trades: TradeBook, trade_id: uuid.UUID) -> Joined:
        """The rows of the decisions of ``trade_id`` its latest change changed (one version up)."""
        trade = trades.trades.get(str(trade_id))
        if trade is None or trade.exit_us is None:
            return Joined([])
        unjoined = self._advance(book, trades, _NEVER)  # on a close, not on every fill: the scan costs every decision kept
        out: list[msgspec.Struct] = []
        for decision_id, row in book.sizing.items():
            if row.trade_id == trade_id:
                joined = self._sized(row, trade, trades)
                if joined != row:
                    book.sizing[decision_id] = joined = msgspec.structs.replace(joined, version=row.version + 1)
                    out.append(joined)
        for exit_id, row in book.exits.items():
            if row.trade_id == trade_id:
                joined = self._exited(row, trade, trades)
                if joined != row:
                    book.exits[exit_id] = joined = msgspec.structs.replace(joined, version=row.version + 1)
                    out += self._exit_rows(joined, trade, trades)
        return Joined(out, unjoined=unjoined)

    def _sized(self, row: PositionSizingRow, trade: TradeState | None, trades: TradeBook) -> PositionSizingRow:
        if trade is None or trade.exit_us is None or trade.strategy_id != row.strategy_id:
            return row
        outcome = self._outcome(trades, trade)
        mae, pnl, planned = outcome.max_adverse_excursion, outcome.net_pnl, row.planned_risk
        loss = max(0.0, -pnl)
        return msgspec.structs.replace(
            row, trade_quantity=outcome.quantity, trade_closed_at=outcome.exit_time, max_adverse_excursion=mae,
            realized_pnl=pnl, realized_loss=loss,
            mae_to_planned=mae / planned if planned > 0 and mae is not None else None,
            loss_to_planned=loss / planned if planned > 0 else None,
        )

    def _exited(self, row: SmartExitRow, trade: TradeState | None, trades: TradeBook) -> SmartExitRow:
        if trade is None or trade.exit_us is None or trade.strategy_id != row.strategy_id:
            return row
        outcome = self._outcome(trades, trade)
        mfe, entry = outcome.max_favorable_excursion, outcome.entry_price
        exit_pnl = trade.sign * (row.price - entry) * row.quantity
        positive = mfe is not None and mfe > 0
        return msgspec.structs.replace(
            row, direction=outcome.direction, entry_price=entry, trade_closed_at=outcome.exit_time, exit_pnl=exit_pnl,
            trade_pnl=outcome.gross_pnl, max_favorable_excursion=mfe,
            exit_efficiency=exit_pnl / (mfe * row.quantity / trade.opened_qty) if positive else None,
            trade_efficiency=outcome.gross_pnl / mfe if positive else None,
        )

    def _exit_rows(self, row: SmartExitRow, trade: TradeState | None, trades: TradeBook) -> list[msgspec.Struct]:
        """The exit's row, and for a partial exit its ``partial_exit_history`` row."""
        if not row.partial:
            return [row]
        partial = PartialExitRow(
            exit_id=row.exit_id, trade_id=row.trade_id, strategy_id=row.strategy_id, symbol=row.symbol, ts=row.ts,
            reason=row.reason, price=row.price, quantity=row.quantity, trade_closed_at=row.trade_closed_at, version=row.version,
        )
        if row.trade_closed_at is None or trade is None:
            return [row, partial]
        index = bisect_left(trade.positions, (epoch_us(row.ts),))
        if index == 0:
            return [row, partial]
        _, _, open_before, _, closed_before, notional_before = trade.positions[index - 1]
        remaining = open_before - row.quantity
        partial.remaining_quantity = max(remaining, 0)
        if remaining > 0:
            entry, sign = row.entry_price, trade.sign
            exit_price = (trade.exit_notional - notional_before - row.quantity * row.price) / (trade.closed_qty - closed_before - row.quantity)
            partial.remainder_exit_price = exit_price
            partial.remainder_pnl = sign * (exit_price - entry) * remaining
            partial.remainder_pnl_at_partial = sign * (row.price - entry) * remaining
            partial.remainder_gain = partial.remainder_pnl - partial.remainder_pnl_at_partial
        return [row, partial]

    def _outcome(self, trades: TradeBook, trade: TradeState) -> TradeOutcomeRow:
        return self.builder.row(trades, uuid.UUID(trade.trade_id))

    @staticmethod
    def _check_strategy(trade: TradeState, strategy_id: str, what: str) -> None:
        if strategy_id != trade.strategy_id:
            raise InvalidMessage("invalid_value", f"{what}: strategy_id {strategy_id!r} differs from trade {trade.trade_id}'s {trade.strategy_id!r}")

    @staticmethod
    def _config_at(book: DecisionBook, decision: SizingDecision) -> SizingConfigRow | None:
        return next(
            (c for c in reversed(book.configs)
             if c.ts <= decision.ts and (c.portfolio_id, c.strategy_id) == (decision.portfolio_id, decision.strategy_id)),
            None,
        )

    def _advance(self, book: DecisionBook, trades: TradeBook, now_us: int) -> dict[str, int]:
        """Forget what retention allows (see the module docstring); the decisions dropped unjoined, by kind."""
        book.clock_us = max(book.clock_us, now_us, trades.clock_us)
        horizon = book.clock_us - self._retention_us
        unjoined = {}
        for kind, rows in (("sizing", book.sizing), ("exit", book.exits)):
            gone = [i for i, r in rows.items() if epoch_us(r.ts) < horizon and (r.trade_id is None or (
                str(r.trade_id) not in trades.trades and (r.trade_closed_at is None or epoch_us(r.trade_closed_at) < horizon)))]
            dropped = sum(1 for i in gone if rows[i].trade_id is not None and rows[i].trade_closed_at is None)
            if dropped:
                unjoined[kind] = dropped
            for i in gone:
                del rows[i]
        latest: dict[tuple[str, str], SizingConfigRow] = {}
        keep = []
        for config in reversed(book.configs):  # newest first: a config is superseded by the one after it
            pair = (config.portfolio_id, config.strategy_id)
            successor = latest.get(pair)
            if successor is None or epoch_us(successor.ts) >= horizon:
                keep.append(config)
            latest[pair] = config
        book.configs = keep[::-1]
        return unjoined


def _repeated(known: msgspec.Struct | None, inputs: dict, what: str) -> bool:
    """Whether a decision is the ``known`` one again (nothing to do); the same id with other
    values is refused (``conflicting_id``)."""
    if known is None:
        return False
    if {name: getattr(known, name) for name in inputs} != inputs:
        raise InvalidMessage("conflicting_id", f"{what} was made already, with other values")
    return True
