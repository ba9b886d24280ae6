"""streams.performance against hand-computed cases and independent reference code."""

from __future__ import annotations

import math
import random
import statistics
import uuid
from datetime import date, datetime, timedelta, timezone

import msgspec
import pytest

from tickwire.schemas.signals import (
    PredictionOutcome, RegimePerformanceRow, StrategyPerformanceRow, StrategyScoreRow, TradeOutcomeRow, feature_hash,
)
from tickwire.streams.performance import (
    REGIMES,
    DayTotals,
    ModelPerformance,
    ModelPerformanceState,
    PredictionSample,
    StrategyPerformance,
    StrategyPerformanceState,
    Totals,
    TradeSample,
    period_days,
    period_start,
    strategy_stats,
    wilson_lower_bound,
)

MARCH = datetime(2026, 3, 1, tzinfo=timezone.utc)


def us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000


def metrics_of(samples: list[PredictionSample]) -> dict:
    """A day's figures, as the model statistics make them: from its sums."""
    totals = DayTotals()
    for sample in samples:
        totals.add(sample)
    return totals.metrics()


def test_classification_hand_computed() -> None:
    samples = [
        PredictionSample("LONG", "LONG", 0.9, "trending_up"),
        PredictionSample("LONG", "SHORT", 0.6, "trending_up"),
        PredictionSample("SHORT", "SHORT", 0.8, "ranging"),
        PredictionSample("SHORT", "LONG", 0.7, "volatile"),
        PredictionSample("NEUTRAL", "NEUTRAL", 0.5, "ranging"),
        PredictionSample("LONG", "NEUTRAL", None, None),
    ]
    m = metrics_of(samples)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(0.5) and m["f1_score"] == pytest.approx(0.4)
    # P(LONG) scores: 0.9 (LONG), 0.6 (not), 0.2 (not), 0.3 (LONG): 3 of 4 pairs ordered right
    assert m["auc_roc"] == pytest.approx(0.75)
    assert m["brier_score"] == pytest.approx((0.01 + 0.36 + 0.04 + 0.49 + 0.25) / 5)
    assert m["expected_calibration_error"] == pytest.approx((0.1 + 0.6 + 0.2 + 0.7 + 0.5) / 5)
    assert (m["trending_up_accuracy"], m["ranging_accuracy"], m["volatile_accuracy"], m["trending_down_accuracy"]) == (0.5, 1.0, 0.0, None)


def test_classification_undefined_cases() -> None:
    m = metrics_of([PredictionSample("SHORT", "SHORT", None), PredictionSample("NEUTRAL", "SHORT", None)])
    assert m["precision"] is None and m["recall"] is None and m["f1_score"] is None
    assert m["auc_roc"] is None and m["brier_score"] is None and m["expected_calibration_error"] is None
    m = metrics_of([PredictionSample("LONG", "SHORT", 0.8), PredictionSample("SHORT", "LONG", 0.8)])
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1_score"] == 0.0 and m["auc_roc"] == 0.0
    assert metrics_of([])["accuracy"] is None


def reference_auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def reference_ece(conf: list[float], correct: list[bool]) -> float:
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        idx = [i for i, c in enumerate(conf) if lo <= c < hi or (b == 9 and c == 1.0)]
        if idx:
            acc = statistics.fmean(correct[i] for i in idx)
            total += len(idx) / len(conf) * abs(acc - statistics.fmean(conf[i] for i in idx))
    return total


