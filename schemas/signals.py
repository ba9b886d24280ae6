"""Model predictions (``signals.predictions.v1``), execution fills (``exec.fills.v1``) and
the rows derived from them: ``model_predictions`` (also ``signals.outcomes.v1``),
``trade_outcomes`` (also ``exec.trades.v1``), ``model_performance`` and
``strategy_performance``.

Row Structs name exactly the columns the streams own: a field is a column. Columns
nobody here computes (``id``, ``created_at``, ``status``, ``avg_fill_time_ms`` ...) are
left out so an upsert never overwrites them. Row Structs accept unknown fields so a
sink can decode a message that carries more than the row (``PredictionOutcome``).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import date, datetime
from typing import Annotated, Any

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Symbol, UtcDatetime, check_timestamp

DIRECTIONS = ("LONG", "SHORT", "NEUTRAL")
SIDES = ("BUY", "SELL")
OUTCOME_TYPES = ("WIN", "LOSS", "BREAKEVEN", "OPEN")
PERIOD_TYPES = ("DAY", "WEEK", "MONTH")

# No control characters: PostgreSQL text refuses U+0000, and the rest have no place in a label.
ModelVersion = Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"^[^\x00-\x1f\x7f]+\Z")]
ModelType = Annotated[str, msgspec.Meta(min_length=1, max_length=30, pattern=r"^[^\x00-\x1f\x7f]+\Z")]
StrategyId = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=r"^[\x21-\x7e]+\Z")]
FillId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+\Z")]
OrderId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+\Z")]
PortfolioId = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=r"^[\x21-\x7e]+\Z")]
# INTEGER column; a horizon longer than a year is a unit mistake, not a forecast.
MAX_HORIZON_MINUTES = 525_600
# DECIMAL(18, 8) prices and DECIMAL(10, 6) volatility hold values below these.
MAX_PRICE = 1e10
MAX_VOLATILITY = 1e4
# DECIMAL(18, 4) money columns (commission, P&L) hold values below this.
MAX_MONEY = 1e14
# feature_vector is stored as JSONB and re-encoded on the way: keep it shallow.
MAX_FEATURE_DEPTH = 32


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidMessage("invalid_value", f"{name} is not finite")


def _check_features(value: Any, depth: int = 0) -> None:
    """JSONB refuses U+0000 in keys and strings; deep nesting would overflow the encoders' stacks;
    msgpack holds no integer wider than 64 bits."""
    if depth > MAX_FEATURE_DEPTH:
        raise InvalidMessage("invalid_value", f"feature_vector is nested deeper than {MAX_FEATURE_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidMessage("invalid_value", "feature_vector contains U+0000")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_features(key, depth + 1)
            _check_features(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_features(item, depth + 1)
    elif isinstance(value, int) and not -(2**63) <= value < 2**63:
        # The validator keeps predictions in msgpack state, which holds no wider integer.
        raise InvalidMessage("invalid_value", "feature_vector holds an integer outside the 64-bit range")


def feature_hash(features: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON: keys sorted at every level, no whitespace,
    UTF-8 unescaped, numbers as msgspec writes them (shortest round-trip, ``1e-7``).

    Equal feature objects hash equal whatever their key order, so the hash finds
    predictions made from the same inputs.
    """
    canonical = msgspec.json.encode(features, order="sorted")
    return hashlib.sha256(canonical).hexdigest()


