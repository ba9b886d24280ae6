from datetime import datetime, timezone

import msgspec
import pytest

from tickwire.schemas.codec import DLQ_MAX_VALUE_BYTES, Codec, dlq_record
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import Bar

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
GOOD = {
    "symbol": "AAPL",
    "ts": "2026-03-02T14:30:00Z",
    "open": 100.0,
    "high": 101.0,
    "low": 99.5,
    "close": 100.5,
    "volume": 1200,
}
codec = Codec(Bar, max_message_bytes=10_000)


def reason_for(value: bytes) -> str:
    with pytest.raises(InvalidMessage) as info:
        codec.decode(value, now=NOW)
    return info.value.reason


def encoded(**changes) -> bytes:
    return msgspec.json.encode({**GOOD, **changes})


def test_a_good_bar_round_trips():
    bar = codec.decode(encoded(), now=NOW)
    assert bar.symbol == "AAPL" and bar.timeframe == "1m" and bar.ts.tzinfo is not None
    assert codec.decode(codec.encode(bar), now=NOW) == bar


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (b"x" * 10_001, "too_large"),
        (b'{"symbol": "\xff"}', "not_utf8"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "schema"),
        (encoded(close=None), "schema"),
        (encoded(open="100"), "schema"),
        (encoded(open=0), "schema"),
        (encoded(low=-1), "schema"),
        (encoded(volume=-5), "schema"),
        (encoded(volume=1.5), "schema"),
        (encoded(symbol="aapl"), "schema"),
        (encoded(symbol="TOOLONGSYMBOL"), "schema"),
        (encoded(symbol="AA\nPL"), "schema"),
        (encoded(symbol="'; DROP TABLE x;--"), "schema"),
        (encoded(timeframe="1y"), "schema"),
        (encoded(ts="2026-03-02T14:30:00"), "schema"),
        (b'{"symbol":"AAPL","ts":"2026-03-02T14:30:00Z","open":1e999,"high":1,"low":1,"close":1,"volume":1}', "schema"),
        (encoded(high=99.0), "invalid_value"),
        (encoded(low=100.2), "invalid_value"),
        (encoded(vwap=150.0), "invalid_value"),
        (encoded(ts="1969-12-31T23:59:00Z"), "bad_timestamp"),
        (encoded(ts="2031-01-01T00:00:00Z"), "bad_timestamp"),
    ],
)
def test_bad_bars_are_rejected_with_a_reason(value, reason):
    assert reason_for(value) == reason


def test_missing_field_detail_names_the_field():
    body = dict(GOOD)
    del body["close"]
    with pytest.raises(InvalidMessage) as info:
        codec.decode(msgspec.json.encode(body), now=NOW)
    assert info.value.reason == "schema" and "close" in info.value.detail


def test_dlq_record_carries_source_coordinates_and_caps_detail():
    record = dlq_record(key=b"K", value=b"raw", reason="schema", detail="x" * 5000, topic="md.bars.v1", partition=3, offset=42)
    headers = dict(record.headers)
    assert record.value == b"raw" and record.key == b"K"
    assert headers["tickwire.source.partition"] == b"3" and headers["tickwire.source.offset"] == b"42"
    assert len(headers["tickwire.detail"]) == 1000 and "tickwire.truncated_from_bytes" not in headers


def test_dlq_record_keeps_the_original_headers_and_adds_kafka_connects_error_headers():
    record = dlq_record(
        key=b"K", value=b"raw", reason="internal", detail="ZeroDivisionError: x", topic="md.bars.v1", partition=3, offset=42,
        timestamp_ms=1_767_225_600_250, headers=[("trace", b"t-1"), ("tickwire.reason", b"forged")], stage="symbols",
        exception="ZeroDivisionError",
    )
    assert record.headers[0] == ("trace", b"t-1")
    assert [name for name, _ in record.headers].count("tickwire.reason") == 1  # a producer's own is not kept
    headers = dict(record.headers)
    assert headers["tickwire.reason"] == b"internal" and headers["tickwire.source.timestamp_ms"] == b"1767225600250"
    assert (headers["__connect.errors.topic"], headers["__connect.errors.partition"], headers["__connect.errors.offset"]) == (
        b"md.bars.v1", b"3", b"42")
    assert headers["__connect.errors.stage"] == b"symbols"
    assert headers["__connect.errors.exception.class.name"] == b"ZeroDivisionError"


