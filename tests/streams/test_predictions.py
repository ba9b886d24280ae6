"""streams.predictions and the Prediction message: validation, late and duplicate
predictions, expiry, restarts."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from tickwire.schemas.codec import Codec
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Bar, Condition
from tickwire.schemas.signals import ModelPredictionRow, Prediction, PredictionOutcome, feature_hash
from tickwire.streams.predictions import PredictionState, PredictionValidator, ValidatorConfig

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=30)


def bar(minute: int, close: float, symbol: str = "AAPL", timeframe: str = "1m") -> Bar:
    return Bar(symbol=symbol, ts=T0 + timedelta(minutes=minute), open=close, high=close, low=close, close=close, volume=1, timeframe=timeframe)


def prediction(at: datetime, *, horizon: int = 5, direction: str = "LONG", confidence: float | None = 0.7, pid: uuid.UUID | None = None) -> Prediction:
    return Prediction(
        prediction_id=pid or uuid.uuid4(),
        model_version="v1.2",
        model_type="direction",
        symbol="AAPL",
        predicted_at=at,
        prediction_horizon_minutes=horizon,
        predicted_direction=direction,
        confidence_score=confidence,
        feature_vector={"rsi": 55.5, "ema": [1, 2]},
    )


def message(**changes: object) -> bytes:
    body = {
        "prediction_id": str(uuid.uuid4()),
        "model_version": "v1",
        "model_type": "direction",
        "symbol": "AAPL",
        "predicted_at": T0.isoformat(),
        "prediction_horizon_minutes": 15,
        "predicted_direction": "SHORT",
        "confidence_score": 0.5,
        "predicted_volatility": 0.02,
        "feature_vector": {"a": 1},
    }
    body.update(changes)
    return json.dumps(body).encode()


CODEC = Codec(Prediction)


def test_message_decodes() -> None:
    p = CODEC.decode(message(), now=NOW)
    assert p.predicted_direction == "SHORT" and p.prediction_horizon_minutes == 15 and p.feature_vector == {"a": 1}


@pytest.mark.parametrize(
    "changes, reason, words",
    [
        ({"confidence_score": 1.01}, "invalid_value", "confidence_score"),
        ({"confidence_score": -0.1}, "invalid_value", "confidence_score"),
        ({"predicted_direction": "UP"}, "invalid_value", "predicted_direction"),
        ({"prediction_horizon_minutes": 0}, "invalid_value", "prediction_horizon_minutes"),
        ({"prediction_horizon_minutes": -5}, "invalid_value", "prediction_horizon_minutes"),
        ({"predicted_volatility": -1.0}, "invalid_value", "predicted_volatility"),
        ({"prediction_id": "not-a-uuid"}, "schema", "prediction_id"),
        ({"feature_vector": [1, 2]}, "schema", "feature_vector"),
        ({"feature_vector": {"n": [2**64]}}, "invalid_value", "64-bit"),  # state could never be written
        ({"extra": 1}, "schema", "extra"),
        ({"predicted_at": "2026-03-02T10:00:00"}, "schema", "predicted_at"),
    ],
)
def test_bad_predictions_are_rejected_with_a_reason(changes: dict, reason: str, words: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        CODEC.decode(message(**changes), now=NOW)
    assert err.value.reason == reason and words in err.value.detail


def test_feature_hash_is_sha256_of_canonical_json() -> None:
    features = {"b": 2, "a": {"y": "x", "c": [1, "z"]}}
    reordered = {"a": {"c": [1, "z"], "y": "x"}, "b": 2}
    expected = hashlib.sha256(b'{"a":{"c":[1,"z"],"y":"x"},"b":2}').hexdigest()
    assert feature_hash(features) == feature_hash(reordered) == expected
    assert feature_hash({"a": 1}) != feature_hash({"a": 2})


def test_validates_when_the_horizon_has_passed() -> None:
    v = PredictionValidator(ValidatorConfig(neutral_band=0.001))
    s = PredictionState()
    v.on_bars(s, [bar(0, 100.0), bar(1, 101.0)])  # closes at 10:01 and 10:02
    p = prediction(T0 + timedelta(minutes=2, seconds=30), horizon=5)
    out, duplicate = v.on_prediction(s, p)
    assert not duplicate and len(out) == 1
    assert out[0].validated_at is None and out[0].expiry_reason is None and out[0].feature_hash == feature_hash(p.feature_vector)
    # Due at 10:07:30: the bar opening 10:06 closes 10:07 (too early), the one opening 10:07 decides.
    assert v.on_bars(s, [bar(m, 101.0 + m) for m in range(2, 7)]) == []
    (done,) = v.on_bar(s, bar(7, 103.02))
    assert done.validated_at == T0 + timedelta(minutes=8)
    assert done.actual_return == pytest.approx(103.02 / 101.0 - 1)
    assert done.actual_direction == "LONG" and done.prediction_accuracy is True
    assert s.pending == {}


def test_neutral_band_bounds_are_neutral() -> None:
    v = PredictionValidator(ValidatorConfig(neutral_band=0.25))
    for end, actual in ((75.0, "NEUTRAL"), (125.0, "NEUTRAL"), (74.0, "SHORT"), (126.0, "LONG")):
        s = PredictionState()
        v.on_bar(s, bar(0, 100.0))
        for d in ("LONG", "SHORT", "NEUTRAL"):
            v.on_prediction(s, prediction(T0 + timedelta(minutes=1), horizon=1, direction=d))
        out = v.on_bar(s, bar(1, end))  # 75 and 125: exactly -25 % and +25 %, inside the band
        assert [(o.predicted_direction, o.actual_direction, o.prediction_accuracy) for o in out] == [
            (d, actual, d == actual) for d in ("LONG", "SHORT", "NEUTRAL")
        ]


def test_late_prediction_validates_at_once_from_history() -> None:
    v = PredictionValidator(ValidatorConfig(neutral_band=0.0))
    s = PredictionState()
    v.on_bars(s, [bar(m, 100.0 - m) for m in range(30)])
    (o,), _ = v.on_prediction(s, prediction(T0 + timedelta(minutes=5), horizon=10, direction="SHORT"))
    # base: close at 10:05 (bar 4, 96); end: first close >= 10:15 (bar 14, 86)
    assert o.actual_return == pytest.approx(86 / 96 - 1)
    assert o.validated_at == T0 + timedelta(minutes=15) and o.prediction_accuracy is True
    assert s.pending == {}


def test_regime_is_the_base_bars() -> None:
    v = PredictionValidator()
    s = PredictionState()
    for m, regime in enumerate(["ranging", "volatile", "trending_up"]):
        b = bar(m, 100.0 + m)
        v.on_bar(s, Condition(symbol="AAPL", timeframe="1m", timestamp=b.ts, open=b.open, high=b.high, low=b.low, close=b.close, volume=1, detected_regime=regime))
    (o,), _ = v.on_prediction(s, prediction(T0 + timedelta(minutes=1, seconds=10), horizon=1))
    assert o.regime == "ranging" and o.validated_at == T0 + timedelta(minutes=3)


def test_other_timeframes_are_ignored() -> None:
    v = PredictionValidator()
    s = PredictionState()
    v.on_bar(s, bar(0, 100.0, timeframe="5m"))
    assert s.closes == []


def test_duplicates_are_idempotent() -> None:
    v = PredictionValidator()
    s = PredictionState()
    v.on_bar(s, bar(0, 100.0))
    p = prediction(T0 + timedelta(minutes=1), horizon=1)
    first, _ = v.on_prediction(s, p)
    again, duplicate = v.on_prediction(s, p)
    assert duplicate and again == first and len(s.pending) == 1
    (done,) = v.on_bar(s, bar(1, 101.0))
    # Final now: a redelivery must not send the stale pending row again.
    assert v.on_prediction(s, p) == ([], True)
    # The last prediction's redelivery re-sends its (final) row: its send may have been lost.
    late = prediction(T0 + timedelta(minutes=1), horizon=1)
    final, _ = v.on_prediction(s, late)
    assert v.on_prediction(s, late) == (final, True)
    # Redelivered last bar re-sends; an older bar is ignored.
    assert v.on_bar(s, bar(1, 101.0)) == [done]
    assert v.on_bar(s, bar(0, 100.0)) == []


def test_expiry_by_watermark_and_reasons() -> None:
    v = PredictionValidator(ValidatorConfig(expire_after_s=3600))
    s = PredictionState()
    v.on_bar(s, bar(0, 100.0))
    p = prediction(T0 + timedelta(minutes=1), horizon=5)
    v.on_prediction(s, p)
    deadline = T0 + timedelta(minutes=6, hours=1)
    assert v.expire(s, deadline) == []
    (o,) = v.expire(s, deadline + timedelta(microseconds=1))
    assert o.expiry_reason == "no_price_after_horizon" and o.validated_at is None and o.prediction_id == p.prediction_id
    # A watermark going back changes nothing; the symbol's late bar no longer validates it.
    assert v.expire(s, T0) == [] and v.on_bar(s, bar(10, 100.0)) == []


def test_no_price_before_prediction() -> None:
    v = PredictionValidator()
    s = PredictionState()
    v.on_prediction(s, prediction(T0 - timedelta(minutes=5), horizon=5))
    (o,) = v.on_bar(s, bar(0, 100.0))
    assert o.expiry_reason == "no_price_before_prediction"


def test_history_bound() -> None:
    v = PredictionValidator(ValidatorConfig(max_history_bars=10))
    s = PredictionState()
    p_waiting = prediction(T0 + timedelta(minutes=1), horizon=30)
    v.on_bar(s, bar(0, 100.0))
    v.on_prediction(s, p_waiting)
    v.on_bars(s, [bar(m, 100.0 + m) for m in range(1, 25)])
    assert len(s.closes) == 10 and s.closes_us[0] == int((T0 + timedelta(minutes=16)).timestamp() * 1e6)
    # Beyond the history: expired with its reason; inside it: validated at once.
    (old,), _ = v.on_prediction(s, prediction(T0 + timedelta(minutes=3), horizon=1))
    assert old.expiry_reason == "history_exceeded"
    (recent,), _ = v.on_prediction(s, prediction(T0 + timedelta(minutes=17), horizon=2))
    assert recent.actual_return == pytest.approx(118 / 116 - 1)  # closes at 10:17 and 10:19
    # The waiting prediction kept its base (close 100 at 10:01) although the history dropped it.
    (o,) = v.on_bar(s, bar(30, 130.0))
    assert o.prediction_id == p_waiting.prediction_id and o.actual_return == pytest.approx(0.30)


def scenario(rng_seed: int) -> tuple[list, list]:
    """Interleaved bars and predictions (some late, some duplicated)."""
    import random

    rng = random.Random(rng_seed)
    events: list = []
    price = 100.0
    preds = []
    for m in range(200):
        price *= 1 + rng.uniform(-0.003, 0.003)
        events.append(("bar", bar(m, round(price, 4))))
        if rng.random() < 0.3:
            p = prediction(T0 + timedelta(minutes=m - rng.randint(0, 20), seconds=rng.randint(0, 59)), horizon=rng.choice([1, 5, 15]), direction=rng.choice(["LONG", "SHORT", "NEUTRAL"]))
            preds.append(p)
            events.append(("pred", p))
        if preds and rng.random() < 0.05:
            events.append(("pred", rng.choice(preds)))
    return events, preds


def run(events: list, restart_every: int | None) -> list[PredictionOutcome]:
    v = PredictionValidator(ValidatorConfig(max_history_bars=50))
    state = PredictionState()
    out: list[PredictionOutcome] = []
    for i, (kind, item) in enumerate(events):
        if restart_every and i % restart_every == 0:
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=PredictionState)
        out.extend(v.on_bar(state, item) if kind == "bar" else v.on_prediction(state, item).outputs)
    return out


def test_restarts_change_nothing() -> None:
    events, preds = scenario(3)
    plain = run(events, None)
    assert run(events, 7) == plain
    final = {o.prediction_id: o for o in plain if o.validated_at or o.expiry_reason}
    assert len(final) >= len(preds) - 3  # all but the last few (horizon not reached) are decided
    for o in final.values():
        if o.predicted_at < T0 + timedelta(minutes=1):  # before the first close
            assert o.expiry_reason == "no_price_before_prediction"
        else:
            assert o.validated_at is not None or o.expiry_reason == "history_exceeded"
    assert sum(o.expiry_reason == "history_exceeded" for o in final.values()) == 0  # 50 bars hold 20 minutes of lateness


def test_outcome_row_round_trips_through_the_sink_decoder() -> None:
    v = PredictionValidator()
    s = PredictionState()
    v.on_bar(s, bar(0, 100.0))
    (o,), _ = v.on_prediction(s, prediction(T0 + timedelta(minutes=1), horizon=1))
    row = msgspec.json.decode(msgspec.json.encode(o), type=ModelPredictionRow)
    assert "regime" not in msgspec.structs.asdict(row) and row.prediction_id == o.prediction_id
