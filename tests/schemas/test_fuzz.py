"""Property-based fuzzing of the decoders: any input is accepted as valid or rejected with a reason."""

from datetime import datetime, timezone

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from schemas.errors import REASONS, InvalidMessage
from schemas.market import Bar

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
