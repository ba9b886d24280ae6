"""Performance statistics: the one place their formulas are defined.

Model predictions (``model_performance``), over validated predictions (expired ones
are not samples), grouped by model_version, model_type and the UTC day of
``predicted_at``:

- ``accuracy``: share of predictions whose direction equals the actual one (three
  classes, LONG/SHORT/NEUTRAL).
- LONG is the positive class: TP = predicted and actual LONG, FP = predicted LONG but
  not actual, FN = actual LONG but not predicted. ``precision = TP/(TP+FP)``,
  ``recall = TP/(TP+FN)``, ``f1 = 2PR/(P+R)`` (0 when P+R = 0); ``None`` when a
  denominator is 0.
- ``auc_roc``: over LONG and SHORT predictions with a confidence, score
  P(LONG) = confidence for LONG and 1 - confidence for SHORT, label actual == LONG;
  the Mann-Whitney U statistic / (positives * negatives), ties counted one half.
  ``None`` unless both labels occur.
- ``brier_score``: mean of (confidence - correct)^2 over predictions with a
  confidence, correct = 1 or 0: the confidence read as the probability of being right.
- ``expected_calibration_error``: the same pairs in ``ECE_BINS`` (10) equal-width
  confidence bins [0, 0.1), [0.1, 0.2) ... [0.9, 1.0] (1.0 in the last):
  sum over bins of (n_bin / n) * |accuracy_bin - mean confidence_bin|.
- ``<regime>_accuracy``: accuracy of the predictions whose symbol was in that regime
  at ``predicted_at`` (the outcome's ``regime``); ``None`` without such predictions.
- A day is kept as sums (``DayTotals``), not as its predictions: counts, the Brier sum,
  each calibration bin's count, hits and confidence sum, and, for the AUC, the positives
  and negatives at each score rounded to ``AUC_STEP`` (1e-4: scores closer than that
  count as ties; a model's confidences rarely carry more digits). A prediction is counted
  once, by its id.

Strategies (``strategy_performance``), over closed trades (``outcome_type`` not OPEN),
grouped by strategy_id, model_version and the DAY, WEEK (ISO, from Monday) or MONTH
that holds the trade's UTC ``exit_time``; trades in (exit_time, trade_id) order:

- counts by outcome; ``gross_profit`` = sum of positive ``net_pnl``, ``gross_loss`` =
  |sum of negative ``net_pnl``| (so both >= 0); ``net_pnl`` and ``total_commission``
  sums.
- ``win_rate = wins / total`` (breakeven trades count in total);
  ``wilson_lower_bound``: the lower end of the Wilson score interval of win_rate,
  z = 1.96: (p + z²/2n - z*sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n).
- ``profit_factor = gross_profit / gross_loss``, ``None`` without losses.
- ``avg_win`` / ``avg_loss``: mean ``net_pnl`` of WIN / LOSS trades (avg_loss <= 0);
  ``avg_trade = net_pnl / total``; ``largest_win`` = max ``net_pnl``, ``largest_loss``
  = min ``net_pnl`` (each ``None`` without such a trade of positive/negative P&L).
- ``expectancy = win_rate * avg_win + loss_rate * avg_loss`` (missing averages are 0):
  breakeven trades count as zero, which is how it differs from avg_trade.
- Returns: r_i = net_pnl_i / ``capital`` (a fixed notional, default 100 000: trades
  carry no account size), per trade, no compounding.
- ``max_drawdown``: equity = capital + cumulative net_pnl, starting at capital; the
  largest (peak - equity) / peak, a fraction. ``max_drawdown_duration_days``: the
  longest stretch under water, from the exit of the trade that first took equity
  below its peak to the exit of the trade that regained it (or the period's last
  trade), whole days rounded down.
- ``sharpe_ratio = mean(r) / stdev(r) * sqrt(N)``, stdev with n - 1, risk-free rate
  0; ``sortino_ratio = mean(r) / sqrt(sum(min(r, 0)²) / n) * sqrt(N)``; both
  **per trade**, annualised with N = trades per year = n * ``days_per_year`` (365) /
  calendar days of the period (1, 7, or the month's length); ``None`` below two trades
  or with zero deviation (below 1e-12).
- ``calmar_ratio = annual return / max_drawdown`` with annual return = sum(r) *
  days_per_year / period days; ``None`` without a drawdown.
- ``avg_slippage``: mean of the trades' ``slippage`` (those that have one).
- The DECIMAL(8, 4) ratios (profit factor, drawdown, Sharpe, Sortino, Calmar) are
  clamped to ±9999.9999 so an extreme value cannot make the row unwritable.

Running totals, so a trade costs the same however many its period holds (``Totals``):
every figure above is a sum, a count, an extreme or Welford's mean and variance, except
the drawdown and its duration, which follow the equity path in exit order. The path
keeps the latest ``REORDER_TRADES`` (128) trades of a group apart, in order, and walks
them for each row; a trade arriving behind all of them (a backlog whose partitions run
days apart) is taken into the path where it arrives. A trade counts once: its id is kept
``late_days`` (``TICKWIRE_STRATEGY_PERFORMANCE_DAYS``, 8) after the strategy's latest exit
day, the time the trade builder may send its row again, and a trade exiting before that
window is ignored. A trade whose entry regimes come after it (its bars behind its fills)
counts in their figures when they come.

Strategies by regime (``regime_performance_stats``), over every closed trade of a
strategy (all model versions, all time), grouped by the regime its symbol was in on
each timeframe when it opened (the trade's ``entry_regimes``; a trade counts once per
timeframe that had a regime):

- counts, gross profit and loss, net P&L, win rate, Wilson lower bound, profit factor,
  expectancy, average win, loss and trade: as for ``strategy_performance``.
- ``max_drawdown``: as for ``strategy_performance``, over the group's trades in
  (exit_time, trade_id) order since its first.
- ``sharpe_ratio = mean(r) / stdev(r) * sqrt(N)``, r as above, N = n * days_per_year /
  the days from the first exit to the last (at least 1).
- Running totals, a trade counted once, as above.

Strategy scores (``strategy_scores``), one per strategy_id, model_version and DAY, WEEK
or MONTH, computed when the period closes (the strategy's first trade exiting on a
later day) and again when a late trade, or a trade's late regimes, change a closed
period; each part is in [0, 1]:

- ``risk_adjusted_score = clamp(sharpe_ratio / 3, 0, 1)``: a Sharpe of 3 scores full
  marks; no Sharpe (fewer than two trades) scores 0.
- ``win_rate_score = wilson_lower_bound``: the win rate the evidence supports.
- ``drawdown_score = 1 - min(max_drawdown / 0.25, 1)``: a quarter of the capital lost
  from a peak scores 0.
- ``consistency_score``: the share of the regimes the period's trades opened in (on
  the base timeframe) whose trades made money (net P&L > 0); ``None`` when no trade
  had a regime.
- ``score = 100 * sum(w * part) / sum(w)`` over the parts present, weights 0.35 risk
  adjusted, 0.25 win rate, 0.2 drawdown, 0.2 consistency.
"""