def reference_classification(samples: list[PredictionSample]) -> dict:
    """The module docstring's figures, straight over the samples."""
    def mean(values: list) -> float | None:
        return statistics.fmean(values) if values else None

    tp = sum(s.predicted == "LONG" and s.actual == "LONG" for s in samples)
    fp = sum(s.predicted == "LONG" and s.actual != "LONG" for s in samples)
    fn = sum(s.predicted != "LONG" and s.actual == "LONG" for s in samples)
    precision, recall = (tp / (tp + fp) if tp + fp else None), (tp / (tp + fn) if tp + fn else None)
    scored = [s for s in samples if s.confidence is not None]
    directional = [s for s in scored if s.predicted in ("LONG", "SHORT")]
    labels = [s.actual == "LONG" for s in directional]
    metrics = {
        "accuracy": mean([s.predicted == s.actual for s in samples]), "precision": precision, "recall": recall,
        "f1_score": None if precision is None or recall is None else (2 * precision * recall / (precision + recall) if precision + recall else 0.0),
        # The scores to 1e-4, as counted: 1 - 0.1234 for a SHORT ties 0.8766 for a LONG.
        "auc_roc": reference_auc([round(s.confidence if s.predicted == "LONG" else 1 - s.confidence, 4) for s in directional], labels)
        if 0 < sum(labels) < len(labels) else None,
        "brier_score": mean([(s.confidence - (s.predicted == s.actual)) ** 2 for s in scored]),
        "expected_calibration_error": reference_ece([s.confidence for s in scored], [s.predicted == s.actual for s in scored]) if scored else None,
    }
    for regime in REGIMES:
        metrics[f"{regime}_accuracy"] = mean([s.predicted == s.actual for s in samples if s.regime == regime])
    return metrics


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_ece_against_reference(seed: int) -> None:
    rng = random.Random(seed)
    scores = [rng.choice([0.1, 0.25, 0.5, 0.75, 1.0, round(rng.random(), 4)]) for _ in range(300)]  # many ties
    labels = [rng.random() < s for s in scores]
    m = metrics_of([PredictionSample("LONG", "LONG" if y else "SHORT", s) for s, y in zip(scores, labels)])
    assert m["auc_roc"] == pytest.approx(reference_auc(scores, labels), abs=1e-12)
    assert m["expected_calibration_error"] == pytest.approx(reference_ece(scores, labels), abs=1e-12)
    assert metrics_of([PredictionSample("LONG", "LONG", s) for s in scores])["auc_roc"] is None


def test_wilson_lower_bound() -> None:
    assert wilson_lower_bound(0, 0) is None
    # p = 0.4, n = 5, z = 1.96: (0.4 + 0.38416 - 1.96 * sqrt(0.048 + 0.038416)) / 1.76832
    assert wilson_lower_bound(2, 5) == pytest.approx((0.78416 - 1.96 * math.sqrt(0.086416)) / 1.76832)
    assert wilson_lower_bound(2, 5) == pytest.approx(0.11762, abs=1e-5)
    assert wilson_lower_bound(0, 10) == pytest.approx(0.0, abs=1e-12)
    assert 0.9 < wilson_lower_bound(1000, 1000) < 1.0


def trades_case() -> list[TradeSample]:
    days = [1, 3, 5, 6, 10]
    pnls = [100.0, -50.0, -100.0, 1.0, 200.0]
    outcomes = ["WIN", "LOSS", "LOSS", "BREAKEVEN", "WIN"]
    slips = [0.01, 0.03, None, None, None]
    return [
        TradeSample(f"t{i}", us(MARCH + timedelta(days=d - 1, hours=12)), p, 2.0 if o != "BREAKEVEN" else 1.0, o, s)
        for i, (d, p, o, s) in enumerate(zip(days, pnls, outcomes, slips))
    ]


