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
- Bounded state: a trade's row can still change while the trade builder remembers it
  (7 days after its exit), so trades stay apart, by trade_id, until ``settle_days``
  (8) after their exit day, then fold into running totals (Welford's mean and
  variance, the equity's peak and drawdown) and are forgotten; a trade older than that
  is ignored.

Strategy scores (``strategy_scores``), one per strategy_id, model_version and DAY, WEEK
or MONTH, computed when the period closes (the strategy's first trade exiting on a
later day) and again when a late trade changes a closed period; each part is in [0, 1]:

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
from calendar import monthrange
from datetime import date, datetime, timedelta, timezone
from typing import Iterable, Sequence

import msgspec

from tickwire.schemas.market import DAY_US, epoch_us, from_epoch_us
from tickwire.schemas.signals import (
    ModelPerformanceRow, PredictionOutcome, RegimePerformanceRow, StrategyPerformanceRow, StrategyScoreRow, TradeOutcomeRow,
)

ECE_BINS = 10
WILSON_Z = 1.96
REGIMES = ("trending_up", "trending_down", "ranging", "volatile")
RATIO_LIMIT = 9999.9999
SCORE_WEIGHTS = {"risk_adjusted": 0.35, "win_rate": 0.25, "drawdown": 0.2, "consistency": 0.2}
FULL_SHARPE = 3.0
ZERO_DRAWDOWN = 0.25


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


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _div(num: float, den: float) -> float | None:
    return num / den if den else None


def clamp_ratio(value: float | None) -> float | None:
    """A ratio within the DECIMAL(8, 4) columns, so an extreme value cannot make its row unwritable."""
    return None if value is None else max(-RATIO_LIMIT, min(RATIO_LIMIT, value))


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Mann-Whitney AUC: P(score of a positive > score of a negative), ties one half."""
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def brier(confidences: Sequence[float], correct: Sequence[bool]) -> float | None:
    return _mean([(c - y) ** 2 for c, y in zip(confidences, correct)])


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float | None:
    if not confidences:
        return None
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidences):
        members[min(int(c * bins), bins - 1)].append(i)
    n = len(confidences)
    return sum(
        len(m) / n * abs(sum(correct[i] for i in m) / len(m) - sum(confidences[i] for i in m) / len(m)) for m in members if m
    )


def classification(samples: Sequence[PredictionSample]) -> dict[str, float | None]:
    """The model_performance metrics of ``samples`` (see the module docstring)."""
    correct = [s.predicted == s.actual for s in samples]
    tp = sum(s.predicted == "LONG" and s.actual == "LONG" for s in samples)
    fp = sum(s.predicted == "LONG" and s.actual != "LONG" for s in samples)
    fn = sum(s.predicted != "LONG" and s.actual == "LONG" for s in samples)
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    f1 = None if precision is None or recall is None else (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    scored = [s for s in samples if s.confidence is not None]
    directional = [s for s in scored if s.predicted in ("LONG", "SHORT")]
    confidences = [s.confidence for s in scored]
    scored_correct = [s.predicted == s.actual for s in scored]
    metrics: dict[str, float | None] = {
        "accuracy": _mean(correct),
        "precision": precision,
        "recall": recall,
        "f1_score": f1,
        "auc_roc": auc(
            [s.confidence if s.predicted == "LONG" else 1.0 - s.confidence for s in directional],
            [s.actual == "LONG" for s in directional],
        ),
        "brier_score": brier(confidences, scored_correct),
        "expected_calibration_error": expected_calibration_error(confidences, scored_correct),
    }
    for regime in REGIMES:
        metrics[f"{regime}_accuracy"] = _mean([s.predicted == s.actual for s in samples if s.regime == regime])
    return metrics


def wilson_lower_bound(wins: int, n: int, z: float = WILSON_Z) -> float | None:
    if n == 0:
        return None
    p = wins / n
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def drawdown(pnls: Sequence[float], times_us: Sequence[int], capital: float) -> tuple[float, int]:
    """(max drawdown as a fraction of the peak, longest time under water in whole days)."""
    equity = peak = capital
    max_dd = 0.0
    longest_us = 0
    under_since: int | None = None
    for pnl, t in zip(pnls, times_us):
        equity += pnl
        if equity >= peak:
            if under_since is not None:
                longest_us = max(longest_us, t - under_since)
            peak, under_since = equity, None
        else:
            if under_since is None:
                under_since = t
            max_dd = max(max_dd, (peak - equity) / peak)
    if under_since is not None:
        longest_us = max(longest_us, times_us[-1] - under_since)
    return max_dd, longest_us // DAY_US


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


def strategy_stats(
    trades: Sequence[TradeSample], *, period_days: int, capital: float = 100_000.0, days_per_year: float = 365.0
) -> dict[str, float | int | None]:
    """The strategy_performance metrics of closed ``trades`` (see the module docstring)."""
    trades = sorted(trades, key=lambda t: (t.exit_us, t.trade_id))
    n = len(trades)
    pnls = [t.net_pnl for t in trades]
    wins = [t.net_pnl for t in trades if t.outcome == "WIN"]
    losses = [t.net_pnl for t in trades if t.outcome == "LOSS"]
    gross_profit = sum(p for p in pnls if p > 0)
    gross_loss = -sum(p for p in pnls if p < 0)
    returns = [p / capital for p in pnls]
    per_year = n * days_per_year / period_days
    sharpe = sortino = None
    if n >= 2:
        mean = sum(returns) / n
        sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1))
        downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
        scale = math.sqrt(per_year)
        # Equal returns leave a rounding-sized deviation, not a real one.
        sharpe = mean / sd * scale if sd > 1e-12 else None
        sortino = mean / downside * scale if downside > 1e-12 else None
    max_dd, dd_days = drawdown(pnls, [t.exit_us for t in trades], capital) if n else (0.0, 0)
    slippages = [t.slippage for t in trades if t.slippage is not None]
    return {
        "total_trades": n,
        "winning_trades": len(wins),
        "losing_trades": len(losses),
        "breakeven_trades": sum(t.outcome == "BREAKEVEN" for t in trades),
        "gross_profit": gross_profit,
        "gross_loss": gross_loss,
        "net_pnl": sum(pnls),
        "total_commission": sum(t.commission for t in trades),
        **outcome_ratios(n, len(wins), len(losses), sum(wins), sum(losses), gross_profit, gross_loss),
        "avg_trade": _div(sum(pnls), n),
        "largest_win": max((p for p in pnls if p > 0), default=None),
        "largest_loss": min((p for p in pnls if p < 0), default=None),
        "max_drawdown": clamp_ratio(max_dd) if n else None,
        "max_drawdown_duration_days": dd_days if n else None,
        "sharpe_ratio": clamp_ratio(sharpe),
        "sortino_ratio": clamp_ratio(sortino),
        "calmar_ratio": clamp_ratio(_div(sum(returns) * days_per_year / period_days, max_dd)),
        "avg_slippage": _mean(slippages),
    }


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


class ModelPerformanceState(msgspec.Struct):
    """Validated samples per (model_version, model_type, day), keyed by prediction_id."""

    groups: dict[str, dict[str, PredictionSample]] = {}
    latest_day: int = 0  # date.toordinal() of the latest predicted_at seen


class ModelPerformance:
    """Keeps each day's samples and recomputes the day's row on every new outcome.

    A day is kept ``retention_days`` after the latest predicted_at seen; an outcome
    for an older day is ignored (its row would be recomputed from that one sample).
    Re-sent outcomes replace themselves, so redelivery changes nothing.
    """

    def __init__(self, *, retention_days: int = 35) -> None:
        self.retention_days = retention_days

    def add(self, state: ModelPerformanceState, outcome: PredictionOutcome) -> ModelPerformanceRow | None:
        if outcome.validated_at is None or outcome.actual_direction is None:
            return None
        day = outcome.predicted_at.astimezone(timezone.utc).date()
        state.latest_day = max(state.latest_day, day.toordinal())
        horizon = state.latest_day - self.retention_days
        if day.toordinal() < horizon:
            return None
        for key in [k for k in state.groups if date.fromisoformat(k.rsplit("\x1f", 1)[1]).toordinal() < horizon]:
            del state.groups[key]
        key = "\x1f".join((outcome.model_version, outcome.model_type, day.isoformat()))
        samples = state.groups.setdefault(key, {})
        samples[str(outcome.prediction_id)] = PredictionSample(
            outcome.predicted_direction, outcome.actual_direction, outcome.confidence_score, outcome.regime
        )
        return model_performance_row(outcome.model_version, outcome.model_type, day, samples.values())


def model_performance_row(model_version: str, model_type: str, day: date, samples: Iterable[PredictionSample]) -> ModelPerformanceRow:
    samples = list(samples)
    return ModelPerformanceRow(
        model_version=model_version, model_type=model_type, evaluation_date=day, testing_samples=len(samples), **classification(samples)
    )


class RegimeTotals(msgspec.Struct, array_like=True):
    """Running totals of a group's settled trades, folded in (exit_time, trade_id) order."""

    n: int = 0
    wins: int = 0
    losses: int = 0
    breakevens: int = 0
    gross_profit: float = 0.0
    gross_loss: float = 0.0
    win_sum: float = 0.0
    loss_sum: float = 0.0
    mean_r: float = 0.0
    m2_r: float = 0.0  # Welford: sum of squared deviations of r from its mean
    cum_pnl: float = 0.0
    peak_pnl: float = 0.0
    max_drawdown: float = 0.0
    first_us: int = 0
    last_us: int = 0

    def fold(self, trade: TradeSample, capital: float) -> None:
        self.n += 1
        if trade.outcome == "WIN":
            self.wins, self.win_sum = self.wins + 1, self.win_sum + trade.net_pnl
        elif trade.outcome == "LOSS":
            self.losses, self.loss_sum = self.losses + 1, self.loss_sum + trade.net_pnl
        else:
            self.breakevens += 1
        if trade.net_pnl > 0:
            self.gross_profit += trade.net_pnl
        else:
            self.gross_loss -= trade.net_pnl
        r = trade.net_pnl / capital
        delta = r - self.mean_r
        self.mean_r += delta / self.n
        self.m2_r += delta * (r - self.mean_r)
        self.cum_pnl += trade.net_pnl
        self.peak_pnl = max(self.peak_pnl, self.cum_pnl)
        self.max_drawdown = max(self.max_drawdown, (self.peak_pnl - self.cum_pnl) / (capital + self.peak_pnl))
        self.first_us = trade.exit_us if self.n == 1 else self.first_us
        self.last_us = trade.exit_us


class RegimeGroup(msgspec.Struct, array_like=True):
    settled: RegimeTotals = msgspec.field(default_factory=RegimeTotals)
    recent: dict[str, TradeSample] = {}


class StrategyPerformanceState(msgspec.Struct):
    """Closed trades per (strategy_id, model_version, period type, period start), keyed by
    trade_id; and per (regime, timeframe), settled totals and recent trades."""

    groups: dict[str, dict[str, TradeSample]] = {}
    latest_day: int = 0
    regimes: dict[str, RegimeGroup] = {}


StrategyRow = StrategyPerformanceRow | StrategyScoreRow | RegimePerformanceRow


class StrategyPerformance:
    """Keeps each period's closed trades and recomputes its DAY, WEEK and MONTH rows per
    trade, scores the periods a trade closes, and keeps the strategy's figures by regime.

    Periods whose start is more than ``retention_days`` before the latest exit day are
    dropped and late trades for them ignored, as in ``ModelPerformance``.
    """

    def __init__(
        self, *, capital: float = 100_000.0, days_per_year: float = 365.0, retention_days: int = 62, timeframe: str = "1m",
        settle_days: int = 8,
    ) -> None:
        if capital <= 0 or days_per_year <= 0:
            raise ValueError("capital and days_per_year must be positive")
        self.capital = capital
        self.days_per_year = days_per_year
        self.retention_days = retention_days
        self.timeframe = timeframe  # the base timeframe: the regime a score's consistency is over
        self.settle_days = settle_days

    def add(self, state: StrategyPerformanceState, trade: TradeOutcomeRow) -> list[StrategyRow]:
        if trade.outcome_type == "OPEN" or trade.exit_time is None:
            return []
        exit_utc = trade.exit_time.astimezone(timezone.utc)
        day = exit_utc.date()
        rows: list[StrategyRow] = []
        if day.toordinal() > state.latest_day:  # the periods this trade closes, before any is dropped
            for key, trades in state.groups.items():
                _, _, period_type, start_text = key.split("\x1f")
                start = date.fromisoformat(start_text)
                if state.latest_day < start.toordinal() + period_days(start, period_type) <= day.toordinal():
                    rows.append(strategy_score(self._performance_row(key, trades), trades.values()))
        state.latest_day = max(state.latest_day, day.toordinal())
        horizon = state.latest_day - self.retention_days
        for key in [k for k in state.groups if date.fromisoformat(k.rsplit("\x1f", 1)[1]).toordinal() < horizon]:
            del state.groups[key]
        regimes = trade.entry_regimes or {}
        sample = TradeSample(
            str(trade.trade_id), epoch_us(exit_utc), trade.net_pnl, trade.commission, trade.outcome_type, trade.slippage,
            regimes.get(self.timeframe),
        )
        for period_type in ("DAY", "WEEK", "MONTH"):
            start = period_start(day, period_type)
            if start.toordinal() < horizon:
                continue
            key = "\x1f".join((trade.strategy_id, trade.model_version, period_type, start.isoformat()))
            trades = state.groups.setdefault(key, {})
            trades[sample.trade_id] = sample
            row = self._performance_row(key, trades)
            rows.append(row)
            if start.toordinal() + period_days(start, period_type) <= state.latest_day:  # a late trade: re-score
                rows.append(strategy_score(row, trades.values()))
        rows += self._by_regime(state, trade.strategy_id, sample, regimes)
        return rows

    def _performance_row(self, key: str, trades: dict[str, TradeSample]) -> StrategyPerformanceRow:
        strategy_id, model_version, period_type, start_text = key.split("\x1f")
        start = date.fromisoformat(start_text)
        stats = strategy_stats(
            list(trades.values()), period_days=period_days(start, period_type), capital=self.capital, days_per_year=self.days_per_year
        )
        return StrategyPerformanceRow(
            strategy_id=strategy_id, model_version=model_version, period_type=period_type, period_start=start, **stats
        )

    def _by_regime(
        self, state: StrategyPerformanceState, strategy_id: str, sample: TradeSample, regimes: dict[str, str]
    ) -> list[RegimePerformanceRow]:
        settle_before = (state.latest_day - self.settle_days + 1 - _EPOCH_ORDINAL) * DAY_US  # exit days before this settle
        rows = []
        for key, group in state.regimes.items():
            due = sorted((t for t in group.recent.values() if t.exit_us < settle_before), key=lambda t: (t.exit_us, t.trade_id))
            for settled in due:
                group.settled.fold(settled, self.capital)
                del group.recent[settled.trade_id]
        if sample.exit_us < settle_before:
            return []
        for timeframe, regime in sorted(regimes.items()):
            group = state.regimes.setdefault(f"{regime}\x1f{timeframe}", RegimeGroup())
            group.recent[sample.trade_id] = sample
            rows.append(self._regime_row(strategy_id, regime, timeframe, group))
        return rows

    def _regime_row(self, strategy_id: str, regime: str, timeframe: str, group: RegimeGroup) -> RegimePerformanceRow:
        totals = msgspec.structs.replace(group.settled)
        for trade in sorted(group.recent.values(), key=lambda t: (t.exit_us, t.trade_id)):
            totals.fold(trade, self.capital)
        n = totals.n
        sharpe = None
        if n >= 2:
            sd = math.sqrt(totals.m2_r / (n - 1))
            per_year = n * self.days_per_year / max(1.0, (totals.last_us - totals.first_us) / DAY_US)
            sharpe = totals.mean_r / sd * math.sqrt(per_year) if sd > 1e-12 else None
        return RegimePerformanceRow(
            strategy_id=strategy_id, regime=regime, timeframe=timeframe, total_trades=n, winning_trades=totals.wins,
            losing_trades=totals.losses, breakeven_trades=totals.breakevens, gross_profit=totals.gross_profit,
            gross_loss=totals.gross_loss, net_pnl=totals.cum_pnl,
            **outcome_ratios(n, totals.wins, totals.losses, totals.win_sum, totals.loss_sum, totals.gross_profit, totals.gross_loss),
            avg_trade=totals.cum_pnl / n, max_drawdown=clamp_ratio(totals.max_drawdown), sharpe_ratio=clamp_ratio(sharpe),
            first_trade_at=from_epoch_us(totals.first_us), last_trade_at=from_epoch_us(totals.last_us),
        )


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def strategy_score(row: StrategyPerformanceRow, trades: Iterable[TradeSample]) -> StrategyScoreRow:
    """A closed period's score from its performance row and its trades (the module docstring)."""
    by_regime: dict[str, float] = {}
    for trade in trades:
        if trade.regime is not None:
            by_regime[trade.regime] = by_regime.get(trade.regime, 0.0) + trade.net_pnl
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
