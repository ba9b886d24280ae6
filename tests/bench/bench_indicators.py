"""Indicator throughput: our full per-bar update against TA-Lib's and talipp's streaming peers.

Bars of 100 symbols arrive interleaved (one bar of each symbol per minute). Every
figure is the median of several repeats, all measured in the same run, the
contenders' repeats taking turns so that a busy machine slows them alike:

- ours: ``Indicators.update`` on decoded ``Bar`` objects (what an agent does per
  message) and ``Indicators.update_many`` on per-symbol batches (what it does after
  ``stream.take``); all fifteen values (EMA20/50, RSI, ATR, MACD, BB, ADX/+DI/-DI,
  VWAP, volatility), plus the regime in the ``with_regime`` figures: ``FrameCore.update``
  (indicators and regime in one compiled call), kept per symbol, or built from the
  frame's states for every bar (``rebuilt_per_bar``) as ``streams.symbol`` does; and
  ``Indicators.update`` then ``RegimeDetector.update`` (``two_calls``), for comparison;
- TA-Lib 0.8 stream handles (``talib.stream.EMA(history).update(x)``...: the C library
  driven bar by bar; nine handles per symbol for EMA20, EMA50, RSI, ATR, MACD, BBANDS,
  ADX, PLUS_DI, MINUS_DI; no VWAP or volatility, which TA-Lib lacks);
- TA-Lib over a trailing window (the same nine handles opened on the last ``window``
  bars at every bar: how the stream API was used before handles kept state);
- talipp (pure-Python incremental) when installed: EMA, RSI, ATR, MACD, BB, ADX, VWAP.

Every side first warms on the same ``WARM`` bars per symbol, untimed, so the figures
are steady-state per-bar costs.

    python tests/bench/bench_indicators.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
from talib import stream  # noqa: E402

from tickwire.schemas.market import Bar  # noqa: E402
from tickwire.streams.frame import FrameCore  # noqa: E402
from tickwire.streams.indicators import Indicators  # noqa: E402
from tickwire.streams.regimes import RegimeConfig, RegimeDetector, RegimeState  # noqa: E402
from tests.bench._services import emit  # noqa: E402

WARM = 300
T0 = datetime(2026, 5, 4, tzinfo=timezone.utc)
T0_US = int(T0.timestamp()) * 1_000_000


class Market(msgspec.Struct):
    """Columns shaped (symbols, bars); ``ts`` in epoch microseconds."""

    ts: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def market(symbols: int, bars: int, seed: int = 1) -> Market:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, (symbols, bars)), axis=1))
    spread = np.abs(rng.normal(0, 0.002, (symbols, bars))) * close
    ts = np.broadcast_to(T0_US + np.arange(bars, dtype=np.int64) * 60_000_000, (symbols, bars))
    volume = rng.integers(1, 10_000, (symbols, bars)).astype(np.float64)
    return Market(ts, close + spread, close - spread, close, volume)


def median_rates(runs: dict, repeats: int) -> dict[str, float]:
    """Median bars/s of each ``run()`` (which prepares untimed and returns (bars, seconds)),
    the runs taking turns repeat by repeat."""
    rates = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            bars, seconds = run()
            rates[name].append(bars / seconds)
    return {name: statistics.median(r) for name, r in rates.items()}


def warmed(m: Market) -> list[Indicators]:
    out = []
    for s in range(len(m.close)):
        ind = Indicators()
        ind.update_many(m.ts[s, :WARM], m.close[s, :WARM], m.high[s, :WARM], m.low[s, :WARM], m.close[s, :WARM], m.volume[s, :WARM])
        out.append(ind)
    return out


def bar_objects(m: Market) -> list[tuple[int, Bar]]:
    """The post-warm-up bars as decoded messages, in arrival order."""
    symbols, bars = m.close.shape
    return [
        (s, Bar(symbol=f"S{s:03d}", ts=T0 + timedelta(minutes=t), open=float(m.close[s, t - 1]),
                high=float(m.high[s, t]), low=float(m.low[s, t]), close=float(m.close[s, t]), volume=int(m.volume[s, t])))
        for t in range(WARM, bars)
        for s in range(symbols)
    ]


def ours_update(m: Market, messages: list[tuple[int, Bar]]):
    def run():
        indicators = warmed(m)
        start = time.perf_counter()
        for s, bar in messages:
            indicators[s].update(bar)
        return len(messages), time.perf_counter() - start

    return run


def ours_with_regime(m: Market, messages: list[tuple[int, Bar]]):
    def run():
        config = RegimeConfig()
        cores = [FrameCore(config, ind.state, RegimeState()) for ind in warmed(m)]
        start = time.perf_counter()
        for s, bar in messages:
            cores[s].update(bar)
        return len(messages), time.perf_counter() - start

    return run


def ours_rebuilt_per_bar(m: Market, messages: list[tuple[int, Bar]]):
    def run():
        config = RegimeConfig()
        states = [(ind.state, RegimeState()) for ind in warmed(m)]
        start = time.perf_counter()
        for s, bar in messages:
            indicator_state, regime_state = states[s]
            FrameCore(config, indicator_state, regime_state).update(bar)
        return len(messages), time.perf_counter() - start

    return run


def ours_two_calls(m: Market, messages: list[tuple[int, Bar]]):
    def run():
        indicators = warmed(m)
        regimes = [RegimeDetector() for _ in indicators]
        start = time.perf_counter()
        for s, bar in messages:
            values = indicators[s].update(bar)
            regimes[s].update(bar.ts, bar.close, values)
        return len(messages), time.perf_counter() - start

    return run


def ours_update_many(m: Market, batch: int):
    symbols, bars = m.close.shape

    def run():
        indicators = warmed(m)
        start = time.perf_counter()
        for t in range(WARM, bars, batch):
            end = min(t + batch, bars)
            for s, ind in enumerate(indicators):
                ind.update_many(m.ts[s, t:end], m.close[s, t:end], m.high[s, t:end], m.low[s, t:end], m.close[s, t:end], m.volume[s, t:end])
        return symbols * (bars - WARM), time.perf_counter() - start

    return run


def talib_handles(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> tuple:
    return (
        stream.EMA(c, 20), stream.EMA(c, 50), stream.RSI(c, 14), stream.ATR(h, l, c, 14), stream.MACD(c, 12, 26, 9),
        stream.BBANDS(c, 20, 2.0, 2.0, 0), stream.ADX(h, l, c, 14), stream.PLUS_DI(h, l, c, 14), stream.MINUS_DI(h, l, c, 14),
    )


def talib_stateful(m: Market):
    symbols, bars = m.close.shape
    rows = [(m.high[:, t].tolist(), m.low[:, t].tolist(), m.close[:, t].tolist()) for t in range(WARM, bars)]

    def run():
        handles = [talib_handles(m.high[s, :WARM], m.low[s, :WARM], m.close[s, :WARM]) for s in range(symbols)]
        start = time.perf_counter()
        for highs, lows, closes in rows:
            for (e20, e50, rsi, atr, macd, bb, adx, pdi, mdi), h, l, c in zip(handles, highs, lows, closes):
                e20.update(c), e50.update(c), rsi.update(c), atr.update(h, l, c), macd.update(c)
                bb.update(c), adx.update(h, l, c), pdi.update(h, l, c), mdi.update(h, l, c)
        return symbols * len(rows), time.perf_counter() - start

    return run


def talib_trailing_window(m: Market, window: int, bars_timed: int):
    symbols = len(m.close)

    def run():
        start = time.perf_counter()
        for t in range(WARM, WARM + bars_timed):
            for s in range(symbols):
                h, l, c = m.high[s, t - window + 1:t + 1], m.low[s, t - window + 1:t + 1], m.close[s, t - window + 1:t + 1]
                [handle.value for handle in talib_handles(h, l, c)]
        return symbols * bars_timed, time.perf_counter() - start

    return run


def talipp_incremental(m: Market, bars_timed: int):
    from talipp.indicators import ADX, ATR, BB, EMA, MACD, RSI, VWAP
    from talipp.ohlcv import OHLCV

    symbols = len(m.close)

    def indicators(s: int) -> list:
        closes = m.close[s, :WARM].tolist()
        candles = [OHLCV(c, h, l, c, v) for h, l, c, v in zip(m.high[s, :WARM].tolist(), m.low[s, :WARM].tolist(), closes, m.volume[s, :WARM].tolist())]
        return [EMA(20, closes), EMA(50, closes), RSI(14, closes), MACD(12, 26, 9, closes), BB(20, 2.0, closes),
                ATR(14, candles), ADX(14, 14, candles), VWAP(candles)]

    def run():
        per_symbol = [indicators(s) for s in range(symbols)]
        start = time.perf_counter()
        for t in range(WARM, WARM + bars_timed):
            for s, (e20, e50, rsi, macd, bb, atr, adx, vwap) in enumerate(per_symbol):
                c = float(m.close[s, t])
                candle = OHLCV(c, float(m.high[s, t]), float(m.low[s, t]), c, float(m.volume[s, t]))
                e20.add(c), e50.add(c), rsi.add(c), macd.add(c), bb.add(c), atr.add(candle), adx.add(candle), vwap.add(candle)
        return symbols * bars_timed, time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60,000 bars instead of 1,000,000; 3 repeats")
    parser.add_argument("--symbols", type=int, default=100)
    args = parser.parse_args()
    bars_per_symbol = (WARM + 300) if args.quick else (WARM + 10_000)
    repeats = 3 if args.quick else 5
    sampled = 20 if args.quick else 100  # bars per symbol for the slow peers: a rate needs no more
    m = market(args.symbols, bars_per_symbol)
    messages = bar_objects(m)

    runs = {
        "talib": talib_stateful(m),
        "update": ours_update(m, messages),
        "many": ours_update_many(m, batch=100),
        "regime": ours_with_regime(m, messages),
        "rebuilt": ours_rebuilt_per_bar(m, messages),
        "two_calls": ours_two_calls(m, messages),
        "window": talib_trailing_window(m, window=WARM, bars_timed=sampled),
    }
    try:
        runs["talipp"] = talipp_incremental(m, bars_timed=sampled)
    except ImportError:
        print("talipp not installed: no talipp figure", file=sys.stderr)
    rates = median_rates(runs, repeats)
    talib_rate = rates["talib"]
    emit("indicators", "update_bars_per_s", rates["update"], "bars/s", "talib_stream_handles", talib_rate)
    emit("indicators", "update_many_100_bars_per_s", rates["many"], "bars/s", "talib_stream_handles", talib_rate)
    emit("indicators", "update_with_regime_bars_per_s", rates["regime"], "bars/s", "talib_stream_handles", talib_rate)
    emit("indicators", "update_with_regime_rebuilt_per_bar_bars_per_s", rates["rebuilt"], "bars/s", "talib_stream_handles", talib_rate)
    emit("indicators", "update_with_regime_two_calls_bars_per_s", rates["two_calls"], "bars/s", "talib_stream_handles", talib_rate)
    emit("indicators", "update_bars_per_s", rates["update"], "bars/s", f"talib_stream_trailing_{WARM}_bars", rates["window"])
    if "talipp" in rates:
        emit("indicators", "update_with_regime_bars_per_s", rates["regime"], "bars/s", "talipp", rates["talipp"])

    core = FrameCore(RegimeConfig(), warmed(m)[0].state, RegimeState())
    for _, bar in messages[: 200 * args.symbols : args.symbols]:
        core.update(bar)
    state_bytes = len(msgspec.msgpack.encode(core.indicators)) + len(msgspec.msgpack.encode(core.regime))
    emit("indicators", "state_bytes_per_symbol_timeframe", state_bytes, "bytes", "goal", 4096)


if __name__ == "__main__":
    main()