def test_strategy_stats_hand_computed() -> None:
    trades = trades_case()
    rng = random.Random(1)
    rng.shuffle(trades)  # order comes from exit times, not input order
    s = strategy_stats(trades, period_days=31, capital=1000.0)
    assert (s["total_trades"], s["winning_trades"], s["losing_trades"], s["breakeven_trades"]) == (5, 2, 2, 1)
    assert (s["gross_profit"], s["gross_loss"], s["net_pnl"], s["total_commission"]) == (301.0, 150.0, 151.0, 9.0)
    assert s["win_rate"] == 0.4 and s["wilson_lower_bound"] == pytest.approx(wilson_lower_bound(2, 5))
    assert s["profit_factor"] == pytest.approx(301 / 150)
    assert (s["avg_win"], s["avg_loss"], s["largest_win"], s["largest_loss"]) == (150.0, -75.0, 200.0, -100.0)
    assert s["avg_trade"] == pytest.approx(30.2) and s["expectancy"] == pytest.approx(0.4 * 150 - 0.4 * 75)
    # equity 1000 -> 1100 (peak) -> 1050 -> 950 -> 951 -> 1151: 150 / 1100 down, under water day 3 to day 10
    assert s["max_drawdown"] == pytest.approx(150 / 1100) and s["max_drawdown_duration_days"] == 7
    r = [0.1, -0.05, -0.1, 0.001, 0.2]
    per_year = 5 * 365 / 31
    assert s["sharpe_ratio"] == pytest.approx(statistics.mean(r) / statistics.stdev(r) * math.sqrt(per_year))
    assert s["sharpe_ratio"] == pytest.approx(1.9253, abs=1e-4)
    assert s["sortino_ratio"] == pytest.approx(0.0302 / 0.05 * math.sqrt(per_year))
    assert s["calmar_ratio"] == pytest.approx(0.151 * 365 / 31 / (150 / 1100))
    assert s["avg_slippage"] == pytest.approx(0.02)


def test_strategy_stats_edge_cases() -> None:
    one = strategy_stats([TradeSample("a", 0, 10.0, 0.0, "WIN")], period_days=1)
    assert one["profit_factor"] is None and one["sharpe_ratio"] is None and one["max_drawdown"] == 0.0
    assert one["calmar_ratio"] is None and one["avg_loss"] is None and one["largest_loss"] is None and one["avg_slippage"] is None
    same = strategy_stats([TradeSample(str(i), i, 10.0, 0.0, "WIN") for i in range(3)], period_days=1)
    assert same["sharpe_ratio"] is None and same["sortino_ratio"] is None
    never_back = strategy_stats(
        [TradeSample("a", us(MARCH), -10.0, 0.0, "LOSS"), TradeSample("b", us(MARCH + timedelta(days=2, hours=23)), 5.0, 0.0, "WIN")],
        period_days=7,
        capital=100.0,
    )
    assert never_back["max_drawdown"] == pytest.approx(0.1) and never_back["max_drawdown_duration_days"] == 2
    huge = strategy_stats([TradeSample("a", 0, 1e9, 0.0, "WIN"), TradeSample("b", 1, -0.001, 0.0, "LOSS")], period_days=1)
    assert huge["profit_factor"] == 9999.9999
    empty = strategy_stats([], period_days=1)
    assert empty["total_trades"] == 0 and empty["win_rate"] is None and empty["max_drawdown"] is None


def test_periods() -> None:
    wed = date(2026, 3, 4)
    assert period_start(wed, "DAY") == wed and period_start(wed, "WEEK") == date(2026, 3, 2) and period_start(wed, "MONTH") == date(2026, 3, 1)
    assert period_days(date(2026, 2, 1), "MONTH") == 28 and period_days(date(2024, 2, 1), "MONTH") == 29 and period_days(wed, "WEEK") == 7
    with pytest.raises(ValueError):
        period_start(wed, "YEAR")


def trade_row(
    tid: int, exit_at: datetime | None, net: float, outcome: str, strategy: str = "s1", regimes: dict[str, str] | None = None
) -> TradeOutcomeRow:
    return TradeOutcomeRow(
        trade_id=uuid.UUID(int=tid),
        strategy_id=strategy,
        model_version="v1",
        symbol="AAPL",
        direction="LONG",
        entry_time=(exit_at or MARCH) - timedelta(hours=1),
        exit_time=exit_at,
        entry_price=10.0,
        exit_price=None if exit_at is None else 11.0,
        quantity=10,
        gross_pnl=net + 1,
        net_pnl=net,
        commission=1.0,
        slippage=None,
        duration_seconds=None if exit_at is None else 3600,
        max_favorable_excursion=None,
        max_adverse_excursion=None,
        outcome_type=outcome,
        entry_regimes=regimes,
    )