from __future__ import annotations

import math
from bisect import insort
from calendar import monthrange
from datetime import date, datetime, timedelta, timezone
from typing import Sequence

import msgspec

from tickwire.schemas.market import DAY_US, epoch_us, from_epoch_us
from tickwire.schemas.signals import (
    PERIOD_TYPES, ModelPerformanceRow, PredictionOutcome, RegimePerformanceRow, StrategyPerformanceRow, StrategyScoreRow, TradeOutcomeRow,
)

ECE_BINS = 10
WILSON_Z = 1.96
REGIMES = ("trending_up", "trending_down", "ranging", "volatile")
RATIO_LIMIT = 9999.9999
SCORE_WEIGHTS = {"risk_adjusted": 0.35, "win_rate": 0.25, "drawdown": 0.2, "consistency": 0.2}
FULL_SHARPE = 3.0
ZERO_DRAWDOWN = 0.25
REORDER_TRADES = 128
AUC_STEP = 1e-4


class PredictionSample(msgspec.Struct, array_like=True, frozen=True):
    predicted: str
    actual: str
    confidence: float | None = None
    regime: str | None = None


class TradeSample(msgspec.Struct, array_like=True, frozen=True):
    trade_id: str
    exit_us: int
    net_pnl: float
    commission: float
    outcome: str
    slippage: float | None = None
    regime: str | None = None  # on the base timeframe, when the trade opened


