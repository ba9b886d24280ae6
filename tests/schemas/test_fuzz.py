"""Property-based fuzzing of the decoders and validators (bars, predictions, fills, trades):
any input is accepted as valid or rejected with a reason."""

import uuid
from datetime import datetime, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickwire.schemas.codec import Codec
from tickwire.schemas.errors import REASONS, InvalidMessage
from tickwire.schemas.market import EPOCH, Bar
from tickwire.schemas.signals import (
    DIRECTIONS, MAX_HORIZON_MINUTES, MAX_PRICE, SIDES, Fill, ModelPredictionRow, Prediction, PredictionOutcome,
    TradeOutcomeRow, feature_hash,
)
from tickwire.schemas.trades import Trade
from tickwire.streams.candles import TradeAggregator
from tickwire.streams.fills import TradeBook, TradeBuilder
from tickwire.streams.predictions import PredictionState, PredictionValidator

NOW = datetime(2026, 3, 2, tzinfo=timezone.utc)
codec = Codec(Bar, max_message_bytes=4096)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
bar_like = st.fixed_dictionaries(
    {},
    optional={
        "symbol": st.one_of(st.sampled_from(["AAPL", "BRK.B", "X"]), st.text(max_size=12)),
        "ts": st.one_of(st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()), st.text(max_size=30)),
        "open": st.floats(allow_nan=False) | st.integers(),
        "high": st.floats(allow_nan=False) | st.integers(),
        "low": st.floats(allow_nan=False) | st.integers(),
        "close": st.floats(allow_nan=False) | st.integers(),
        "volume": st.integers() | st.floats(),
        "timeframe": st.sampled_from(["1m", "5m", "1d", "0m", "x"]),
        "vwap": st.none() | st.floats(allow_nan=False),
    },
)


def check(raw: bytes) -> None:
    try:
        bar = codec.decode(raw, now=NOW)
    except InvalidMessage as exc:
        assert exc.reason in REASONS and exc.detail
    else:
        assert isinstance(bar, Bar) and bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes(raw):
    check(raw)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_arbitrary_json(value):
    check(msgspec.json.encode(value))


@settings(max_examples=600, deadline=None)
@given(bar_like)
def test_bar_shaped_json(value):
    check(msgspec.json.encode(value))


# --- Predictions, fills and trades ---------------------------------------------------
#
# Accepted means processable: the message goes through its core (``streams.predictions``,
# ``streams.fills``, ``streams.candles``) raising nothing but ``InvalidMessage``, and what
# it produces fits the columns it is stored in (no NUL in text, DECIMALs in range), so a
# message the worker accepts is never refused later by the database.

prediction_codec = Codec(Prediction, max_message_bytes=65536)
fill_codec = Codec(Fill, max_message_bytes=4096)
trade_codec = Codec(Trade, max_message_bytes=4096)
# DECIMAL(18, 4) money columns (gross_pnl, net_pnl, commission, excursions) hold less than this.
MONEY_LIMIT = 1e14


def _no_nul(value) -> bool:
    """PostgreSQL text and jsonb refuse U+0000."""
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_no_nul(k) and _no_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_no_nul(v) for v in value)
    return True


def _decimal_fits(value: float | None, digits: int, scale: int) -> bool:
    return value is None or abs(round(value, scale)) < 10.0 ** (digits - scale)


def _decode(codec: Codec, raw: bytes):
    try:
        return codec.decode(raw, now=NOW)
    except InvalidMessage as exc:
        assert exc.reason in REASONS and exc.detail
        return None


def check_prediction(raw: bytes) -> None:
    p = _decode(prediction_codec, raw)
    if p is None:
        return
    assert isinstance(p, Prediction) and p.predicted_direction in DIRECTIONS
    assert 0 < p.prediction_horizon_minutes <= MAX_HORIZON_MINUTES and p.predicted_at >= EPOCH
    assert p.confidence_score is None or 0.0 <= p.confidence_score <= 1.0
    assert _decimal_fits(p.predicted_volatility, 10, 6) and (p.predicted_volatility or 0.0) >= 0.0
    assert all(_no_nul(s) for s in (p.model_version, p.model_type, p.symbol)) and _no_nul(p.feature_vector)
    assert len(feature_hash(p.feature_vector)) == 64
    validator = PredictionValidator()
    try:
        result = validator.on_prediction(PredictionState(), p)
    except InvalidMessage as exc:
        assert exc.reason in REASONS
        return
    for outcome in result.outputs:
        raw_row = msgspec.json.encode(outcome)
        assert msgspec.json.decode(raw_row, type=PredictionOutcome).prediction_id == p.prediction_id
        msgspec.json.decode(raw_row, type=ModelPredictionRow)