def of(rows: list, kind: type) -> list:
    return [row for row in rows if isinstance(row, kind)]


def test_strategy_aggregation_by_period() -> None:
    agg, state = StrategyPerformance(capital=1000.0), StrategyPerformanceState()
    assert agg.add(state, trade_row(1, None, 0.0, "OPEN")) == []
    agg.add(state, trade_row(1, datetime(2026, 3, 2, 15, tzinfo=timezone.utc), 10.0, "WIN"))  # Monday
    rows = agg.add(state, trade_row(2, datetime(2026, 3, 4, 15, tzinfo=timezone.utc), -4.0, "LOSS"))  # Wednesday
    # Wednesday's trade closes Monday: its score, from one win and no regime (the module docstring):
    # no Sharpe 0, Wilson(1 of 1) = 1 / (1 + 1.96²) = 0.206541, no drawdown 1, weights 0.35 + 0.25 + 0.2.
    (score,) = of(rows, StrategyScoreRow)
    assert (score.period_type, score.period_start, score.scored_at) == ("DAY", date(2026, 3, 2), datetime(2026, 3, 3, tzinfo=timezone.utc))
    assert score.consistency_score is None and score.risk_adjusted_score == 0.0 and score.drawdown_score == 1.0
    assert score.score == pytest.approx(100 * (0.25 * 0.206541 + 0.2) / 0.8, abs=1e-4)
    assert of(rows, RegimePerformanceRow) == []  # the trades carry no regime
    rows = of(rows, StrategyPerformanceRow)
    assert [(r.period_type, r.period_start, r.total_trades, r.net_pnl) for r in rows] == [
        ("DAY", date(2026, 3, 4), 1, -4.0),
        ("WEEK", date(2026, 3, 2), 2, 6.0),
        ("MONTH", date(2026, 3, 1), 2, 6.0),
    ]
    # A re-sent trade is counted once, and changes no row; another strategy is its own group.
    assert agg.add(state, trade_row(2, datetime(2026, 3, 4, 15, tzinfo=timezone.utc), -4.0, "LOSS")) == []
    assert of(agg.add(state, trade_row(6, datetime(2026, 3, 4, 16, tzinfo=timezone.utc), 1.0, "WIN")), StrategyPerformanceRow)[0].total_trades == 2
    other = agg.add(state, trade_row(3, datetime(2026, 3, 4, 16, tzinfo=timezone.utc), 1.0, "WIN", strategy="s2"))
    assert [r.total_trades for r in other] == [1, 1, 1]
    # Old periods are dropped; a trade for one of them no longer writes rows.
    closed = agg.add(state, trade_row(4, datetime(2026, 6, 1, tzinfo=timezone.utc), 1.0, "WIN"))
    # June closes Wednesday's day, the week and the month of both strategies (this state holds
    # both; the stage keeps one per strategy), before they are dropped; Monday was scored already.
    # Trades before the late window are ignored.
    assert sorted((r.strategy_id, r.period_type, r.period_start) for r in of(closed, StrategyScoreRow)) == [
        (strategy, period, start) for strategy in ("s1", "s2")
        for period, start in (("DAY", date(2026, 3, 4)), ("MONTH", date(2026, 3, 1)), ("WEEK", date(2026, 3, 2)))
    ]
    assert agg.add(state, trade_row(5, datetime(2026, 3, 5, tzinfo=timezone.utc), 1.0, "WIN")) == []
    assert all("2026-03" not in key for key in state.groups)


