"""Positions into portfolios and risk events, keyed by portfolio.

The core is idempotent by construction: a position row carries absolute figures and its
pair's ``version``, so a redelivered or stale row changes nothing (no offsets kept, see
``worker.stage.redelivered``).
"""

from __future__ import annotations

import faust
import msgspec

from tickwire.schemas.execution import PositionRow
from tickwire.schemas.topics import PORTFOLIOS, POSITIONS, RISK_EVENTS
from tickwire.streams.portfolios import PortfolioBook, PortfolioLimits, PortfolioState, load_portfolios
from tickwire.streams.worker.outbox import Message
from tickwire.streams.worker.stage import Stage, StageContext, StateTable, decode
from tickwire.streams.worker.state import KeyedStates, StateCodec


class PortfolioStage(Stage):
    name = "portfolios"
    inputs = (POSITIONS,)
    table = StateTable("portfolio", POSITIONS, StateCodec(PortfolioState, PortfolioState))
    _decoder = msgspec.json.Decoder(PositionRow)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        settings = context.settings
        self.portfolios = load_portfolios(settings.portfolios_file, settings.performance_capital)
        # The symbols stage refuses fills of portfolios not listed; a row of one (written
        # before the file changed) is still valued, with the default cash and no limits.
        self.fallback = PortfolioLimits(cash=settings.performance_capital)
        self.book = PortfolioBook()
        self.portfolios_topic, self.risk_topic = context.names[PORTFOLIOS], context.names[RISK_EVENTS]

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        row = decode(self._decoder, event.value)
        key = row.portfolio_id.encode()
        limits = self.portfolios.limits(row.portfolio_id) or self.fallback
        portfolio, risks = self.book.on_position(self.states.get(key), row, limits)
        if portfolio is None:
            self.context.metrics.duplicates.labels(event.message.topic).inc()
            return
        self.states.changed(key, event.message.partition)
        out.append((self.portfolios_topic, key, self.context.encode(portfolio), []))
        for risk in risks:
            if risk.state == "BREACH":
                self.context.metrics.risk_breaches.labels(risk.rule).inc()
            out.append((self.risk_topic, key, self.context.encode(risk), []))