class Prediction(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One model prediction; ``predicted_at`` is its event time (UTC)."""

    prediction_id: uuid.UUID
    model_version: ModelVersion
    model_type: ModelType
    symbol: Symbol
    predicted_at: UtcDatetime
    prediction_horizon_minutes: int
    predicted_direction: str
    confidence_score: float | None = None
    predicted_volatility: float | None = None
    feature_vector: dict[str, Any]

    def validate(self, *, now: datetime, max_future_skew_s: float) -> "Prediction":
        """The issue's value rules, as ``invalid_value`` with the field named."""
        check_timestamp(self.predicted_at, now=now, max_future_skew_s=max_future_skew_s)
        if self.predicted_direction not in DIRECTIONS:
            raise InvalidMessage("invalid_value", f"predicted_direction {self.predicted_direction[:20]!r} is not LONG, SHORT or NEUTRAL")
        if not 0 < self.prediction_horizon_minutes <= MAX_HORIZON_MINUTES:
            raise InvalidMessage(
                "invalid_value", f"prediction_horizon_minutes {self.prediction_horizon_minutes} is not in 1..{MAX_HORIZON_MINUTES}"
            )
        if self.confidence_score is not None and not 0.0 <= self.confidence_score <= 1.0:
            raise InvalidMessage("invalid_value", f"confidence_score {self.confidence_score} is outside [0, 1]")
        if self.predicted_volatility is not None:
            _finite("predicted_volatility", self.predicted_volatility)
            # Compared as stored (6 decimals): 9999.9999999 would round up to 10000.
            if not 0.0 <= round(self.predicted_volatility, 6) < MAX_VOLATILITY:
                raise InvalidMessage("invalid_value", f"predicted_volatility {self.predicted_volatility} is outside [0, {MAX_VOLATILITY:g})")
        _check_features(self.feature_vector)
        return self


class Fill(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One execution fill of a trade; ``ts`` is its event time (UTC).

    ``decision_price`` is the price the strategy decided at; slippage is measured
    against it, so without it the fill has no slippage. ``portfolio_id`` books the fill
    (``default`` without one); ``order_id`` joins it to its order (``exec.orders.v1``).
    """

    fill_id: FillId
    trade_id: uuid.UUID
    strategy_id: StrategyId
    model_version: ModelVersion
    symbol: Symbol
    side: str
    ts: UtcDatetime
    price: float
    quantity: int
    commission: float = 0.0
    decision_price: float | None = None
    portfolio_id: PortfolioId = "default"
    order_id: OrderId | None = None

    def validate(self, *, now: datetime, max_future_skew_s: float) -> "Fill":
        """The issue's value rules, as ``invalid_value`` with the field named."""
        check_timestamp(self.ts, now=now, max_future_skew_s=max_future_skew_s)
        if self.side not in SIDES:
            raise InvalidMessage("invalid_value", f"side {self.side[:20]!r} is not BUY or SELL")
        for name in ("price", "decision_price"):
            value = getattr(self, name)
            if value is not None:
                _finite(name, value)
                if not 0.0 < value < MAX_PRICE:
                    raise InvalidMessage("invalid_value", f"{name} {value} is not in (0, {MAX_PRICE:g})")
        # trade_outcomes.quantity is INTEGER: whole units only.
        if not 0 < self.quantity < 2**31:
            raise InvalidMessage("invalid_value", f"quantity {self.quantity} is not a positive 32-bit integer")
        _finite("commission", self.commission)
        if not 0 <= self.commission < MAX_MONEY:
            raise InvalidMessage("invalid_value", f"commission {self.commission} is not in [0, {MAX_MONEY:g})")
        return self


class ModelPredictionRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``model_predictions`` row: the prediction and, once known, its outcome.

    Pending: ``validated_at`` and ``expiry_reason`` both ``None``. Validated:
    ``validated_at`` set. Expired (never validated): ``expiry_reason`` set.
    """

    prediction_id: uuid.UUID
    model_version: str
    model_type: str
    symbol: str
    predicted_at: datetime
    prediction_horizon_minutes: int
    predicted_direction: str
    confidence_score: float | None
    predicted_volatility: float | None
    feature_vector: dict[str, Any]
    feature_hash: str
    actual_direction: str | None = None
    actual_return: float | None = None
    prediction_accuracy: bool | None = None
    validated_at: datetime | None = None
    expiry_reason: str | None = None

    @classmethod
    def pending(cls, p: Prediction) -> "ModelPredictionRow":
        return cls(
            prediction_id=p.prediction_id,
            model_version=p.model_version,
            model_type=p.model_type,
            symbol=p.symbol,
            predicted_at=p.predicted_at,
            prediction_horizon_minutes=p.prediction_horizon_minutes,
            predicted_direction=p.predicted_direction,
            confidence_score=p.confidence_score,
            predicted_volatility=p.predicted_volatility,
            feature_vector=p.feature_vector,
            feature_hash=feature_hash(p.feature_vector),
        )


class PredictionOutcome(ModelPredictionRow, kw_only=True):
    """A ``signals.outcomes.v1`` message: the row plus the symbol's regime at
    ``predicted_at`` (for accuracy by regime); a sink decoding it as
    ``ModelPredictionRow`` drops ``regime``, which is no column."""

    regime: str | None = None


class TradeOutcomeRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``trade_outcomes`` row, also the ``exec.trades.v1`` message.

    ``entry_time`` never changes once the trade exists (it is part of the table key).
    """

    trade_id: uuid.UUID
    strategy_id: str
    model_version: str
    symbol: str
    direction: str
    entry_time: datetime
    exit_time: datetime | None
    entry_price: float
    exit_price: float | None
    quantity: int
    gross_pnl: float
    net_pnl: float
    commission: float
    slippage: float | None
    duration_seconds: int | None
    max_favorable_excursion: float | None
    max_adverse_excursion: float | None
    outcome_type: str
    # The symbol's regime on each timeframe when the trade opened ({} before its first regime).
    entry_regimes: dict[str, str] | None = None


class ModelPerformanceRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``model_performance`` row for one model_version, model_type and UTC day of
    ``predicted_at`` (``streams.performance`` has the formulas)."""

    model_version: str
    model_type: str
    evaluation_date: date
    testing_samples: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1_score: float | None
    auc_roc: float | None
    brier_score: float | None
    expected_calibration_error: float | None
    trending_up_accuracy: float | None
    trending_down_accuracy: float | None
    ranging_accuracy: float | None
    volatile_accuracy: float | None


class StrategyPerformanceRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``strategy_performance`` row for one strategy_id, model_version and period
    (``streams.performance`` has the formulas)."""

    strategy_id: str
    model_version: str
    period_type: str
    period_start: date
    total_trades: int
    winning_trades: int
    losing_trades: int
    breakeven_trades: int
    gross_profit: float
    gross_loss: float
    net_pnl: float
    total_commission: float
    win_rate: float | None
    wilson_lower_bound: float | None
    profit_factor: float | None
    expectancy: float | None
    avg_win: float | None
    avg_loss: float | None
    avg_trade: float | None
    largest_win: float | None
    largest_loss: float | None
    max_drawdown: float | None
    max_drawdown_duration_days: int | None
    sharpe_ratio: float | None
    sortino_ratio: float | None
    calmar_ratio: float | None
    avg_slippage: float | None


class RegimePerformanceRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``regime_performance_stats`` row: one strategy's closed trades, all time, by the
    regime their symbol was in on ``timeframe`` when they opened (``streams.performance``)."""

    strategy_id: str
    regime: str
    timeframe: str
    total_trades: int
    winning_trades: int
    losing_trades: int
    breakeven_trades: int
    gross_profit: float
    gross_loss: float
    net_pnl: float
    win_rate: float | None
    wilson_lower_bound: float | None
    profit_factor: float | None
    expectancy: float | None
    avg_win: float | None
    avg_loss: float | None
    avg_trade: float | None
    max_drawdown: float | None
    sharpe_ratio: float | None
    first_trade_at: datetime
    last_trade_at: datetime


class StrategyScoreRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A ``strategy_scores`` row: a closed period's composite score (``streams.performance``)."""

    strategy_id: str
    model_version: str
    period_type: str
    period_start: date
    scored_at: datetime  # the period's end: the score holds from then on
    total_trades: int
    risk_adjusted_score: float
    win_rate_score: float
    drawdown_score: float
    consistency_score: float | None
    score: float
