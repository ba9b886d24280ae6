"""The machine-readable contract: JSON Schemas that accept every topic's messages as
Tickwire's own cores make them and refuse what the codecs refuse, and an AsyncAPI
document whose references all resolve."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import jsonschema
import msgspec
import pytest

from tickwire.schemas.contract import INPUTS, OUTPUTS, schema_version, write
from tickwire.schemas.decisions import ExitDecision, SizingConfig, SizingDecision
from tickwire.schemas.execution import AuditRow, Order
from tickwire.schemas.market import CorrelationContext
from tickwire.schemas.signals import Prediction, RegimePerformanceRow, StrategyPerformanceRow, StrategyScoreRow
from tickwire.schemas.topics import (
    ALL, AUDIT, BARS, CONDITIONS, CONDITIONS_BY_TIMEFRAME, CORRELATIONS, CORRELATION_CONTEXT, DECISION_HISTORY, DLQ,
    EXITS, EXPIRY_TICKS, FILLS, MODEL_PERFORMANCE, MTF, ORDERS, ORDER_UPDATES, OUTCOMES, PORTFOLIOS, PORTFOLIO_CONTEXT,
    PORTFOLIO_PERFORMANCE, POSITIONS, PREDICTIONS, REGIMES, REGIME_PERFORMANCE, RISK_EVENTS, SIZING,
    STRATEGY_PERFORMANCE, STRATEGY_SCORES, TRADES, TRADE_OUTCOMES,
)
from tickwire.schemas.trades import Trade
from tickwire.streams.correlations import Context, CorrelationConfig, Correlations
from tickwire.streams.decisions import DecisionBook, DecisionJoiner
from tickwire.streams.fills import TradeBook, TradeBuilder
from tickwire.streams.orders import OrderBook, OrderTracker
from tickwire.streams.portfolios import Day, PortfolioBook, PortfolioLimits, PortfolioState, performance_rows
from tickwire.streams.positions import PositionBook, PositionKeeper
from tickwire.streams.performance import ModelPerformance, ModelPerformanceState, StrategyPerformance, StrategyPerformanceState
from tickwire.streams.predictions import PredictionState, PredictionValidator
from tickwire.streams.simulator import MarketSimulator, ToyStrategy
from tickwire.streams.symbol import SymbolProcessor, SymbolState


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    out = tmp_path_factory.mktemp("contract")
    write(out)
    return out


def validator(contract, topic) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((contract / f"{topic.name}.schema.json").read_text()))


def test_every_public_topic_has_a_schema_and_the_asyncapi_document_points_at_them(contract):
    public = set(ALL) - {CONDITIONS_BY_TIMEFRAME, EXPIRY_TICKS, PORTFOLIO_CONTEXT, DLQ}  # internal, and the DLQ's bytes are the producer's
    assert set(INPUTS) | set(OUTPUTS) == public
    document = json.loads((contract / "asyncapi.json").read_text())
    assert set(document["channels"]) == {t.name for t in public} | {DLQ.name}
    for name, message in document["components"]["messages"].items():
        assert (contract / message["payload"]["$ref"]).is_file(), name
    bars = document["channels"][BARS.name]
    assert bars["bindings"]["kafka"]["partitions"] == BARS.partitions and "publish" in bars


def examples() -> dict:
    """topic -> messages Tickwire's own cores and simulator make for it."""
    start = datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)
    bars = list(MarketSimulator(["SPY", "AAPL", "MSFT"], seed=1, start=start).bars(300))
    strategy, processor, states = ToyStrategy(seed=1), SymbolProcessor(), {}
    validator, builder, predictions, books = PredictionValidator(), TradeBuilder(), {}, {}
    models, strategies = (ModelPerformance(), ModelPerformanceState()), (StrategyPerformance(), StrategyPerformanceState())
    config = CorrelationConfig(timeframe="1m", snapshot_every=1)
    core, context = Correlations(config), Context(config)
    orders, order_books, keeper, positions = OrderTracker(), {}, PositionKeeper(), {}
    portfolio_book, portfolio_states, limits = PortfolioBook(), {}, PortfolioLimits(max_position_value=1.0)
    joiner, decision_books = DecisionJoiner(builder), {}
    found: dict = {topic: [] for topic in {**INPUTS, **OUTPUTS}}
    strategy_rows: list = []
    found[TRADES].append(Trade(symbol="AAPL", ts=start, price=10.5, size=3, trade_id="t-1"))
    for bar in bars:
        found[BARS].append(bar)
        outputs, _ = processor.process(states.setdefault(bar.symbol, SymbolState()), bar)
        for kind, value in outputs:
            found[{"condition": CONDITIONS, "regime": REGIMES, "mtf": MTF}[kind]].append(json.loads(value))
        outcomes = validator.on_bar(predictions.setdefault(bar.symbol, PredictionState()), bar)
        for message in strategy.on_bar(bar):
            if isinstance(message, Prediction):
                found[PREDICTIONS].append(message)
                outcomes += validator.on_prediction(predictions.setdefault(message.symbol, PredictionState()), message).outputs
            elif isinstance(message, Order):
                found[ORDERS].append(message)
                found[ORDER_UPDATES] += orders.on_order(order_books.setdefault(message.symbol, OrderBook()), message)
            elif isinstance(message, (SizingConfig, SizingDecision, ExitDecision)):
                found[EXITS if isinstance(message, ExitDecision) else SIZING].append(message)
                decisions, trades = decision_books.setdefault(message.symbol, DecisionBook()), books.setdefault(message.symbol, TradeBook())
                apply = {SizingConfig: joiner.on_config, SizingDecision: joiner.on_sizing, ExitDecision: joiner.on_exit}[type(message)]
                found[DECISION_HISTORY] += apply(decisions, trades, message).rows
            else:
                found[FILLS].append(message)
                book = books.setdefault(message.symbol, TradeBook())
                trade = builder.on_fill(book, message).row
                trade = next(iter(builder.place_regimes(book, states[message.symbol].regimes.at)), trade)
                found[TRADE_OUTCOMES].append(trade)
                found[DECISION_HISTORY] += joiner.on_trade(decision_books.setdefault(message.symbol, DecisionBook()), books[message.symbol], trade.trade_id).rows
                strategy_rows += strategies[0].add(strategies[1], trade)
                found[ORDER_UPDATES] += [u for u in [orders.apply_fill(order_books[message.symbol], message)] if u]
                position = keeper.apply_fill(positions.setdefault(message.symbol, PositionBook()), message)
                found[POSITIONS].append(position)
                change = portfolio_book.on_position(portfolio_states.setdefault(position.portfolio_id, PortfolioState()), position, limits)
                found[PORTFOLIOS].append(change.portfolio)
                found[RISK_EVENTS] += change.risks
                found[AUDIT].append(AuditRow(
                    source_topic=FILLS.name, source_partition=0, source_offset=len(found[FILLS]), kind="POSITION",
                    subject=position.portfolio_id, ts=position.ts, portfolio_id=position.portfolio_id, symbol=position.symbol,
                    payload=msgspec.to_builtins(position),
                ))
        for outcome in outcomes:
            found[OUTCOMES].append(outcome)
            found[MODEL_PERFORMANCE] += [row for row in [models[0].add(models[1], outcome)] if row is not None]
        if bar.symbol == "MSFT":  # the last of each step
            closes = {b.symbol: b.close for b in bars if b.ts == bar.ts}
            found[CORRELATIONS] += core.step(int(bar.ts.timestamp() * 1e6), closes)
            for symbol, (spy, sector) in context.step(closes).items():
                found[CORRELATION_CONTEXT].append(CorrelationContext(
                    symbol=symbol, timeframe="1m", timestamp=bar.ts, open=bar.open, high=bar.high, low=bar.low, close=bar.close,
                    volume=bar.volume, spy_correlation=spy, sector_correlation=sector,
                ))
    # A trade the next day closes the first day's periods: their scores.
    last = max((t for t in found[TRADE_OUTCOMES] if t.exit_time), key=lambda t: t.exit_time)
    next_day = last.exit_time + timedelta(days=1)
    strategy_rows += strategies[0].add(strategies[1], msgspec.structs.replace(
        last, trade_id=uuid.UUID(int=1), entry_time=next_day - timedelta(minutes=5), exit_time=next_day
    ))
    for row_type, topic in ((StrategyPerformanceRow, STRATEGY_PERFORMANCE), (StrategyScoreRow, STRATEGY_SCORES), (RegimePerformanceRow, REGIME_PERFORMANCE)):
        found[topic] += [row for row in strategy_rows if isinstance(row, row_type)]
    # A month of a portfolio's days, the benchmark's beside them.
    days = [Day(20_000 + n, 1e5 + n, 1e5 + 50 * (n % 3), 1e5 + 60 * (n % 3), 0.001 * (n % 2)) for n in range(31)]
    found[PORTFOLIO_PERFORMANCE] += performance_rows("toy-a", days, {20_000 + n: 400.0 + (n % 4) for n in range(31)})
    return found


def test_every_topics_messages_as_tickwire_makes_them_pass_its_schema(contract):
    found = examples()
    assert all(found.values()), [topic.name for topic, messages in found.items() if not messages]
    for topic, messages in found.items():
        check = validator(contract, topic)
        for message in messages:
            check.validate(message if isinstance(message, dict) else json.loads(msgspec.json.encode(message)))


def test_the_schemas_refuse_what_the_codecs_refuse(contract):
    bar = MarketSimulator(["AAPL"], seed=1, start=datetime(2026, 3, 2, tzinfo=timezone.utc)).bars(1).__next__()
    good, bar_schema = json.loads(msgspec.json.encode(bar)), validator(contract, BARS)
    assert bar_schema.is_valid(good)
    for bad in ({**good, "symbol": "AAPL\n"}, {**good, "volume": -1}, {**good, "extra": 1}, {k: v for k, v in good.items() if k != "close"}):
        assert not bar_schema.is_valid(bad), bad


def test_a_topics_schema_version_is_its_names():
    assert schema_version(BARS) == b"1" and schema_version("tw_x.tickwire.conditions_by_timeframe.v2") == b"2"