def test_dlq_record_truncates_huge_values_and_says_so():
    record = dlq_record(key=None, value=b"y" * 10_000_000, reason="too_large", detail="big", topic="t", partition=0, offset=1)
    assert record.value == b"y" * DLQ_MAX_VALUE_BYTES
    assert dict(record.headers)["tickwire.truncated_from_bytes"] == b"10000000"


def test_unknown_reason_is_a_programming_error():
    with pytest.raises(ValueError):
        InvalidMessage("whatever", "x")


def test_unknown_fields_are_rejected_so_versions_cannot_drift():
    assert reason_for(encoded(extra="x" * 100)) == "schema"


@pytest.mark.parametrize("headers", [[("tickwire.schema.version", b"2")], {"tickwire.schema.version": b"v9"}])
def test_an_unknown_schema_version_is_rejected(headers):
    with pytest.raises(InvalidMessage) as info:
        codec.decode(encoded(), now=NOW, headers=headers)
    assert info.value.reason == "unknown_version"
    assert codec.decode(encoded(), now=NOW, headers=[("tickwire.schema.version", b"1")]).symbol == "AAPL"


def test_a_trailing_newline_is_refused_in_every_patterned_field():
    """Python's ``$`` also matches before a final newline: every pattern ends in ``\\Z``."""
    from tickwire.schemas import market, signals, trades

    assert reason_for(encoded(symbol="AAPL\n")) == "schema"
    assert reason_for(encoded(timeframe="1m\n")) == "schema"
    patterned = [
        (name, meta.pattern)
        for module in (market, signals, trades)
        for name, hint in vars(module).items()
        for meta in getattr(hint, "__metadata__", ())
        if isinstance(meta, msgspec.Meta) and meta.pattern
    ]
    assert {"Symbol", "Timeframe", "ModelVersion", "StrategyId", "FillId", "TradeId"} <= {name for name, _ in patterned}
    assert all(pattern.endswith("\\Z") for _, pattern in patterned), patterned


def test_the_zero_time_is_refused_and_the_first_microsecond_after_it_is_not():
    assert reason_for(encoded(ts="1970-01-01T00:00:00Z")) == "bad_timestamp"
    assert codec.decode(encoded(ts="1970-01-01T00:00:00.000001Z"), now=NOW).ts.year == 1970


def test_volumes_and_counts_are_bounded_so_a_periods_sum_fits_a_bigint():
    from tickwire.schemas.market import MAX_BARS_PER_PERIOD, MAX_VOLUME

    assert MAX_BARS_PER_PERIOD * MAX_VOLUME < 2**63 and MAX_BARS_PER_PERIOD >= 1440  # a day of 1m bars
    assert codec.decode(encoded(volume=MAX_VOLUME, trade_count=MAX_VOLUME), now=NOW).volume == MAX_VOLUME
    assert reason_for(encoded(volume=MAX_VOLUME + 1)) == "schema"
    assert reason_for(encoded(trade_count=2**64)) == "schema"


def test_prices_the_columns_cannot_keep_are_refused():
    assert reason_for(encoded(open=1e9, high=1e9)) == "schema"  # its Bollinger band could pass DECIMAL(18, 8)
    assert reason_for(encoded(low=5e-9)) == "schema"  # would be stored as 0
    assert codec.decode(encoded(open=1e-8, low=1e-8), now=NOW).low == 1e-8


def test_a_key_given_twice_is_refused_at_any_depth_and_a_name_reused_elsewhere_is_not():
    twice = encoded()[:-1] + b',"close":99.0}'
    assert reason_for(twice) == "schema"
    from tickwire.schemas.signals import Prediction

    predictions = Codec(Prediction)
    good = {
        "prediction_id": "6f1c1a52-7c39-4c27-9b7e-1d2b5f1f0b11", "symbol": "AAPL", "model_version": "v1",
        "model_type": "xgb", "predicted_at": "2026-03-02T14:30:00Z", "predicted_direction": "LONG",
        "prediction_horizon_minutes": 15, "feature_vector": {"symbol": "ignored", "deep": {"a": 1}},
    }
    assert predictions.decode(msgspec.json.encode(good), now=NOW).feature_vector["symbol"] == "ignored"
    nested_twice = msgspec.json.encode(good).replace(b'{"a":1}', b'{"a":1,"a":2}')
    with pytest.raises(InvalidMessage) as refused:
        predictions.decode(nested_twice, now=NOW)
    assert refused.value.reason == "schema" and "'a' appears twice" in refused.value.detail
