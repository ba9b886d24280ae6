"""A deterministic market simulator: correlated log-normal bars with sector structure.

Pure: given a seed it yields the same bars every time, so tests and demos can replay it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import numpy as np

from schemas.market import Bar, timeframe_seconds

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

    def bars(self, count: int) -> Iterator[Bar]:
        """The next ``count`` time steps, one bar per symbol each."""
        n = len(self.symbols)
        for _ in range(count):
            market = self.rng.normal(0, self.vol)
            sectors = self.rng.normal(0, self.vol * 0.7, 4)
            returns = self.beta * market + sectors[self.sector] + self.rng.normal(0, self.vol, n)
            opens = self.prices
            closes = opens * np.exp(returns)
            spread = np.abs(self.rng.normal(0, self.vol, (2, n))) * opens
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