def _div(num: float, den: float) -> float | None:
    return num / den if den else None


def clamp_ratio(value: float | None) -> float | None:
    """A ratio within the DECIMAL(8, 4) columns, so an extreme value cannot make its row unwritable."""
    return None if value is None else max(-RATIO_LIMIT, min(RATIO_LIMIT, value))


class DayTotals(msgspec.Struct, array_like=True):
    """A model's day of validated predictions as sums: its row, whatever the day's count."""

    n: int = 0
    correct: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    scored: int = 0  # with a confidence
    brier_sum: float = 0.0
    bins: list[tuple[int, int, float]] = []  # per calibration bin: (count, hits, confidence sum)
    regimes: dict[str, tuple[int, int]] = {}  # regime -> (count, hits)
    scores: dict[int, tuple[int, int]] = {}  # AUC score / AUC_STEP -> (positives, negatives)

    def add(self, sample: PredictionSample) -> None:
        hit = sample.predicted == sample.actual
        self.n += 1
        self.correct += hit
        self.tp += sample.predicted == "LONG" and sample.actual == "LONG"
        self.fp += sample.predicted == "LONG" and sample.actual != "LONG"
        self.fn += sample.predicted != "LONG" and sample.actual == "LONG"
        if sample.regime is not None:
            count, hits = self.regimes.get(sample.regime, (0, 0))
            self.regimes[sample.regime] = (count + 1, hits + hit)
        confidence = sample.confidence
        if confidence is None:
            return
        self.scored += 1
        self.brier_sum += (confidence - hit) ** 2
        if not self.bins:
            self.bins = [(0, 0, 0.0)] * ECE_BINS
        b = min(int(confidence * ECE_BINS), ECE_BINS - 1)
        count, hits, total = self.bins[b]
        self.bins[b] = (count + 1, hits + hit, total + confidence)
        if sample.predicted in ("LONG", "SHORT"):
            score = round((confidence if sample.predicted == "LONG" else 1.0 - confidence) / AUC_STEP)
            positives, negatives = self.scores.get(score, (0, 0))
            self.scores[score] = (positives + 1, negatives) if sample.actual == "LONG" else (positives, negatives + 1)

    def metrics(self) -> dict[str, float | None]:
        """``classification`` of the day's predictions, from the sums."""
        precision, recall = _div(self.tp, self.tp + self.fp), _div(self.tp, self.tp + self.fn)
        f1 = None if precision is None or recall is None else (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        metrics: dict[str, float | None] = {
            "accuracy": _div(self.correct, self.n), "precision": precision, "recall": recall, "f1_score": f1,
            "auc_roc": self._auc(), "brier_score": _div(self.brier_sum, self.scored),
            "expected_calibration_error": sum(
                count / self.scored * abs(hits / count - total / count) for count, hits, total in self.bins if count
            ) if self.scored else None,
        }
        for regime in REGIMES:
            count, hits = self.regimes.get(regime, (0, 0))
            metrics[f"{regime}_accuracy"] = _div(hits, count)
        return metrics

    def _auc(self) -> float | None:
        positives = sum(p for p, _ in self.scores.values())
        negatives = sum(n for _, n in self.scores.values())
        if not positives or not negatives:
            return None
        below = wins = 0.0
        for score in sorted(self.scores):
            p, n = self.scores[score]
            wins += p * (below + n / 2)
            below += n
        return wins / (positives * negatives)


def wilson_lower_bound(wins: int, n: int, z: float = WILSON_Z) -> float | None:
    if n == 0:
        return None
    p = wins / n
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def outcome_ratios(
    n: int, wins: int, losses: int, win_sum: float, loss_sum: float, gross_profit: float, gross_loss: float
) -> dict[str, float | None]:
    """Win rate, its Wilson lower bound, profit factor, expectancy and the average win and
    loss, from the counts and sums (the module docstring)."""
    avg_win, avg_loss = _div(win_sum, wins), _div(loss_sum, losses)
    return {
        "win_rate": _div(wins, n),
        "wilson_lower_bound": wilson_lower_bound(wins, n),
        "profit_factor": clamp_ratio(_div(gross_profit, gross_loss)),
        "expectancy": None if not n else wins / n * (avg_win or 0.0) + losses / n * (avg_loss or 0.0),
        "avg_win": avg_win,
        "avg_loss": avg_loss,
    }


class EquityPath(msgspec.Struct, array_like=True):
    """The equity curve (capital + cumulative net P&L) through trades taken in
    (exit_time, trade_id) order: its peak, deepest fall from it and longest time under it."""

    cum_pnl: float = 0.0
    peak_pnl: float = 0.0
    max_drawdown: float = 0.0
    under_since: int | None = None  # exit of the trade that first took equity below its peak
    longest_under_us: int = 0

    def step(self, pnl: float, exit_us: int, capital: float) -> None:
        self.cum_pnl += pnl
        if self.cum_pnl >= self.peak_pnl:
            if self.under_since is not None:
                self.longest_under_us = max(self.longest_under_us, exit_us - self.under_since)
            self.peak_pnl, self.under_since = self.cum_pnl, None
        else:
            if self.under_since is None:
                self.under_since = exit_us
            self.max_drawdown = max(self.max_drawdown, (self.peak_pnl - self.cum_pnl) / (capital + self.peak_pnl))


class Totals(msgspec.Struct, array_like=True):
    """A group's running figures, so a trade costs O(1) however many the group holds.

    The sums take trades in any order. The equity path has to take them in exit order: it
    has taken all but the latest ``pending`` (at most ``reorder`` of them, kept in order),
    and a row walks those on top of it; a trade arriving behind every pending one is
    taken where it arrives (the module docstring).
    """

    n: int = 0
    wins: int = 0
    losses: int = 0
    breakevens: int = 0
    gross_profit: float = 0.0
    gross_loss: float = 0.0
    win_sum: float = 0.0
    loss_sum: float = 0.0
    net_pnl: float = 0.0
    commission: float = 0.0
    mean_r: float = 0.0
    m2_r: float = 0.0  # Welford: sum of squared deviations of r from its mean
    downside_sq: float = 0.0  # sum of min(r, 0)²
    largest_win: float | None = None
    largest_loss: float | None = None
    slippage_sum: float = 0.0
    slippages: int = 0
    first_us: int = 0
    last_us: int = 0
    regime_pnl: dict[str, float] = {}  # net P&L by the regime its trades opened in (``TradeSample.regime``)
    path: EquityPath = msgspec.field(default_factory=EquityPath)
    pending: list[tuple[int, str, float]] = []  # (exit µs, trade_id, net P&L) not yet on the path, in order

    def add(self, trade: TradeSample, capital: float, reorder: int) -> None:
        pnl = trade.net_pnl
        self.n += 1
        if trade.outcome == "WIN":
            self.wins, self.win_sum = self.wins + 1, self.win_sum + pnl
        elif trade.outcome == "LOSS":
            self.losses, self.loss_sum = self.losses + 1, self.loss_sum + pnl
        else:
            self.breakevens += 1
        if pnl > 0:
            self.gross_profit += pnl
            self.largest_win = pnl if self.largest_win is None else max(self.largest_win, pnl)
        elif pnl < 0:
            self.gross_loss -= pnl
            self.largest_loss = pnl if self.largest_loss is None else min(self.largest_loss, pnl)
        self.net_pnl += pnl
        self.commission += trade.commission
        r = pnl / capital
        delta = r - self.mean_r
        self.mean_r += delta / self.n
        self.m2_r += delta * (r - self.mean_r)
        self.downside_sq += min(r, 0.0) ** 2
        if trade.slippage is not None:
            self.slippage_sum, self.slippages = self.slippage_sum + trade.slippage, self.slippages + 1
        self.first_us = trade.exit_us if self.n == 1 else min(self.first_us, trade.exit_us)
        self.last_us = max(self.last_us, trade.exit_us)
        if trade.regime is not None:
            self.place(trade.regime, pnl)
        insort(self.pending, (trade.exit_us, trade.trade_id, pnl))
        while len(self.pending) > reorder:
            exit_us, _, oldest = self.pending.pop(0)
            self.path.step(oldest, exit_us, capital)

    def place(self, regime: str, pnl: float) -> None:
        """A trade's regime, known after the trade was added."""
        self.regime_pnl[regime] = self.regime_pnl.get(regime, 0.0) + pnl

    def equity(self, capital: float) -> EquityPath:
        path = msgspec.structs.replace(self.path)
        for exit_us, _, pnl in self.pending:
            path.step(pnl, exit_us, capital)
        return path

    def sharpe(self, per_year: float) -> float | None:
        """mean(r) / stdev(r) * sqrt(per_year); None below two trades or without deviation."""
        if self.n < 2:
            return None
        sd = math.sqrt(self.m2_r / (self.n - 1))
        # Equal returns leave a rounding-sized deviation, not a real one.
        return self.mean_r / sd * math.sqrt(per_year) if sd > 1e-12 else None

    def ratios(self) -> dict[str, float | None]:
        return outcome_ratios(self.n, self.wins, self.losses, self.win_sum, self.loss_sum, self.gross_profit, self.gross_loss)

    def performance(self, *, period_days: int, capital: float, days_per_year: float) -> dict[str, float | int | None]:
        """The strategy_performance metrics of the trades added (see the module docstring)."""
        n = self.n
        path = self.equity(capital)
        under_us = path.longest_under_us
        if path.under_since is not None:
            under_us = max(under_us, self.last_us - path.under_since)
        per_year = n * days_per_year / period_days
        downside = math.sqrt(self.downside_sq / n) if n else 0.0
        sortino = self.mean_r / downside * math.sqrt(per_year) if n >= 2 and downside > 1e-12 else None
        return {
            "total_trades": n,
            "winning_trades": self.wins,
            "losing_trades": self.losses,
            "breakeven_trades": self.breakevens,
            "gross_profit": self.gross_profit,
            "gross_loss": self.gross_loss,
            "net_pnl": self.net_pnl,
            "total_commission": self.commission,
            **self.ratios(),
            "avg_trade": _div(self.net_pnl, n),
            "largest_win": self.largest_win,
            "largest_loss": self.largest_loss,
            "max_drawdown": clamp_ratio(path.max_drawdown) if n else None,
            "max_drawdown_duration_days": under_us // DAY_US if n else None,
            "sharpe_ratio": clamp_ratio(self.sharpe(per_year)),
            "sortino_ratio": clamp_ratio(sortino),
            "calmar_ratio": clamp_ratio(_div(self.net_pnl / capital * days_per_year / period_days, path.max_drawdown)),
            "avg_slippage": _div(self.slippage_sum, self.slippages),
        }


def strategy_stats(
    trades: Sequence[TradeSample], *, period_days: int, capital: float = 100_000.0, days_per_year: float = 365.0
) -> dict[str, float | int | None]:
    """The strategy_performance metrics of closed ``trades`` (see the module docstring)."""
    totals = Totals()
    for trade in trades:
        totals.add(trade, capital, reorder=len(trades))
    return totals.performance(period_days=period_days, capital=capital, days_per_year=days_per_year)


def period_start(day: date, period_type: str) -> date:
    if period_type == "DAY":
        return day
    if period_type == "WEEK":
        return day - timedelta(days=day.weekday())
    if period_type == "MONTH":
        return day.replace(day=1)
    raise ValueError(f"unknown period type {period_type!r}")


def period_days(start: date, period_type: str) -> int:
    return {"DAY": 1, "WEEK": 7}.get(period_type) or monthrange(start.year, start.month)[1]


def period_end(start: date, period_type: str) -> int:
    """The ordinal of the day after the period."""
    return start.toordinal() + period_days(start, period_type)


class ModelPerformanceState(msgspec.Struct):
    """Each (model_version, model_type, day)'s sums; the predictions counted, by id."""

    groups: dict[str, DayTotals] = {}
    latest_day: int = 0  # date.toordinal() of the latest predicted_at seen
    counted: dict[str, int] = {}  # prediction_id -> the ordinal of its day


class ModelPerformance:
    """Adds each validated outcome to its day's sums and makes the day's row from them:
    ``apply`` takes an outcome in and marks its day, ``rows`` makes the marked days' rows,
    so a batch of a model's outcomes makes each day's row once.

    A day is kept ``retention_days`` after the latest predicted_at seen; an outcome
    for an older day is ignored. An outcome is counted once (its prediction's id is
    kept as long as its day), so redelivery changes nothing; the caller may keep the ids
    outside the state (``settled``) and put them back in ``counted``, as for strategies.
    """

    def __init__(self, *, retention_days: int = 35) -> None:
        self.retention_days = retention_days

    def add(self, state: ModelPerformanceState, outcome: PredictionOutcome) -> ModelPerformanceRow | None:
        """``apply`` and ``rows`` for one outcome."""
        due: dict[str, None] = {}
        self.apply(state, outcome, due)
        return next(iter(self.rows(state, due)), None)

    def apply(self, state: ModelPerformanceState, outcome: PredictionOutcome, due: dict[str, None]) -> list[ModelPerformanceRow]:
        """Add ``outcome``'s sample and mark its day in ``due``; no row is due at once."""
        if outcome.validated_at is None or outcome.actual_direction is None:
            return []
        day = outcome.predicted_at.astimezone(timezone.utc).date()
        state.latest_day = max(state.latest_day, day.toordinal())
        horizon = state.latest_day - self.retention_days
        if day.toordinal() < horizon:
            return []
        for key in [k for k in state.groups if date.fromisoformat(k.rsplit("\x1f", 1)[1]).toordinal() < horizon]:
            del state.groups[key]
        for prediction_id in [i for i, counted in state.counted.items() if counted < horizon]:
            del state.counted[prediction_id]
        prediction_id = str(outcome.prediction_id)
        if prediction_id in state.counted:
            return []
        state.counted[prediction_id] = day.toordinal()
        key = "\x1f".join((outcome.model_version, outcome.model_type, day.isoformat()))
        state.groups.setdefault(key, DayTotals()).add(PredictionSample(
            outcome.predicted_direction, outcome.actual_direction, outcome.confidence_score, outcome.regime
        ))
        due[key] = None
        return []

    @staticmethod
    def settled(state: ModelPerformanceState) -> list[str]:
        """Every id counted: an outcome is final."""
        return list(state.counted)

    def expires(self, day: int) -> int:
        """The last latest day a counted id is needed on: after it, its outcome is ignored."""
        return day + self.retention_days

    def rows(self, state: ModelPerformanceState, due: dict[str, None]) -> list[ModelPerformanceRow]:
        rows = []
        for key in due:
            if key in state.groups:
                model_version, model_type, day = key.split("\x1f")
                totals = state.groups[key]
                rows.append(ModelPerformanceRow(
                    model_version=model_version, model_type=model_type, evaluation_date=date.fromisoformat(day),
                    testing_samples=totals.n, **totals.metrics(),
                ))
        return rows


class StrategyPerformanceState(msgspec.Struct):
    """Running totals per (strategy_id, model_version, period type, period start) and per
    (regime, timeframe); the trades counted within the late window, by trade_id."""

    groups: dict[str, Totals] = {}
    latest_day: int = 0  # date.toordinal() of the latest exit seen
    regimes: dict[str, Totals] = {}
    counted: dict[str, int] = {}  # trade_id -> its exit day's ordinal * 2, + 1 once its regimes are counted


StrategyRow = StrategyPerformanceRow | StrategyScoreRow | RegimePerformanceRow
Due = dict[tuple[str, str], str]  # (kind, group key) -> strategy_id: the rows a batch changed


class StrategyPerformance:
    """Adds each closed trade to its DAY, WEEK and MONTH totals and to those of the regimes
    it opened in, scores the periods a trade closes, and makes the rows of what changed.

    ``apply`` takes a trade in and says which rows it changed; ``rows`` makes them, so a
    batch of a strategy's trades makes each row once. A trade is counted once: its id is
    kept ``late_days`` after the strategy's latest exit day, and a trade exiting before
    that window is ignored. A period is dropped once it can no longer change (its end
    before the window). An id counted whole (its regimes too) can change nothing more:
    the caller may keep it outside the state (``settled``; the stage stores each under a
    key of its own) and put it back in ``counted`` when the trade comes again.
    """

    def __init__(
        self, *, capital: float = 100_000.0, days_per_year: float = 365.0, timeframe: str = "1m", late_days: int = 8,
        reorder: int = REORDER_TRADES,
    ) -> None:
        if capital <= 0 or days_per_year <= 0 or late_days < 1 or reorder < 1:
            raise ValueError("capital, days_per_year, late_days and reorder must be positive")
        self.capital = capital
        self.days_per_year = days_per_year
        self.timeframe = timeframe  # the base timeframe: the regime a score's consistency is over
        self.late_days = late_days
        self.reorder = reorder

    @staticmethod
    def settled(state: StrategyPerformanceState) -> list[str]:
        """The ids of the trades counted whole, regimes included."""
        return [trade_id for trade_id, counted in state.counted.items() if counted & 1]

    def expires(self, counted: int) -> int:
        """The last exit day (ordinal) a counted id is needed on: after it, its trade is ignored."""
        return (counted >> 1) + self.late_days - 1

    def add(self, state: StrategyPerformanceState, trade: TradeOutcomeRow) -> list[StrategyRow]:
        """``apply`` and ``rows`` for one trade."""
        due: Due = {}
        closed = self.apply(state, trade, due)
        return closed + self.rows(state, due)

    def apply(self, state: StrategyPerformanceState, trade: TradeOutcomeRow, due: Due) -> list[StrategyScoreRow]:
        """Count ``trade`` in ``state`` and mark in ``due`` the rows that changed; returns the
        scores of the periods it closed, made now since their groups may be dropped."""
        if trade.outcome_type == "OPEN" or trade.exit_time is None:
            return []
        exit_utc = trade.exit_time.astimezone(timezone.utc)
        day = exit_utc.toordinal()
        scores = self._close_periods(state, trade.strategy_id, day) if day > state.latest_day else []
        if day < state.latest_day - self.late_days + 1:
            return scores
        trade_id, regimes = str(trade.trade_id), trade.entry_regimes
        counted = state.counted.get(trade_id)
        if counted is not None and (counted & 1 or regimes is None):
            return scores  # counted already, and its regimes too (or still unknown)
        state.counted[trade_id] = day * 2 + (regimes is not None)
        sample = TradeSample(
            trade_id, epoch_us(exit_utc), trade.net_pnl, trade.commission, trade.outcome_type, trade.slippage,
            (regimes or {}).get(self.timeframe),
        )
        exit_day = exit_utc.date()
        for period_type in PERIOD_TYPES:
            start = period_start(exit_day, period_type)
            key = "\x1f".join((trade.strategy_id, trade.model_version, period_type, start.isoformat()))
            if counted is None:
                state.groups.setdefault(key, Totals()).add(sample, self.capital, self.reorder)
                due[("period", key)] = trade.strategy_id
            elif sample.regime is not None and key in state.groups:
                state.groups[key].place(sample.regime, sample.net_pnl)
            if period_end(start, period_type) <= state.latest_day:  # a late trade: re-score
                due[("score", key)] = trade.strategy_id
        for timeframe, regime in sorted((regimes or {}).items()):
            key = f"{regime}\x1f{timeframe}"
            state.regimes.setdefault(key, Totals()).add(sample, self.capital, self.reorder)
            due[("regime", key)] = trade.strategy_id
        return scores

    def _close_periods(self, state: StrategyPerformanceState, strategy_id: str, day: int) -> list[StrategyScoreRow]:
        """A strategy's first exit on ``day``, a later day than any before: the scores of the
        periods it closes, then the window moves on, dropping what it leaves behind."""
        scores = []
        for key, totals in state.groups.items():
            if state.latest_day < _group_end(key) <= day:
                scores.append(strategy_score(self._performance_row(key, totals), totals))
        state.latest_day = day
        oldest = day - self.late_days + 1
        for key in [key for key in state.groups if _group_end(key) <= oldest]:
            del state.groups[key]
        for trade_id in [trade_id for trade_id, counted in state.counted.items() if counted >> 1 < oldest]:
            del state.counted[trade_id]
        return scores

    def rows(self, state: StrategyPerformanceState, due: Due) -> list[StrategyRow]:
        """The rows ``due`` names, as ``state`` has them now."""
        rows: list[StrategyRow] = []
        for (kind, key), strategy_id in due.items():
            if kind == "regime":
                regime, timeframe = key.split("\x1f")
                rows.append(self._regime_row(strategy_id, regime, timeframe, state.regimes[key]))
            elif key in state.groups:
                row = self._performance_row(key, state.groups[key])
                rows.append(row if kind == "period" else strategy_score(row, state.groups[key]))
        return rows

    def _performance_row(self, key: str, totals: Totals) -> StrategyPerformanceRow:
        strategy_id, model_version, period_type, start_text = key.split("\x1f")
        start = date.fromisoformat(start_text)
        stats = totals.performance(period_days=period_days(start, period_type), capital=self.capital, days_per_year=self.days_per_year)
        return StrategyPerformanceRow(
            strategy_id=strategy_id, model_version=model_version, period_type=period_type, period_start=start, **stats
        )

    def _regime_row(self, strategy_id: str, regime: str, timeframe: str, totals: Totals) -> RegimePerformanceRow:
        n = totals.n
        per_year = n * self.days_per_year / max(1.0, (totals.last_us - totals.first_us) / DAY_US)
        return RegimePerformanceRow(
            strategy_id=strategy_id, regime=regime, timeframe=timeframe, total_trades=n, winning_trades=totals.wins,
            losing_trades=totals.losses, breakeven_trades=totals.breakevens, gross_profit=totals.gross_profit,
            gross_loss=totals.gross_loss, net_pnl=totals.net_pnl, **totals.ratios(),
            avg_trade=totals.net_pnl / n, max_drawdown=clamp_ratio(totals.equity(self.capital).max_drawdown),
            sharpe_ratio=clamp_ratio(totals.sharpe(per_year)),
            first_trade_at=from_epoch_us(totals.first_us), last_trade_at=from_epoch_us(totals.last_us),
        )


def _group_end(key: str) -> int:
    """``period_end`` of a group's period, from its key."""
    _, _, period_type, start_text = key.split("\x1f")
    return period_end(date.fromisoformat(start_text), period_type)


def strategy_score(row: StrategyPerformanceRow, totals: Totals) -> StrategyScoreRow:
    """A closed period's score from its performance row and totals (the module docstring)."""
    by_regime = totals.regime_pnl
    parts = {
        "risk_adjusted": min(1.0, max(0.0, (row.sharpe_ratio or 0.0) / FULL_SHARPE)),
        "win_rate": row.wilson_lower_bound or 0.0,
        "drawdown": 1.0 - min((row.max_drawdown or 0.0) / ZERO_DRAWDOWN, 1.0),
        "consistency": sum(pnl > 0 for pnl in by_regime.values()) / len(by_regime) if by_regime else None,
    }
    present = {name: part for name, part in parts.items() if part is not None}
    score = 100 * sum(SCORE_WEIGHTS[name] * part for name, part in present.items()) / sum(SCORE_WEIGHTS[name] for name in present)
    end = row.period_start + timedelta(days=period_days(row.period_start, row.period_type))
    return StrategyScoreRow(
        strategy_id=row.strategy_id, model_version=row.model_version, period_type=row.period_type, period_start=row.period_start,
        scored_at=datetime(end.year, end.month, end.day, tzinfo=timezone.utc), total_trades=row.total_trades,
        risk_adjusted_score=parts["risk_adjusted"], win_rate_score=parts["win_rate"], drawdown_score=parts["drawdown"],
        consistency_score=parts["consistency"], score=score,
    )