def _fits_trade_columns(row: TradeOutcomeRow, *, money: bool) -> bool:
    """The row's values fit trade_outcomes; P&L and excursions only when ``money``
    (extreme prices times large positions can exceed DECIMAL(18, 4) whatever one fill says)."""
    money_columns = ("commission", "gross_pnl", "net_pnl", "max_favorable_excursion", "max_adverse_excursion")
    return (
        row.quantity < 2**31
        and all(_decimal_fits(getattr(row, name), 18, 8) for name in ("entry_price", "exit_price", "slippage"))
        and all(_decimal_fits(getattr(row, name), 18, 4) for name in (money_columns if money else money_columns[:1]))
        and all(_no_nul(s) for s in (row.strategy_id, row.model_version, row.symbol))
    )


def check_fills(raws: list[bytes], *, money: bool = False) -> None:
    """Each fill decoded; the valid ones applied in order to one book, as the worker does."""
    builder, book = TradeBuilder(), TradeBook()
    for raw in raws:
        fill = _decode(fill_codec, raw)
        if fill is None:
            continue
        assert fill.side in SIDES and 0 < fill.price < MAX_PRICE and 0 < fill.quantity < 2**31 and fill.commission >= 0
        assert fill.ts >= EPOCH
        try:
            result = builder.on_fill(book, fill)
        except InvalidMessage as exc:
            assert exc.reason in REASONS and exc.detail
            continue
        assert _fits_trade_columns(result.row, money=money), result.row
        msgspec.json.decode(msgspec.json.encode(result.row), type=TradeOutcomeRow)


def check_trades(raws: list[bytes]) -> None:
    """Each trade decoded; the valid ones aggregated, and every bar they close is a valid bar."""
    aggregator = TradeAggregator()
    closed = []
    for raw in raws:
        trade = _decode(trade_codec, raw)
        if trade is None:
            continue
        assert 0 < trade.price < MAX_PRICE and trade.size > 0 and trade.ts >= EPOCH
        try:
            closed += aggregator.update(trade)
        except InvalidMessage as exc:
            assert exc.reason in REASONS and exc.detail
    closed += aggregator.advance_watermark(datetime(9999, 1, 1, tzinfo=timezone.utc))
    for bar in closed:
        # The worker publishes these bars to md.bars.v1, where the bar codec must accept them.
        Codec(Bar).decode(msgspec.json.encode(bar), now=NOW)


CHECKS = {"prediction": lambda raw: check_prediction(raw), "fill": lambda raw: check_fills([raw]), "trade": lambda raw: check_trades([raw])}

nasty_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "\x00", "a\x00b", "\x07", "x'; DROP TABLE model_predictions;--", "' OR 1=1 --", "é", "😀"]),
)
timestamps = st.one_of(
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive
    st.sampled_from(["1969-12-31T23:59:59Z", "2026-03-01T14:30:00Z", "2099-01-01T00:00:00Z", "yesterday", ""]),
    st.text(max_size=30),
)
numbers = st.one_of(
    st.floats(allow_nan=False), st.integers(), st.sampled_from([0, -1, 1e-320, 9999.9999999, 1e10, 1e14, 1e300, 2**31, 2**63])
)
uuids = st.one_of(st.uuids().map(str), st.text(max_size=40), st.integers())
deep_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | nasty_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(nasty_text, children, max_size=3),
    max_leaves=20,
)
_DROP = object()


def shaped(fields: dict) -> st.SearchStrategy:
    """Every field present with a good value or a hostile one (or left out), plus maybe an unknown field."""
    parts = {
        name: st.one_of(st.just(good), st.just(good), st.just(_DROP), hostile) for name, (good, hostile) in fields.items()
    }
    parts["unknown"] = st.one_of(st.just(_DROP), st.just(_DROP), st.just(_DROP), json_values)
    return st.fixed_dictionaries(parts).map(lambda d: {k: v for k, v in d.items() if v is not _DROP})


