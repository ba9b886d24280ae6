"""Positions into portfolios, their performance and risk events, keyed by portfolio.

The core is idempotent by construction: a position row carries absolute figures and its
pair's ``version``, so a redelivered or stale row changes nothing (no offsets kept, see
``worker.stage.redelivered``); a benchmark close or a correlation snapshot is kept by its
time, so one sent again changes nothing either. Each partition keeps its copy of both
under a key of its own (``CONTEXT_KEYS``), which the symbols and correlation stages send to.

A batch publishes one update per portfolio, its last (``finish``): each update carries
absolute figures, so the last holds every position row the batch applied, and a bar of
each of a portfolio's symbols in one batch costs one portfolio update, not ten.
"""

from __future__ import annotations

import faust
import msgspec

from tickwire.schemas.execution import BenchmarkClose, PortfolioContext, PositionRow
from tickwire.schemas.topics import PORTFOLIO_CONTEXT, PORTFOLIO_PERFORMANCE, PORTFOLIOS, POSITIONS, RISK_EVENTS
from tickwire.streams.portfolios import PortfolioBook, PortfolioLimits, PortfolioState, load_portfolios
from tickwire.streams.worker.outbox import Message, partition_keys, partition_of
from tickwire.streams.worker.stage import Stage, StageContext, StateTable, decode
from tickwire.streams.worker.state import KeyedStates, StateCodec

# One key per partition: each partition's copy of the benchmark's closes and correlated pairs.
CONTEXT_KEYS = partition_keys("context", PORTFOLIO_CONTEXT.partitions)


class PortfolioStage(Stage):
    name = "portfolios"
    inputs = (POSITIONS, PORTFOLIO_CONTEXT)
    table = StateTable("portfolio", POSITIONS, StateCodec(PortfolioState, PortfolioState))
    _decoder = msgspec.json.Decoder(PositionRow)
    _context_decoder = msgspec.msgpack.Decoder(PortfolioContext)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        settings = context.settings
        self.portfolios = load_portfolios(settings.portfolios_file, settings.performance_capital, settings.correlation_threshold)
        # The symbols stage refuses fills of portfolios not listed; a row of one (written
        # before the file changed) is still valued, with the default cash and no limits.
        self.fallback = PortfolioLimits(cash=settings.performance_capital)
        self.book = PortfolioBook()
        names = context.names
        self.portfolios_topic, self.risk_topic = names[PORTFOLIOS], names[RISK_EVENTS]
        self.performance_topic, self.context_topic = names[PORTFOLIO_PERFORMANCE], names[PORTFOLIO_CONTEXT]

    def finish(self, out: list[Message]) -> list[Message]:
        last = {message[1]: i for i, message in enumerate(out) if message[0] == self.portfolios_topic}
        return [message for i, message in enumerate(out) if message[0] != self.portfolios_topic or last[message[1]] == i]

    def report_closed_days(self, partition: int, context: PortfolioState, out: list[Message]) -> None:
        """The performance rows a benchmark close made due, of every portfolio of its
        partition: one whose positions stay still has no update to send them with."""
        for key, _ in self.states.stored_items():
            if key in CONTEXT_KEYS or partition_of(key, POSITIONS.partitions) != partition:
                continue
            state = self.states.get(key)
            rows = self.book.closed_days(state, key.decode(), context.benchmark) if state.days else []
            if rows:
                self.states.changed(key, partition)
                out += [(self.performance_topic, key, self.context.encode(row), []) for row in rows]

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        message = event.message
        if message.topic == self.context_topic:
            context, state = decode(self._context_decoder, event.value), self.states.get(message.key)
            if isinstance(context, BenchmarkClose):
                self.book.on_benchmark(state, context.close_us, context.close)
                self.report_closed_days(message.partition, state, out)
            else:
                self.book.on_pairs(state, context.timestamp_us, context.pairs)
            self.states.changed(message.key, message.partition)
            return
        row = decode(self._decoder, event.value)
        key = row.portfolio_id.encode()
        limits = self.portfolios.limits(row.portfolio_id) or self.fallback
        change = self.book.on_position(self.states.get(key), row, limits, self.states.get(CONTEXT_KEYS[message.partition]))
        if change.portfolio is None:
            self.context.metrics.duplicates.labels(message.topic).inc()
            return
        self.states.changed(key, message.partition)
        out.append((self.portfolios_topic, key, self.context.encode(change.portfolio), []))
        for risk in change.risks:
            if risk.state == "BREACH":
                self.context.metrics.risk_breaches.labels(risk.rule).inc()
            out.append((self.risk_topic, key, self.context.encode(risk), []))
        for performance in change.performance:
            out.append((self.performance_topic, key, self.context.encode(performance), []))