def test_strategy_score_by_hand() -> None:
    """Monday: +10 ranging, -4 volatile; Tuesday's trade closes Monday and scores it."""
    agg, state = StrategyPerformance(capital=1000.0, timeframe="1m"), StrategyPerformanceState()
    monday = datetime(2026, 3, 2, 15, tzinfo=timezone.utc)
    agg.add(state, trade_row(1, monday, 10.0, "WIN", regimes={"1m": "ranging", "1h": "trending_up"}))
    agg.add(state, trade_row(2, monday + timedelta(hours=1), -4.0, "LOSS", regimes={"1m": "volatile", "1h": "trending_up"}))
    rows = agg.add(state, trade_row(3, monday + timedelta(days=1), 6.0, "WIN", regimes={"1m": "ranging"}))
    (score,) = of(rows, StrategyScoreRow)
    # r = 0.01, -0.004: mean 0.003, sd 0.0098995, Sharpe 0.30305 * sqrt(730) = 8.19: full marks.
    # Wilson(1 of 2) = (0.5 + 0.9604 - 1.96 * sqrt(0.125 + 0.2401)) / 2.9208 = 0.094529.
    # Drawdown 4 / 1010 = 0.0039604: 1 - 0.0039604 / 0.25 = 0.984158. Ranging made money, volatile lost: 0.5.
    assert score.risk_adjusted_score == 1.0
    assert score.win_rate_score == pytest.approx(0.094529, abs=1e-6)
    assert score.drawdown_score == pytest.approx(0.984158, abs=1e-6)
    assert score.consistency_score == 0.5
    assert score.score == pytest.approx(100 * (0.35 + 0.25 * 0.094529 + 0.2 * 0.984158 + 0.2 * 0.5), abs=1e-4)
    # A late trade for the closed Monday scores it again.
    late = agg.add(state, trade_row(4, monday + timedelta(hours=2), 5.0, "WIN", regimes={"1m": "volatile"}))
    (again,) = of(late, StrategyScoreRow)
    assert again.period_start == date(2026, 3, 2) and again.total_trades == 3 and again.consistency_score == 1.0


def test_regime_stats_by_hand() -> None:
    agg, state = StrategyPerformance(capital=1000.0), StrategyPerformanceState()
    monday = datetime(2026, 3, 2, 15, tzinfo=timezone.utc)
    agg.add(state, trade_row(1, monday, 10.0, "WIN", regimes={"1m": "ranging", "1h": "trending_up"}))
    agg.add(state, trade_row(2, monday + timedelta(hours=1), -4.0, "LOSS", regimes={"1m": "volatile", "1h": "trending_up"}))
    rows = of(agg.add(state, trade_row(3, monday + timedelta(days=1), 6.0, "WIN", regimes={"1m": "ranging"})), RegimePerformanceRow)
    (ranging,) = rows
    assert (ranging.regime, ranging.timeframe, ranging.total_trades, ranging.winning_trades, ranging.net_pnl) == ("ranging", "1m", 2, 2, 16.0)
    assert ranging.profit_factor is None and ranging.max_drawdown == 0.0 and ranging.expectancy == 8.0
    # r = 0.01, 0.006 a day apart: mean 0.008, sd 0.0028284, N = 2 * 365 / 1.
    assert ranging.sharpe_ratio == pytest.approx(0.008 / 0.0028284271 * math.sqrt(730), rel=1e-6)
    assert (ranging.first_trade_at, ranging.last_trade_at) == (monday, monday + timedelta(days=1))
    resent = trade_row(2, monday + timedelta(hours=1), -4.0, "LOSS", regimes={"1m": "volatile", "1h": "trending_up"})
    assert agg.add(state, resent) == []  # counted once
    up = agg.rows(state, {("regime", "trending_up\x1f1h"): "s1"})[0]
    # +10 then -4: drawdown 4 / 1010, profit factor 10 / 4.
    assert (up.timeframe, up.total_trades, up.net_pnl, up.profit_factor) == ("1h", 2, 6.0, 2.5)
    assert up.max_drawdown == pytest.approx(4 / 1010) and up.expectancy == pytest.approx(0.5 * 10 + 0.5 * -4)