prediction_like = shaped(
    {
        "prediction_id": (str(uuid.UUID(int=7)), uuids),
        "model_version": ("v1", nasty_text),
        "model_type": ("momentum", nasty_text),
        "symbol": ("AAPL", nasty_text),
        "predicted_at": ("2026-03-01T14:30:00Z", timestamps),
        "prediction_horizon_minutes": (15, st.one_of(st.sampled_from([0, 1, 525_600, 525_601, -15]), numbers)),
        "predicted_direction": ("LONG", st.one_of(st.sampled_from([*DIRECTIONS, "UP", "long", ""]), nasty_text)),
        "confidence_score": (0.7, st.one_of(st.none(), numbers)),
        "predicted_volatility": (0.01, st.one_of(st.none(), numbers)),
        "feature_vector": ({"momentum": 0.01}, st.one_of(st.dictionaries(nasty_text, deep_json, max_size=4), deep_json)),
    }
)
fill_like = shaped(
    {
        "fill_id": ("f1", st.one_of(st.sampled_from(["f1", "f2", "f3"]), nasty_text)),
        "trade_id": ("00000000-0000-0000-0000-000000000001", uuids),
        "strategy_id": ("s1", nasty_text),
        "model_version": ("v1", nasty_text),
        "symbol": ("AAPL", nasty_text),
        "side": ("BUY", st.one_of(st.sampled_from([*SIDES, "HOLD", "buy"]), nasty_text)),
        "ts": ("2026-03-01T14:30:00Z", timestamps),
        "price": (100.0, numbers),
        "quantity": (10, numbers),
        "commission": (1.0, numbers),
        "decision_price": (None, numbers),
    }
)
trade_like = shaped(
    {
        "symbol": ("AAPL", nasty_text),
        "ts": ("2026-03-01T14:30:00Z", timestamps),
        "price": (100.0, numbers),
        "size": (10, numbers),
        "trade_id": ("1", st.one_of(st.sampled_from(["1", "2", "10"]), nasty_text)),
    }
)


@pytest.mark.parametrize("kind", CHECKS)
@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=600))
def test_signal_and_trade_codecs_on_arbitrary_bytes(kind, raw):
    CHECKS[kind](raw)


@pytest.mark.parametrize("kind", CHECKS)
@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_signal_and_trade_codecs_on_arbitrary_json(kind, value):
    CHECKS[kind](msgspec.json.encode(value))


@settings(max_examples=800, deadline=None)
@given(prediction_like)
def test_prediction_shaped_json(value):
    check_prediction(msgspec.json.encode(value))


@settings(max_examples=500, deadline=None)
@given(st.lists(fill_like, min_size=1, max_size=6))
def test_fill_shaped_json_applied_in_sequence(values):
    check_fills([msgspec.json.encode(v) for v in values])


@settings(max_examples=500, deadline=None)
@given(st.lists(trade_like, min_size=1, max_size=8))
def test_trade_shaped_json_aggregated_in_sequence(values):
    check_trades([msgspec.json.encode(v) for v in values])


GOOD_FILL = {
    "fill_id": "f1", "trade_id": "00000000-0000-0000-0000-000000000001", "strategy_id": "s1", "model_version": "v1",
    "symbol": "AAPL", "side": "BUY", "ts": "2026-03-01T14:30:00Z", "price": 100.0, "quantity": 10,
}


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SIDES), st.floats(min_value=1e-9, max_value=9.9e9), st.integers(1, 2**31 - 1),
            st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1e15)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_valid_looking_fills_of_one_trade_fit_their_columns(legs):
    """Plausible-typed fills of one trade with extreme sizes: accepted rows fit trade_outcomes."""
    check_fills(
        [
            msgspec.json.encode({**GOOD_FILL, "fill_id": f"f{i}", "side": side, "price": price, "quantity": qty, "commission": fee,
                                 "ts": f"2026-03-01T14:{30 + i}:00Z"})
            for i, (side, price, qty, fee) in enumerate(legs)
        ]
    )


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(SIDES), st.floats(min_value=1e-4, max_value=1e6), st.integers(1, 1_000_000), st.floats(0, 1e6)),
        min_size=1,
        max_size=5,
    )
)
def test_plausible_fills_of_one_trade_fit_every_money_column(legs):
    """Prices up to 1e6 and fills up to 1e6 units: P&L and excursions fit DECIMAL(18, 4) too."""
    check_fills(
        [
            msgspec.json.encode({**GOOD_FILL, "fill_id": f"f{i}", "side": side, "price": price, "quantity": qty, "commission": fee,
                                 "ts": f"2026-03-01T14:{30 + i}:00Z"})
            for i, (side, price, qty, fee) in enumerate(legs)
        ],
        money=True,
    )


GOOD_PREDICTION = {
    "prediction_id": str(uuid.UUID(int=7)), "model_version": "v1", "model_type": "momentum", "symbol": "AAPL",
    "predicted_at": "2026-03-01T14:30:00Z", "prediction_horizon_minutes": 15, "predicted_direction": "LONG",
    "feature_vector": {"momentum": 0.01},
}


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20_000), st.sampled_from(["[", '{"k":']))
def test_deeply_nested_feature_vector_is_refused_not_crashing(depth, opener):
    closer = {"[": b"]", '{"k":': b"}"}[opener]
    nested = opener.encode() * depth + b"1" + closer * depth
    raw = msgspec.json.encode(GOOD_PREDICTION).replace(b'{"momentum":0.01}', b'{"deep":' + nested + b"}")
    check_prediction(raw)
