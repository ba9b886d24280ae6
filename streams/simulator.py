"""A deterministic market simulator: correlated log-normal bars with sector structure and
regime switches, plus a toy strategy that publishes predictions, orders, fills, and its
sizing and exit decisions.

Given a seed it yields the same messages every time, so tests and demos can replay it;
``publish`` sends them for ``tickwire simulate``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import msgspec
import numpy as np
from aiokafka import AIOKafkaProducer

from tickwire.schemas.kafka import start_kafka
from tickwire.schemas.market import Bar, timeframe_seconds
from tickwire.schemas.decisions import ExitDecision, SizingConfig, SizingDecision
from tickwire.schemas.metrics import Metrics
from tickwire.schemas.settings import Settings
from tickwire.schemas.execution import Order
from tickwire.schemas.signals import Fill, Prediction
from tickwire.schemas.topics import BARS, EXITS, FILLS, ORDERS, PREDICTIONS, SIZING

log = logging.getLogger("tickwire.simulator")

# Market regimes the simulator switches between: drift of the market factor per bar (in
# units of bar volatility) and a volatility multiplier. Each bar the regime persists
# with probability 1 - 1/REGIME_MEAN_BARS.
SIM_REGIMES = {"trend_up": (0.3, 1.0), "trend_down": (-0.3, 1.0), "range": (0.0, 0.6), "volatile": (0.0, 3.0)}
REGIME_MEAN_BARS = 240

DEFAULT_SECTORS = {"TECH": ("AAPL", "MSFT", "NVDA", "GOOG"), "ENERGY": ("XOM", "CVX"), "FIN": ("JPM", "GS")}


def default_symbols(count: int) -> list[str]:
    """``SPY`` plus named sector members, then ``SIM0001``... up to ``count``."""
    named = ["SPY"] + [s for members in DEFAULT_SECTORS.values() for s in members]
    return (named + [f"SIM{i:04d}" for i in range(1, count + 1)])[:count]


class MarketSimulator:
    """Bars for ``symbols`` from a one-factor market model plus sector factors."""

    def __init__(
        self,
        symbols: list[str],
        *,
        seed: int = 42,
        timeframe: str = "1m",
        start: datetime | None = None,
        bar_volatility: float = 0.002,
    ) -> None:
        if not symbols:
            raise ValueError("need at least one symbol")
        self.symbols = symbols
        self.timeframe = timeframe
        self.step = timedelta(seconds=timeframe_seconds(timeframe))
        self.ts = start or datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
        self.rng = np.random.default_rng(seed)
        self.vol = bar_volatility
        n = len(symbols)
        self.beta = self.rng.uniform(0.5, 1.5, n)
        self.sector = self.rng.integers(0, 4, n)
        self.prices = self.rng.uniform(20, 500, n)
        self.regime = "range"

    def bars(self, count: int) -> Iterator[Bar]:
        """The next ``count`` time steps, one bar per symbol each."""
        n = len(self.symbols)
        names = list(SIM_REGIMES)
        for _ in range(count):
            if self.rng.random() < 1 / REGIME_MEAN_BARS:
                self.regime = names[int(self.rng.integers(0, len(names)))]
            drift, scale = SIM_REGIMES[self.regime]
            vol = self.vol * scale
            market = self.rng.normal(drift * self.vol, vol)
            sectors = self.rng.normal(0, vol * 0.7, 4)
            returns = self.beta * market + sectors[self.sector] + self.rng.normal(0, vol, n)
            opens = self.prices
            closes = opens * np.exp(returns)
            spread = np.abs(self.rng.normal(0, vol, (2, n))) * opens
            highs = np.maximum(opens, closes) + spread[0]
            lows = np.minimum(opens, closes) - spread[1]
            volumes = self.rng.integers(1_000, 100_000, n)
            for i, symbol in enumerate(self.symbols):
                yield Bar(
                    symbol=symbol,
                    ts=self.ts,
                    timeframe=self.timeframe,
                    open=round(float(opens[i]), 4),
                    high=round(float(highs[i]), 4),
                    low=round(float(lows[i]), 4),
                    close=round(float(closes[i]), 4),
                    volume=int(volumes[i]),
                )
            self.prices = closes
            self.ts += self.step


class ToyStrategy:
    """Momentum on each symbol's last ``lookback`` closes: a prediction every
    ``every`` bars, and a trade (market orders, each filled at once) on each confident
    LONG or SHORT call, in one of ``PORTFOLIOS`` by turns: sized first (a sizing decision,
    after the (portfolio, symbol)'s first configuration), half of it taken off halfway
    through (a partial exit at its target) when it is 20 units or more, the rest closed
    ``horizon_minutes`` after the entry (a time exit). Enough to give every signal and
    execution topic realistic traffic; not a strategy anyone should trade.
    """

    PORTFOLIOS = ("toy-a", "toy-b")

    def __init__(self, *, seed: int = 42, every: int = 15, lookback: int = 10, horizon_minutes: int = 15) -> None:
        self.rng = np.random.default_rng(seed + 1)
        self.every, self.lookback, self.horizon = every, lookback, timedelta(minutes=horizon_minutes)
        self.closes: dict[str, list[float]] = {}
        # symbol -> id, side, exit due, qty, portfolio
        self.open_trades: dict[str, tuple[uuid.UUID, str, datetime, int, str]] = {}
        self.count = self.trades = 0
        self.partials: dict[str, datetime] = {}  # symbol -> when half the trade is taken off
        self.configured: set[tuple[str, str]] = set()  # (portfolio, symbol) with a sizing configuration

    def on_bar(self, bar: Bar) -> list[Prediction | Order | Fill | SizingConfig | SizingDecision | ExitDecision]:
        """Messages this bar triggers, stamped at the bar's close (its ts + 1 timeframe)."""
        closes = self.closes.setdefault(bar.symbol, [])
        closes.append(bar.close)
        del closes[: -self.lookback - 1]
        at = bar.ts + timedelta(seconds=timeframe_seconds(bar.timeframe))
        out: list = []
        trade = self.open_trades.get(bar.symbol)
        if trade is not None and at >= trade[2]:
            trade_id, side, _, qty, portfolio = self.open_trades.pop(bar.symbol)
            self.partials.pop(bar.symbol, None)
            out += self._exit(bar, trade_id, side, qty, at, portfolio, "time", partial=False)
        elif trade is not None and at >= self.partials.get(bar.symbol, trade[2]):
            del self.partials[bar.symbol]
            trade_id, side, due, qty, portfolio = trade
            self.open_trades[bar.symbol] = (trade_id, side, due, qty - qty // 2, portfolio)
            out += self._exit(bar, trade_id, side, qty // 2, at, portfolio, "target", partial=True)
        self.count += 1
        if len(closes) <= self.lookback or self.count % self.every:
            return out
        momentum = closes[-1] / closes[0] - 1
        confidence = float(min(0.99, 0.5 + abs(momentum) * 50 + self.rng.uniform(0, 0.2)))
        direction = "NEUTRAL" if abs(momentum) < 1e-4 else ("LONG" if momentum > 0 else "SHORT")
        prediction = Prediction(
            prediction_id=uuid.UUID(bytes=self.rng.bytes(16), version=4),
            model_version="toy-1.0",
            model_type="momentum",
            symbol=bar.symbol,
            predicted_at=at,
            prediction_horizon_minutes=int(self.horizon.total_seconds() // 60),
            predicted_direction=direction,
            confidence_score=round(confidence, 4),
            predicted_volatility=round(float(np.std(np.diff(np.log(closes)))), 6),
            feature_vector={"momentum": round(momentum, 8), "lookback": self.lookback},
        )
        out.append(prediction)
        if direction != "NEUTRAL" and confidence > 0.6 and bar.symbol not in self.open_trades:
            trade_id = uuid.UUID(bytes=self.rng.bytes(16), version=4)
            side = "BUY" if direction == "LONG" else "SELL"
            qty = int(self.rng.integers(1, 10)) * 10
            portfolio = self.PORTFOLIOS[self.trades % len(self.PORTFOLIOS)]
            self.trades += 1
            self.open_trades[bar.symbol] = (trade_id, side, at + self.horizon, qty, portfolio)
            if qty >= 20:
                self.partials[bar.symbol] = at + self.horizon / 2
            out += self._size(bar, trade_id, qty, at, portfolio, volatility=prediction.predicted_volatility)
            out += self._execute(bar, trade_id, side, qty, at, "e", portfolio)
        return out

    def _size(self, bar: Bar, trade_id: uuid.UUID, qty: int, at: datetime, portfolio: str, *, volatility: float | None) -> list:
        """The decision that sized the trade: a stop two bars' volatility away, the account
        value that risking 0.5% of it over that stop gives ``qty``; the (portfolio, symbol)'s
        configuration before its first decision."""
        out: list = []
        if (portfolio, bar.symbol) not in self.configured:
            self.configured.add((portfolio, bar.symbol))
            out.append(SizingConfig(
                config_id=uuid.uuid5(uuid.NAMESPACE_URL, f"toy-momentum/{portfolio}/{bar.symbol}"), portfolio_id=portfolio,
                strategy_id="toy-momentum", symbol=bar.symbol, ts=at, method="fixed_fractional", risk_per_trade=0.005,
                max_position_fraction=0.2,
            ))
        stop = max(0.01, round(2 * (volatility or 0.001) * bar.close, 4))
        out.append(SizingDecision(
            decision_id=uuid.uuid5(trade_id, "size"), portfolio_id=portfolio, strategy_id="toy-momentum", symbol=bar.symbol,
            trade_id=trade_id, ts=at, account_value=round(qty * stop / 0.005, 2), risk_per_trade=0.005, stop_distance=stop,
            volatility=volatility, quantity=qty,
        ))
        return out

    def _exit(self, bar: Bar, trade_id: uuid.UUID, side: str, qty: int, at: datetime, portfolio: str, reason: str, *,
              partial: bool) -> list:
        """The exit decision of ``qty`` of the trade, and its order and fill."""
        leg = "p" if partial else "x"
        decision = ExitDecision(
            exit_id=uuid.uuid5(trade_id, leg), trade_id=trade_id, strategy_id="toy-momentum", symbol=bar.symbol, ts=at,
            reason=reason, price=bar.close, quantity=qty, partial=partial,
        )
        return [decision, *self._execute(bar, trade_id, "SELL" if side == "BUY" else "BUY", qty, at, leg, portfolio)]

    def _execute(self, bar: Bar, trade_id: uuid.UUID, side: str, qty: int, at: datetime, leg: str, portfolio: str) -> list[Order | Fill]:
        """A market order and the fill that completes it."""
        slip = float(self.rng.uniform(0, 0.0005)) * bar.close
        order_id = f"{trade_id.hex[:16]}-{leg}"
        placed = Order(
            order_id=order_id, portfolio_id=portfolio, strategy_id="toy-momentum", symbol=bar.symbol, event="PLACED", ts=at,
            side=side, quantity=qty, arrival_price=bar.close,
        )
        return [placed, Fill(
            fill_id=order_id,
            portfolio_id=portfolio,
            order_id=order_id,
            trade_id=trade_id,
            strategy_id="toy-momentum",
            model_version="toy-1.0",
            symbol=bar.symbol,
            side=side,
            ts=at,
            price=round(bar.close + (slip if side == "BUY" else -slip), 4),
            quantity=qty,
            commission=round(qty * 0.005, 4),
            decision_price=bar.close,
        )]


# Where each of the toy strategy's messages goes.
SIGNAL_TOPICS = {
    Prediction: PREDICTIONS, Order: ORDERS, Fill: FILLS, SizingConfig: SIZING, SizingDecision: SIZING, ExitDecision: EXITS,
}


async def publish(
    settings: Settings, metrics: Metrics, *, symbols: int, bars: int = 0, rate: float = 0.0, seed: int = 42,
    start: datetime | None = None, signals: bool = True, timeframe: str | None = None,
) -> None:
    """Send ``bars`` simulated bars per symbol (0: until cancelled) at ``rate`` bars/s (0: at
    once), with the toy strategy's predictions and fills unless ``signals`` is off."""
    topic = settings.topic(BARS.name)
    signal_topics = {kind: settings.topic(spec.name) for kind, spec in SIGNAL_TOPICS.items()}
    producer = AIOKafkaProducer(**settings.kafka_options(), linger_ms=5, acks="all")
    await start_kafka(settings, producer)
    encode = msgspec.json.Encoder().encode
    # Default start: far enough back that a fast simulation stays behind the wall clock.
    start = start or (datetime.now(timezone.utc) - timedelta(days=30)).replace(second=0, microsecond=0)
    simulator = MarketSimulator(default_symbols(symbols), seed=seed, start=start, timeframe=timeframe or settings.base_timeframe)
    strategy = ToyStrategy(seed=seed) if signals else None
    sent = 0
    started = time.monotonic()
    try:
        while bars == 0 or sent < bars * symbols:
            for bar in simulator.bars(1):
                key = bar.symbol.encode()
                await producer.send(topic, key=key, value=encode(bar))
                sent += 1
                for message in strategy.on_bar(bar) if strategy else ():
                    name = signal_topics[type(message)]
                    await producer.send(name, key=key, value=encode(message))
                    metrics.produced.labels(name).inc()
            metrics.produced.labels(topic).inc(symbols)
            if rate:
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    log.info("published %d bars to %s", sent, topic)