def test_running_totals_equal_the_figures_over_every_trade() -> None:
    """Weeks of trades arriving a little out of exit order: every row equals the same
    figures computed over all of its trades at once, though the state keeps totals, at
    most ``reorder`` trades per group and the ids of the late window."""
    rng = random.Random(7)
    agg, state = StrategyPerformance(capital=1000.0, reorder=16), StrategyPerformanceState()
    start = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
    trades = []
    for i in range(300):
        exit_at = start + timedelta(hours=4 * i + rng.randint(0, 2))
        net = round(rng.uniform(-20, 25), 2)
        trades.append(trade_row(i + 1, exit_at, net, "WIN" if net > 0 else "LOSS", regimes={"1m": "ranging"}))
    arrival = sorted(range(300), key=lambda i: i + rng.uniform(0, 12))  # each at most a dozen places late
    assert arrival != sorted(arrival)
    rows: dict[tuple, object] = {}
    for i in arrival:
        for row in agg.add(state, trades[i]):
            rows[(type(row), getattr(row, "period_type", None), getattr(row, "period_start", None))] = row
    group = state.regimes["ranging\x1f1m"]
    assert group.n == 300 and len(group.pending) == 16
    assert len(state.counted) <= 8 * 6 + 1 and all(len(g.pending) <= 16 for g in state.groups.values())
    ordered = sorted(trades, key=lambda t: t.exit_time)
    returns = [t.net_pnl / 1000.0 for t in ordered]
    equity, peak, worst = 1000.0, 1000.0, 0.0
    for t in ordered:
        equity += t.net_pnl
        peak = max(peak, equity)
        worst = max(worst, (peak - equity) / peak)
    row = rows[(RegimePerformanceRow, None, None)]
    days = (ordered[-1].exit_time - ordered[0].exit_time).total_seconds() / 86400
    assert row.total_trades == 300 and row.net_pnl == pytest.approx(sum(t.net_pnl for t in trades))
    assert row.max_drawdown == pytest.approx(worst, rel=1e-9)
    sharpe = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(300 * 365 / days)
    assert row.sharpe_ratio == pytest.approx(sharpe, rel=1e-9)
    assert row.wilson_lower_bound == pytest.approx(wilson_lower_bound(sum(t.net_pnl > 0 for t in trades), 300))
    # The last week's and month's rows against strategy_stats over their trades.
    for period_type in ("WEEK", "MONTH"):
        last = period_start(ordered[-1].exit_time.date(), period_type)
        mine = [t for t in trades if period_start(t.exit_time.date(), period_type) == last]
        expected = strategy_stats(
            [TradeSample(str(t.trade_id), us(t.exit_time), t.net_pnl, t.commission, t.outcome_type) for t in mine],
            period_days=period_days(last, period_type), capital=1000.0,
        )
        got = rows[(StrategyPerformanceRow, period_type, last)]
        for name, value in expected.items():
            assert getattr(got, name) == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), name
    # A trade from before the late window comes again: ignored.
    assert agg.add(state, trades[0]) == []


def test_regimes_known_after_the_trade_count_once() -> None:
    """A trade counted before its entry regimes were known joins its regimes' figures, and
    its period's consistency, when it comes again with them; once."""
    agg, state = StrategyPerformance(capital=1000.0), StrategyPerformanceState()
    monday = datetime(2026, 3, 2, 15, tzinfo=timezone.utc)
    agg.add(state, trade_row(1, monday, 10.0, "WIN"))
    assert of(agg.add(state, trade_row(2, monday + timedelta(days=1), -4.0, "LOSS")), StrategyScoreRow)[0].consistency_score is None
    rows = agg.add(state, trade_row(1, monday, 10.0, "WIN", regimes={"1m": "ranging"}))
    # Monday's day is closed: scored again, its one regime making money; no period row changed.
    assert [type(row) for row in rows] == [StrategyScoreRow, RegimePerformanceRow]
    assert of(rows, StrategyScoreRow)[0].consistency_score == 1.0 and of(rows, RegimePerformanceRow)[0].total_trades == 1
    assert agg.add(state, trade_row(1, monday, 10.0, "WIN", regimes={"1m": "ranging"})) == []
    assert state.groups["s1\x1fv1\x1fWEEK\x1f2026-03-02"].n == 2


