"""streams.performance against hand-computed cases and independent reference code."""

from __future__ import annotations

import math
import random
import statistics
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from tickwire.schemas.signals import PredictionOutcome, TradeOutcomeRow, feature_hash
from tickwire.streams.performance import (
    ModelPerformance,
    ModelPerformanceState,
    PredictionSample,
    StrategyPerformance,
    StrategyPerformanceState,
    TradeSample,
    auc,
    classification,
    expected_calibration_error,
    period_days,
    period_start,
    strategy_stats,
    wilson_lower_bound,
)

MARCH = datetime(2026, 3, 1, tzinfo=timezone.utc)


def us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000


def test_classification_hand_computed() -> None:
    samples = [
        PredictionSample("LONG", "LONG", 0.9, "trending_up"),
        PredictionSample("LONG", "SHORT", 0.6, "trending_up"),
        PredictionSample("SHORT", "SHORT", 0.8, "ranging"),
        PredictionSample("SHORT", "LONG", 0.7, "volatile"),
        PredictionSample("NEUTRAL", "NEUTRAL", 0.5, "ranging"),
        PredictionSample("LONG", "NEUTRAL", None, None),
    ]
    m = classification(samples)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(0.5) and m["f1_score"] == pytest.approx(0.4)
    # P(LONG) scores: 0.9 (LONG), 0.6 (not), 0.2 (not), 0.3 (LONG): 3 of 4 pairs ordered right
    assert m["auc_roc"] == pytest.approx(0.75)
    assert m["brier_score"] == pytest.approx((0.01 + 0.36 + 0.04 + 0.49 + 0.25) / 5)
    assert m["expected_calibration_error"] == pytest.approx((0.1 + 0.6 + 0.2 + 0.7 + 0.5) / 5)
    assert (m["trending_up_accuracy"], m["ranging_accuracy"], m["volatile_accuracy"], m["trending_down_accuracy"]) == (0.5, 1.0, 0.0, None)


def test_classification_undefined_cases() -> None:
    m = classification([PredictionSample("SHORT", "SHORT", None), PredictionSample("NEUTRAL", "SHORT", None)])
    assert m["precision"] is None and m["recall"] is None and m["f1_score"] is None
    assert m["auc_roc"] is None and m["brier_score"] is None and m["expected_calibration_error"] is None
    m = classification([PredictionSample("LONG", "SHORT", 0.8), PredictionSample("SHORT", "LONG", 0.8)])
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1_score"] == 0.0 and m["auc_roc"] == 0.0
    assert classification([])["accuracy"] is None


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


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_ece_against_reference(seed: int) -> None:
    rng = random.Random(seed)
    scores = [rng.choice([0.1, 0.25, 0.5, 0.75, 1.0, rng.random()]) for _ in range(300)]  # many ties
    labels = [rng.random() < s for s in scores]
    assert auc(scores, labels) == pytest.approx(reference_auc(scores, labels), abs=1e-12)
    assert expected_calibration_error(scores, labels) == pytest.approx(reference_ece(scores, labels), abs=1e-12)
    assert auc(scores, [True] * len(scores)) is None


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


def trade_row(tid: int, exit_at: datetime | None, net: float, outcome: str, strategy: str = "s1") -> TradeOutcomeRow:
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
    )


def test_strategy_aggregation_by_period() -> None:
    agg, state = StrategyPerformance(capital=1000.0), StrategyPerformanceState()
    assert agg.add(state, trade_row(1, None, 0.0, "OPEN")) == []
    agg.add(state, trade_row(1, datetime(2026, 3, 2, 15, tzinfo=timezone.utc), 10.0, "WIN"))  # Monday
    rows = agg.add(state, trade_row(2, datetime(2026, 3, 4, 15, tzinfo=timezone.utc), -4.0, "LOSS"))  # Wednesday
    assert [(r.period_type, r.period_start, r.total_trades, r.net_pnl) for r in rows] == [
        ("DAY", date(2026, 3, 4), 1, -4.0),
        ("WEEK", date(2026, 3, 2), 2, 6.0),
        ("MONTH", date(2026, 3, 1), 2, 6.0),
    ]
    # A re-sent trade replaces itself; another strategy is its own group.
    again = agg.add(state, trade_row(2, datetime(2026, 3, 4, 15, tzinfo=timezone.utc), -4.0, "LOSS"))
    assert again == rows
    other = agg.add(state, trade_row(3, datetime(2026, 3, 4, 16, tzinfo=timezone.utc), 1.0, "WIN", strategy="s2"))
    assert [r.total_trades for r in other] == [1, 1, 1]
    # Old periods are dropped; a trade for one of them no longer writes rows.
    agg.add(state, trade_row(4, datetime(2026, 6, 1, tzinfo=timezone.utc), 1.0, "WIN"))
    assert agg.add(state, trade_row(5, datetime(2026, 3, 5, tzinfo=timezone.utc), 1.0, "WIN")) == []
    assert all("2026-03" not in key for key in state.groups)


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


def test_model_aggregation_by_day() -> None:
    agg, state = ModelPerformance(), ModelPerformanceState()
    t = datetime(2026, 3, 2, 23, 58, tzinfo=timezone.utc)
    assert agg.add(state, outcome(1, t, "LONG", None, 0.6)) is None  # pending: no sample
    agg.add(state, outcome(1, t, "LONG", "LONG", 0.6, "ranging"))
    row = agg.add(state, outcome(2, t, "SHORT", "LONG", 0.7, "ranging"))
    assert row is not None and row.evaluation_date == date(2026, 3, 2) and row.testing_samples == 2
    assert row.accuracy == 0.5 and row.ranging_accuracy == 0.5 and row.precision == 1.0 and row.recall == 0.5
    assert agg.add(state, outcome(2, t, "SHORT", "LONG", 0.7, "ranging")) == row  # redelivered
    nxt = agg.add(state, outcome(3, t + timedelta(minutes=5), "LONG", "SHORT", 0.9))
    assert nxt is not None and nxt.evaluation_date == date(2026, 3, 3) and nxt.testing_samples == 1
