"""Live cross-symbol correlations per timeframe, and each symbol's bar with its correlation
to the benchmark and to its sector.

Its input, ``md.conditions.by_timeframe.v1``, carries the symbols stage's conditions of the
correlated timeframes packed per timeframe (the key), so one worker sees a timeframe's
every symbol. Symbols arrive from different partitions at different paces, so bars wait
per timestamp (one table key each, so a batch writes what it touched, not the backlog)
until the watermark, the oldest latest-bar time of the symbols heard from within
``correlation_quiet_bars`` of the median symbol, passes them. Redelivery needs no offsets: a redelivered bar
rejoins its open timestamp or is late.

Every symbol gets its benchmark and sector correlation (``Context``, linear in the
symbols). The pairs, groups and conflicts cost the square of the symbols, so each
timeframe keeps them for a universe of at most ``correlation_max_symbols`` (500) besides
the benchmark: those listed in ``correlation_universe``, or else the first seen, a member
silent for ``correlation_quiet_bars`` giving its place up to the next newcomer (logged
once per timeframe when it fills). Which symbols come first depends on arrival order, so
a universe beyond the maximum should be listed. A symbol silent that long also leaves the
watermark's reckoning and the stored latest-bar times.

The groups' and conflicts' threshold follows the benchmark's regime on the timeframe
(``correlation_thresholds``): the regime its bar of an open timestamp carries waits with
that timestamp (one small map per timeframe, of open timestamps only) and goes to the core
when the timestamp closes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import logging

import faust
import msgspec

from tickwire.schemas.correlations import CorrelationEntry
from tickwire.schemas.execution import CorrelatedPairs
from tickwire.schemas.market import EPOCH, Condition, CorrelationContext, timeframe_seconds
from tickwire.schemas.topics import CONDITIONS_BY_TIMEFRAME, CORRELATION_CONTEXT, CORRELATIONS, PORTFOLIO_CONTEXT
from tickwire.streams.correlations import (
    Context, ContextState, CorrelationConfig, Correlations, CorrelationState, load_sectors,
)
from tickwire.streams.stages.portfolios import CONTEXT_KEYS
from tickwire.streams.worker.outbox import Message
from tickwire.streams.worker.stage import Stage, StageContext, StateTable, decode
from tickwire.streams.worker.state import KeyedStates, StateCodec

_US = timedelta(microseconds=1)
log = logging.getLogger("tickwire.worker")
OpenBars = dict[str, tuple[float, float, float, float, int]]  # symbol -> (open, high, low, close, volume)


class _CorrelationStateV1(msgspec.Struct, array_like=True):
    """Layout 1 also kept the core's own open timestamps and late-bar count, never used."""

    symbols: list[str | None] = []
    returns: bytes = b""
    timestamps: list[int] = []
    steps: int = 0
    anchor: int = 0
    last_close: dict[str, float] = {}
    pending: dict[int, dict[str, float]] = {}
    above: dict[int, dict[str, float]] = {}
    late_bars: int = 0


def _core_from_v1(old: _CorrelationStateV1) -> CorrelationState:
    return CorrelationState(old.symbols, old.returns, old.timestamps, old.steps, old.anchor, old.last_close, old.above)


# One table, six kinds of key per timeframe: "<tf>/core" (the pairs), "<tf>/context",
# "<tf>/latest", "<tf>/universe", "<tf>/regimes" and "<tf>/<open timestamp>".
_PARTS = {
    "core": StateCodec(CorrelationState, lambda: None, version=2, upgrades={1: (_CorrelationStateV1, _core_from_v1)}),
    "context": StateCodec(ContextState, lambda: None),
    "latest": StateCodec(dict[str, int], dict),  # symbol -> its latest bar's timestamp
    "universe": StateCodec(list[str], lambda: None),  # the pairs' members, the benchmark aside
    "regimes": StateCodec(dict[int, str], dict),  # open timestamp -> the benchmark's regime in its bar
    "open": StateCodec(OpenBars, dict),
}


class _PartsCodec(StateCodec):
    """Writes each part in its own layout; a timeframe's cores as their snapshots, taken then."""

    def encode(self, value: Any) -> bytes:
        if isinstance(value, Correlations):
            return _PARTS["core"].encode(value.snapshot_state())
        if isinstance(value, Context):
            return _PARTS["context"].encode(value.snapshot_state())
        if isinstance(value, set):
            return _PARTS["universe"].encode(sorted(value))
        return super().encode(value)