def outcome(pid: int, predicted_at: datetime, predicted: str, actual: str | None, confidence: float, regime: str | None = None) -> PredictionOutcome:
    return PredictionOutcome(
        prediction_id=uuid.UUID(int=pid),
        model_version="v1",
        model_type="direction",
        symbol="AAPL",
        predicted_at=predicted_at,
        prediction_horizon_minutes=5,
        predicted_direction=predicted,
        confidence_score=confidence,
        predicted_volatility=None,
        feature_vector={},
        feature_hash=feature_hash({}),
        actual_direction=actual,
        actual_return=None if actual is None else 0.01,
        prediction_accuracy=None if actual is None else predicted == actual,
        validated_at=None if actual is None else predicted_at + timedelta(minutes=5),
        regime=regime,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_days_sums_give_the_figures_over_its_predictions(seed: int) -> None:
    rng = random.Random(seed)
    samples = [
        PredictionSample(rng.choice(("LONG", "SHORT", "NEUTRAL")), rng.choice(("LONG", "SHORT", "NEUTRAL")),
                         None if rng.random() < 0.1 else round(rng.random(), rng.choice((2, 4))), rng.choice((None, *REGIMES)))
        for _ in range(2000)
    ]
    totals = DayTotals()
    for sample in samples:
        totals.add(sample)
    expected = reference_classification(samples)
    assert totals.metrics() == {name: pytest.approx(value) if value is not None else None for name, value in expected.items()}
    assert len(msgspec.msgpack.encode(totals)) < 120_000  # at most one score per 1e-4 step, whatever the count


def test_model_aggregation_by_day() -> None:
    agg, state = ModelPerformance(), ModelPerformanceState()
    t = datetime(2026, 3, 2, 23, 58, tzinfo=timezone.utc)
    assert agg.add(state, outcome(1, t, "LONG", None, 0.6)) is None  # pending: no sample
    agg.add(state, outcome(1, t, "LONG", "LONG", 0.6, "ranging"))
    row = agg.add(state, outcome(2, t, "SHORT", "LONG", 0.7, "ranging"))
    assert row is not None and row.evaluation_date == date(2026, 3, 2) and row.testing_samples == 2
    assert row.accuracy == 0.5 and row.ranging_accuracy == 0.5 and row.precision == 1.0 and row.recall == 0.5
    before = msgspec.msgpack.encode(state)
    assert agg.add(state, outcome(2, t, "SHORT", "LONG", 0.7, "ranging")) is None  # redelivered: counted once
    assert msgspec.msgpack.encode(state) == before
    nxt = agg.add(state, outcome(3, t + timedelta(minutes=5), "LONG", "SHORT", 0.9))
    assert nxt is not None and nxt.evaluation_date == date(2026, 3, 3) and nxt.testing_samples == 1


def test_a_trade_behind_every_pending_one_is_taken_where_it_arrives():
    """The sums stay exact; only the equity path takes a trade later than ``reorder`` others
    where it arrives (the module docstring)."""
    sample = lambda tid, hour, pnl: TradeSample(tid, us(MARCH + timedelta(hours=hour)), pnl, 0.0, "WIN" if pnl > 0 else "LOSS")
    totals = Totals()
    for trade in (sample("b", 2, 50.0), sample("c", 3, -100.0), sample("d", 4, 30.0), sample("a", 1, -40.0)):
        totals.add(trade, 1000.0, reorder=2)
    stats = totals.performance(period_days=31, capital=1000.0, days_per_year=365.0)
    assert (stats["total_trades"], stats["net_pnl"], stats["largest_loss"]) == (4, -60.0, -100.0)
    # b (+50) leaves the window first (peak 1050), then a (-40), which arrived behind c and d;
    # then c (-100) and d: the trough is 1050 - 140 = 910. In exit order (a, b, c, d) the
    # deepest fall would be 100 from 1010.
    assert stats["max_drawdown"] == pytest.approx(140 / 1050)
