"""Predictions validated against the market, per symbol, in event time.

Prices: the validator follows one timeframe of the symbol's bars (``timeframe``,
default 1m). A bar's close is known at its **close time** = open time + timeframe;
every time below is a close time.

- **Base**: the close at or before ``predicted_at`` (the last bar that closed by then).
- **End**: the first close at or after ``due = predicted_at + horizon``.
- ``actual_return = end / base - 1``; ``actual_direction`` is LONG above
  ``+neutral_band``, SHORT below ``-neutral_band``, NEUTRAL within it (bounds included;
  the band is a relative return, default 0.0005 = 5 bp).
- ``prediction_accuracy = predicted_direction == actual_direction``.
- ``validated_at`` is the close time of the end bar: event time, so a replay gives the
  same row whenever it runs.
- The outcome's ``regime`` is the base bar's ``detected_regime`` (when the bars are
  conditions from ``md.conditions.v1``; plain bars carry none).

Late predictions: the last ``max_history_bars`` closes of the symbol are kept (default
20 000, two weeks of 1m bars), so a prediction arriving after its horizon validates at
once. A prediction older than that history expires with ``history_exceeded``; one with
no bar at or before ``predicted_at`` although later bars exist expires with
``no_price_before_prediction``. A pending prediction stores its base as soon as it is
known, so trimming the history never strands it.

Expiry clock: the symbol's own latest close time, or the ``watermark`` the wiring
passes to ``expire`` (the worker's latest bar close time over all its symbols), the
later of the two; never the wall clock. A pending prediction expires with
``no_price_after_horizon`` when that clock passes ``due + expire_after_s`` (default
one day). A late bar of a quiet symbol can thus lose to the watermark only when it is
more than ``expire_after_s`` late.

Idempotence: a prediction_id seen before is a duplicate: while pending its row is sent
again; after it was final it is remembered for ``dedupe_retention_s`` beyond its
expiry deadline and ignored, except that a redelivery of the last prediction re-sends its row when it
was final at once (the send may have been lost in a crash). Bars
behave the same: a bar at the last close time re-sends what it produced, an older
bar is ignored.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import datetime
from typing import Iterable, NamedTuple

import msgspec

from tickwire.schemas.market import Bar, Condition, epoch_us, from_epoch_us, timeframe_seconds
from tickwire.schemas.signals import ModelPredictionRow, Prediction, PredictionOutcome

_NEVER = -(2**62)



class ValidatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    timeframe: str = "1m"
    neutral_band: float = 0.0005
    max_history_bars: int = 20_000
    expire_after_s: float = 86_400.0
    dedupe_retention_s: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.neutral_band < 1.0:
            raise ValueError("neutral_band must be in [0, 1)")
        if self.max_history_bars < 1 or self.expire_after_s < 0 or self.dedupe_retention_s < 0:
            raise ValueError("max_history_bars must be positive, expire_after_s and dedupe_retention_s not negative")
        timeframe_seconds(self.timeframe)


class Pending(msgspec.Struct, array_like=True):
    row: ModelPredictionRow
    due_us: int
    deadline_us: int
    base_close: float | None = None
    regime: str | None = None


class PredictionState(msgspec.Struct):
    """One symbol: its recent closes, pending predictions and what it already decided."""

    closes_us: list[int] = []
    closes: list[float] = []
    regimes: list[str | None] = []
    truncated: bool = False
    clock_us: int = _NEVER
    pending: dict[str, Pending] = {}
    done: dict[str, int] = {}  # prediction_id -> event time after which it is forgotten
    last_bar_us: int = _NEVER
    last_bar_outputs: list[PredictionOutcome] = []
    last_prediction_id: str = ""
    last_prediction_outputs: list[PredictionOutcome] = []


class PredictionResult(NamedTuple):
    outputs: list[PredictionOutcome]
    duplicate: bool


class PredictionValidator:
    """The rules in the module docstring, over a ``PredictionState`` the caller keeps."""

    def __init__(self, config: ValidatorConfig | None = None) -> None:
        self.config = config or ValidatorConfig()
        self._timeframe_us = timeframe_seconds(self.config.timeframe) * 1_000_000

    def on_prediction(self, state: PredictionState, prediction: Prediction) -> PredictionResult:
        """Accept a validated prediction: its pending row, or its final row when the bars are there."""
        pid = str(prediction.prediction_id)
        if pid in state.pending:
            return PredictionResult([_outcome(state.pending[pid])], True)
        if pid in state.done:
            return PredictionResult(list(state.last_prediction_outputs) if pid == state.last_prediction_id else [], True)
        predicted_us = epoch_us(prediction.predicted_at)
        due_us = predicted_us + prediction.prediction_horizon_minutes * 60_000_000
        item = Pending(
            ModelPredictionRow.pending(prediction), due_us, due_us + int(self.config.expire_after_s * 1_000_000)
        )
        output = self._settle_late(state, item, predicted_us)
        state.last_prediction_id = pid
        if output is None:
            state.pending[pid] = item
            output = _outcome(item)
            # Its final row will come from a bar, whose redelivery re-sends it.
            state.last_prediction_outputs = []
        else:
            self._forget_later(state, item)
            state.last_prediction_outputs = [output]
        return PredictionResult([output], False)

    def on_bar(self, state: PredictionState, bar: Bar | Condition) -> list[PredictionOutcome]:
        """Feed one bar (or condition, which carries the regime) of the symbol; other timeframes are ignored."""
        if bar.timeframe != self.config.timeframe:
            return []
        ts = bar.ts if isinstance(bar, Bar) else bar.timestamp
        regime = bar.detected_regime if isinstance(bar, Condition) else None
        return self.on_close(state, epoch_us(ts) + self._timeframe_us, bar.close, regime)

    def on_bars(self, state: PredictionState, bars: Iterable[Bar | Condition]) -> list[PredictionOutcome]:
        """Batch form of ``on_bar``: the same outputs as one call per bar."""
        out: list[PredictionOutcome] = []
        for bar in bars:
            out.extend(self.on_bar(state, bar))
        return out

    def on_close(self, state: PredictionState, close_us: int, close: float, regime: str | None = None) -> list[PredictionOutcome]:
        """Feed one close at ``close_us`` (µs since the epoch, the bar's close time)."""
        if close_us == state.last_bar_us:
            return list(state.last_bar_outputs)
        if close_us < state.last_bar_us:
            return []
        state.closes_us.append(close_us)
        state.closes.append(close)
        state.regimes.append(regime)
        excess = len(state.closes_us) - self.config.max_history_bars
        if excess > 0:
            del state.closes_us[:excess], state.closes[:excess], state.regimes[:excess]
            state.truncated = True
        out: list[PredictionOutcome] = []
        for pid, item in list(state.pending.items()):
            predicted_us = epoch_us(item.row.predicted_at)
            if item.base_close is None and close_us > predicted_us:
                reason = self._find_base(state, item, predicted_us)
                if reason is not None:
                    out.append(self._finish(state, pid, item, expiry_reason=reason))
                    continue
            if item.base_close is not None and close_us >= item.due_us:
                self._validate(item, close, close_us)
                out.append(self._finish(state, pid, item))
        out.extend(self._advance(state, close_us))
        state.last_bar_us = close_us
        state.last_bar_outputs = out
        return out

    def expire(self, state: PredictionState, watermark: datetime) -> list[PredictionOutcome]:
        """Move the expiry clock to ``watermark`` (if later) and expire what is overdue."""
        return self._advance(state, epoch_us(watermark))

    def _advance(self, state: PredictionState, now_us: int) -> list[PredictionOutcome]:
        state.clock_us = max(state.clock_us, now_us)
        out = [
            self._finish(state, pid, item, expiry_reason="no_price_after_horizon")
            for pid, item in list(state.pending.items())
            if state.clock_us > item.deadline_us
        ]
        for pid in [pid for pid, forget_us in state.done.items() if state.clock_us > forget_us]:
            del state.done[pid]
        return out

    def _settle_late(self, state: PredictionState, item: Pending, predicted_us: int) -> PredictionOutcome | None:
        """A final outcome if history already decides the prediction, else ``None`` (it waits)."""
        closes_us = state.closes_us
        if closes_us and closes_us[-1] > predicted_us:
            reason = self._find_base(state, item, predicted_us)
            if reason is not None:
                return _expired(item, reason)
            i = bisect_left(closes_us, item.due_us)
            if i < len(closes_us):
                self._validate(item, state.closes[i], closes_us[i])
                return _outcome(item)
        if state.clock_us > item.deadline_us:
            return _expired(item, "no_price_after_horizon")
        return None

    def _find_base(self, state: PredictionState, item: Pending, predicted_us: int) -> str | None:
        """Store the base close in ``item``; return an expiry reason when there is none."""
        i = bisect_right(state.closes_us, predicted_us) - 1
        if i >= 0:
            item.base_close = state.closes[i]
            item.regime = state.regimes[i]
            return None
        return "history_exceeded" if state.truncated else "no_price_before_prediction"

    def _validate(self, item: Pending, end_close: float, end_us: int) -> None:
        assert item.base_close is not None
        ret = end_close / item.base_close - 1.0
        band = self.config.neutral_band
        direction = "LONG" if ret > band else "SHORT" if ret < -band else "NEUTRAL"
        row = item.row
        row.actual_return = ret
        row.actual_direction = direction
        row.prediction_accuracy = row.predicted_direction == direction
        row.validated_at = from_epoch_us(end_us)

    def _finish(self, state: PredictionState, pid: str, item: Pending, *, expiry_reason: str | None = None) -> PredictionOutcome:
        del state.pending[pid]
        self._forget_later(state, item)
        return _expired(item, expiry_reason) if expiry_reason else _outcome(item)

    def _forget_later(self, state: PredictionState, item: Pending) -> None:
        state.done[str(item.row.prediction_id)] = item.deadline_us + int(self.config.dedupe_retention_s * 1_000_000)


def _expired(item: Pending, reason: str) -> PredictionOutcome:
    item.row.expiry_reason = reason
    return _outcome(item)


def _outcome(item: Pending) -> PredictionOutcome:
    return PredictionOutcome(**msgspec.structs.asdict(item.row), regime=item.regime)