class _Window:
    """A timeframe's cores plus the bars waiting for the watermark, as stored in the table."""

    def __init__(self, timeframe: str, core: Correlations, context: Context, open_bars: dict[int, OpenBars],
                 latest: dict[str, int], universe: set[str], regimes: dict[int, str]) -> None:
        self.timeframe, self.core, self.context, self.open, self.latest, self.universe, self.regimes = (
            timeframe, core, context, open_bars, latest, universe, regimes
        )

    def key(self, part: int | str) -> bytes:
        return f"{self.timeframe}/{part}".encode()

    def quiet_before(self, quiet_us: int) -> int:
        """The time before which a symbol's latest bar makes it quiet: ``quiet_us`` before the
        (lower) median symbol's latest bar. The median, not the newest: one symbol far ahead
        (inside the allowed skew) must not make every other look quiet, and close the
        timestamps their next bars belong to."""
        latest = sorted(self.latest.values())
        return latest[(len(latest) - 1) // 2] - quiet_us

    def closable(self, quiet_us: int) -> list[int]:
        """Open timestamps every active symbol has moved past, oldest first."""
        quiet = self.quiet_before(quiet_us)
        watermark = min(t for t in self.latest.values() if t >= quiet)
        return sorted(ts for ts in self.open if ts < watermark)


def restore_window(states: KeyedStates, config: CorrelationConfig, sectors: dict[str, str]) -> _Window:
    """A timeframe's window as last written (a worker's first bar of it, or after a failure)."""
    timeframe = config.timeframe
    prefix = f"{timeframe}/".encode()
    stored = {key[len(prefix):]: value for key, value in states.stored_items() if key.startswith(prefix)}

    def decoded(name: bytes, codec: StateCodec) -> Any:
        return states.decoded(prefix + name, stored[name], codec.decode, codec.default) if name in stored else codec.default()

    core = Correlations(config, decoded(b"core", _PARTS["core"]))
    context = Context(config, decoded(b"context", _PARTS["context"]), sectors=sectors)
    latest = decoded(b"latest", _PARTS["latest"])
    # Before the universe was stored, the latest-bar times were kept for its members only.
    universe = decoded(b"universe", _PARTS["universe"])
    universe = set(latest if universe is None else universe) - {config.benchmark}
    open_bars = {int(ts): decoded(ts, _PARTS["open"]) for ts in stored if ts.isdigit()}
    regimes = decoded(b"regimes", _PARTS["regimes"])
    return _Window(timeframe, core, context, {ts: bars for ts, bars in open_bars.items() if bars}, latest, universe, regimes)


class CorrelationsStage(Stage):
    name = "correlations"
    inputs = (CONDITIONS_BY_TIMEFRAME,)
    table = StateTable("correlation-state", CONDITIONS_BY_TIMEFRAME, _PartsCodec(Any, dict))
    _packed = msgspec.msgpack.Decoder(list[bytes])
    _condition = msgspec.json.Decoder(Condition)

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        super().__init__(context, states)
        settings = context.settings
        self.correlated = set(settings.correlated)
        self.sectors = load_sectors(settings.correlation_sectors_file)
        self.configs = {
            tf: CorrelationConfig(
                timeframe=tf,
                windows=settings.correlation_window_bars,
                min_common=settings.correlation_min_common,
                benchmark=settings.correlation_benchmark,
                threshold=settings.correlation_threshold,
                thresholds=settings.correlation_regime_thresholds,
                snapshot_every=settings.correlation_snapshot_every,
            )
            for tf in self.correlated
        }
        self.quiet_us = {tf: settings.correlation_quiet_bars * timeframe_seconds(tf) * 1_000_000 for tf in self.correlated}
        self.listed, self.max_symbols = settings.correlation_symbols, settings.correlation_max_symbols
        self.benchmark = settings.correlation_benchmark
        self.full: set[str] = set()  # timeframes whose universe filled (logged once each)
        self.windows: dict[str, _Window] = {}  # live per timeframe; rebuilt from the table after a rebalance
        self.late_bars = context.metrics.late_bars
        self.correlations_topic, self.context_topic = context.names[CORRELATIONS], context.names[CORRELATION_CONTEXT]
        # The first timeframe's snapshots, their longest window's pairs at or above the
        # threshold, go to every partition of the portfolios' stage (its pair limit).
        self.risk_timeframe = settings.correlated[0] if settings.correlated else None
        self.risk_window, self.threshold = max(settings.correlation_window_bars), settings.correlation_threshold
        self.portfolio_context_topic = context.names[PORTFOLIO_CONTEXT]

    def forget(self, key: bytes | None) -> None:
        """Rebuilt from the table, not from a half-applied step."""
        prefix = (key or b"") + b"/"
        self.windows.pop((key or b"").decode("utf-8", "replace"), None)
        self.states.forget(lambda k: k.startswith(prefix))

    def assigned(self) -> None:
        super().assigned()
        self.windows.clear()

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        """A pack's bars join their open timestamps; then the timestamps every active symbol
        has moved past are closed (once per pack: each symbol's bars arrive in order, so
        no bar of the pack could still join a timestamp that closes)."""
        # All decoded first: a refused message must leave the state untouched.
        conditions = [decode(self._condition, value) for value in decode(self._packed, event.value)]
        partition = event.message.partition
        touched: dict[str, _Window] = {}
        for condition in conditions:
            timeframe = condition.timeframe
            if timeframe not in self.correlated:
                continue
            window = self.windows.get(timeframe)
            if window is None:
                window = self.windows[timeframe] = restore_window(self.states, self.configs[timeframe], self.sectors)
            if condition.symbol not in window.universe and condition.symbol != self.benchmark:
                self.admit(window, condition.symbol, partition)
            ts_us = (condition.timestamp - EPOCH) // _US
            if window.core.state.timestamps and ts_us <= window.core.state.timestamps[-1]:
                self.late_bars.labels(event.message.topic).inc()
                continue
            bars = window.open.setdefault(ts_us, {})
            bars[condition.symbol] = (condition.open, condition.high, condition.low, condition.close, condition.volume)
            self.states.changed(window.key(ts_us), partition, bars)
            if condition.symbol == self.benchmark and condition.detected_regime is not None:
                window.regimes[ts_us] = condition.detected_regime
                self.states.changed(window.key("regimes"), partition, window.regimes)
            if window.latest.get(condition.symbol, -1) < ts_us:
                window.latest[condition.symbol] = ts_us
                self.states.changed(window.key("latest"), partition, window.latest)
            touched[timeframe] = window
        for timeframe, window in touched.items():
            for stepped in window.closable(self.quiet_us[timeframe]):
                self.close(window, stepped, partition, out)

    def admit(self, window: _Window, symbol: str, partition: int) -> None:
        """Let a symbol outside ``window``'s universe in, if it has room (see the module docstring)."""
        if self.listed:
            if symbol in self.listed:
                window.universe.add(symbol)
                self.states.changed(window.key("universe"), partition, window.universe)
            return
        if len(window.universe) >= self.max_symbols:
            self.forget_quiet(window, partition)
        if len(window.universe) < self.max_symbols:
            window.universe.add(symbol)
            self.states.changed(window.key("universe"), partition, window.universe)
        elif window.timeframe not in self.full:
            self.full.add(window.timeframe)
            log.warning("the %s correlation universe is full at %d symbols: %s and any later newcomer get no pair correlations"
                        " (set TICKWIRE_CORRELATION_UNIVERSE)", window.timeframe, self.max_symbols, symbol)

    def forget_quiet(self, window: _Window, partition: int) -> None:
        """Symbols silent for ``correlation_quiet_bars`` leave the latest-bar times and the universe."""
        quiet = window.quiet_before(self.quiet_us[window.timeframe])
        gone = [s for s, ts in window.latest.items() if ts < quiet and s != self.benchmark]
        for symbol in gone:
            del window.latest[symbol]
            window.universe.discard(symbol)
        if gone:
            self.states.changed(window.key("latest"), partition, window.latest)
            self.states.changed(window.key("universe"), partition, window.universe)

    def close(self, window: _Window, stepped: int, partition: int, out: list[Message]) -> None:
        timeframe, encode = window.timeframe, self.context.encode
        bars = window.open.pop(stepped)
        closes = {symbol: bar[3] for symbol, bar in bars.items()}
        members = {symbol: close for symbol, close in closes.items() if symbol in window.universe or symbol == self.benchmark}
        regime = window.regimes.pop(stepped, None)
        if regime is not None:
            self.states.changed(window.key("regimes"), partition, window.regimes)
        records = window.core.step(stepped, members, regime)
        for record in records:
            out.append((self.correlations_topic, timeframe.encode(), encode(record), []))
        if timeframe == self.risk_timeframe and records:
            pairs = [(r.symbol_a, r.symbol_b, r.value) for r in records if isinstance(r, CorrelationEntry)
                     and r.window_bars == self.risk_window and r.value is not None and abs(r.value) >= self.threshold]
            snapshot = msgspec.msgpack.encode(CorrelatedPairs(stepped, timeframe, self.risk_window, pairs))
            out += [(self.portfolio_context_topic, key, snapshot, []) for key in CONTEXT_KEYS]
        for symbol, (spy, sector) in window.context.step(closes).items():
            o, h, low, c, v = bars[symbol]
            context = CorrelationContext(
                symbol=symbol, timeframe=timeframe, timestamp=EPOCH + stepped * _US,
                open=o, high=h, low=low, close=c, volume=v, spy_correlation=spy, sector_correlation=sector,
            )
            out.append((self.context_topic, symbol.encode(), encode(context), []))
        self.states.delete(window.key(stepped), partition)
        self.states.changed(window.key("core"), partition, window.core)
        self.states.changed(window.key("context"), partition, window.context)
        if window.context.state.steps % window.context.window == 0:
            self.forget_quiet(window, partition)
