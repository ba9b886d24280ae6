"""A corpus of hostile messages on every input topic (md.bars.v1, signals.predictions.v1,
exec.fills.v1, md.trades.v1, exec.sizing.v1, exec.exits.v1): each lands in the DLQ with
its reason and source topic, partition and offset, is counted per topic and reason, and
every good message around it is processed. Duplicate ids are not dead-lettered: they are
dropped and counted.

One worker and one sink take all the corpora at once (published interleaved with good
messages); one test per topic then checks its part."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import NamedTuple

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tickwire.schemas.codec import DLQ_MAX_VALUE_BYTES
from tickwire.schemas.topics import BARS, DLQ, EXITS, FILLS, PREDICTIONS, SIZING, TRADES
from tickwire.streams.topics import ensure_topics
from tickwire.streams.simulator import MarketSimulator
from tests.conftest import wait_for
from tests.integration.test_pipeline import START, sample, scrape

pytestmark = pytest.mark.integration

_DROP = object()
encode = msgspec.json.Encoder().encode


def _message(base: dict, changes: dict) -> bytes:
    body = {**base, **changes}
    return encode({k: v for k, v in body.items() if v is not _DROP})


def _raw_value(value: bytes, field: str, base: dict, literal: bytes) -> bytes:
    """``value`` with ``field``'s JSON value replaced by ``literal`` (NaN, Infinity, 1e999 ...)."""
    old = f'"{field}":'.encode() + encode(base[field])
    assert old in value
    return value.replace(old, f'"{field}":'.encode() + literal)


def _ts(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


class Case(NamedTuple):
    """One message of a stream: good (reason ``None``), hostile (a DLQ reason) or a duplicate."""

    kind: str
    key: bytes
    value: bytes
    headers: list | None = None
    reason: str | None = None
    duplicate: bool = False


def good(key: bytes, value: bytes, kind: str = "good") -> Case:
    return Case(kind, key, value)


# --- md.bars.v1 -----------------------------------------------------------------------

good_bars = list(MarketSimulator(["HOST"], seed=3, start=START).bars(40))
bar_base = msgspec.json.decode(encode(good_bars[5]))


def bar(**changes) -> bytes:
    return _message(bar_base, changes)


# (kind, key, value, headers, expected reason)
BAR_CORPUS = [
    ("invalid utf-8", b"HOST", b'{"symbol": "HO\xff\xfeST"}', None, "not_utf8"),
    ("not json", b"HOST", b"symbol=HOST,close=1", None, "not_json"),
    ("truncated json", b"HOST", bar()[:-3], None, "not_json"),
    ("json array", b"HOST", b"[1, 2, 3]", None, "schema"),
    ("json number", b"HOST", b"42", None, "schema"),
    ("wrong type", b"HOST", bar(open="100.0"), None, "schema"),
    ("missing field", b"HOST", bar(close=_DROP), None, "schema"),
    ("null field", b"HOST", bar(high=None), None, "schema"),
    ("huge extra field", b"HOST", bar(comment="x" * 500_000), None, "schema"),
    ("NaN", b"HOST", _raw_value(bar(), "open", bar_base, b"NaN"), None, "not_json"),
    ("Infinity", b"HOST", _raw_value(bar(), "high", bar_base, b"Infinity"), None, "not_json"),
    ("overflowing number", b"HOST", _raw_value(bar(), "low", bar_base, b"1e999"), None, "schema"),
    ("zero price", b"HOST", bar(open=0), None, "schema"),
    ("negative price", b"HOST", bar(low=-1.0), None, "schema"),
    ("high below low", b"HOST", bar(high=bar_base["low"] - 1, ts="2026-03-05T00:00:00Z"), None, "invalid_value"),
    ("close above high", b"HOST", bar(close=bar_base["high"] + 1, ts="2026-03-05T00:01:00Z"), None, "invalid_value"),
    ("negative volume", b"HOST", bar(volume=-10), None, "schema"),
    ("fractional volume", b"HOST", bar(volume=10.5), None, "schema"),
    ("before 1970", b"HOST", bar(ts="1969-07-20T20:17:00Z"), None, "bad_timestamp"),
    ("years ahead", b"HOST", bar(ts="2099-01-01T00:00:00Z"), None, "bad_timestamp"),
    ("naive timestamp", b"HOST", bar(ts="2026-03-02T14:30:00"), None, "schema"),
    ("not a timestamp", b"HOST", bar(ts="yesterday"), None, "schema"),
    ("symbol too long", b"HOSTHOSTHOST", bar(symbol="HOSTHOSTHOST"), None, "schema"),
    ("control characters", b"HO\x07ST", bar(symbol="HO\u0007ST"), None, "schema"),
    ("sql in symbol", b"X'; DROP", bar(symbol="X'; DROP TABLE market_conditions;--"), None, "schema"),
    ("sql in timeframe", b"HOST", bar(timeframe="1m'; DELETE FROM market_conditions;--"), None, "schema"),
    ("key is not the symbol", b"OTHER", bar(ts="2026-03-05T00:02:00Z"), None, "invalid_value"),
    ("empty message", b"HOST", b"", None, "empty"),
    ("10 MB message", b"HOST", b'{"symbol":"' + b"A" * 10_000_000 + b'"}', None, "too_large"),
    ("unknown schema version", b"HOST", bar(ts="2026-03-05T00:03:00Z"), [("tickwire.schema.version", b"7")], "unknown_version"),
    ("out of order bar", b"HOST", encode(good_bars[2]), None, "late_bar"),
    # After the last good bar (good_bars[39]), with no good bar between them:
    ("symbol with a trailing newline", b"HOST", bar(symbol="HOST\n"), None, "schema"),
    ("the zero time", b"HOST", bar(ts="1970-01-01T00:00:00Z"), None, "bad_timestamp"),
    ("volume past the bound", b"HOST", bar(volume=10**15 + 1), None, "schema"),
    ("the last bar again, other volume", b"HOST", encode(msgspec.structs.replace(good_bars[39], volume=good_bars[39].volume + 1)),
     None, "conflicting_duplicate"),
    ("a feed's bar of a resampled timeframe", b"HOST", bar(timeframe="5m"), None, "conflicting_source"),
]


def bar_stream() -> list[Case]:
    cases = [good(b"HOST", encode(b)) for b in good_bars[:10]]
    for i, (kind, key, value, headers, reason) in enumerate(BAR_CORPUS):
        cases.append(Case(kind, key, value, headers, reason))
        if i < 30:
            cases.append(good(b"HOST", encode(good_bars[10 + i])))
    return cases


# --- signals.predictions.v1 -----------------------------------------------------------

PRED = "PRED"
SQL_MODEL_TYPE = "x'); DROP TABLE t;--"  # 20 characters: a valid model_type, stored verbatim


def _prediction(i: int, **changes) -> dict:
    body = {
        "prediction_id": str(uuid.UUID(int=0xB0B0_0000 + i)),
        "model_version": "hostile-1",
        "model_type": "momentum",
        "symbol": PRED,
        "predicted_at": _ts(i),
        "prediction_horizon_minutes": 15,
        "predicted_direction": ("LONG", "SHORT", "NEUTRAL")[i % 3],
        "confidence_score": 0.65,
        "predicted_volatility": 0.012,
        "feature_vector": {"momentum": 0.002, "lookback": 10},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


pred_base = _prediction(100)


def pred(**changes) -> bytes:
    return _message(pred_base, changes)


_deep = b'{"deep":' + b"[" * 2000 + b"1" + b"]" * 2000 + b"}"
PREDICTION_CORPUS = [
    ("invalid utf-8", PRED.encode(), b'{"symbol": "PR\xffED"}', None, "not_utf8"),
    ("not json", PRED.encode(), b"prediction_id=1;direction=LONG", None, "not_json"),
    ("empty message", PRED.encode(), b"", None, "empty"),
    ("json array", PRED.encode(), b'["LONG", 0.7]', None, "schema"),
    ("wrong type", PRED.encode(), pred(prediction_horizon_minutes="15"), None, "schema"),
    ("missing field", PRED.encode(), pred(feature_vector=_DROP), None, "schema"),
    ("unknown field", PRED.encode(), pred(target_price=101.5), None, "schema"),
    ("feature_vector not an object", PRED.encode(), pred(feature_vector=[1, 2, 3]), None, "schema"),
    ("NaN confidence", PRED.encode(), _raw_value(encode(pred_base), "confidence_score", pred_base, b"NaN"), None, "not_json"),
    ("Infinity volatility", PRED.encode(), _raw_value(encode(pred_base), "predicted_volatility", pred_base, b"Infinity"), None, "not_json"),
    ("overflowing confidence", PRED.encode(), _raw_value(encode(pred_base), "confidence_score", pred_base, b"1e999"), None, "schema"),
    ("confidence above 1", PRED.encode(), pred(confidence_score=1.5), None, "invalid_value"),
    ("confidence below 0", PRED.encode(), pred(confidence_score=-0.1), None, "invalid_value"),
    ("unknown direction", PRED.encode(), pred(predicted_direction="UP"), None, "invalid_value"),
    ("zero horizon", PRED.encode(), pred(prediction_horizon_minutes=0), None, "invalid_value"),
    ("negative horizon", PRED.encode(), pred(prediction_horizon_minutes=-15), None, "invalid_value"),
    ("negative volatility", PRED.encode(), pred(predicted_volatility=-0.5), None, "invalid_value"),
    ("before 1970", PRED.encode(), pred(predicted_at="1969-07-20T20:17:00Z"), None, "bad_timestamp"),
    ("years ahead", PRED.encode(), pred(predicted_at="2099-01-01T00:00:00Z"), None, "bad_timestamp"),
    ("naive timestamp", PRED.encode(), pred(predicted_at="2026-03-02T14:30:00"), None, "schema"),
    ("prediction_id not a uuid", PRED.encode(), pred(prediction_id="1; DROP TABLE model_predictions"), None, "schema"),
    ("sql in symbol", b"X'; DROP", pred(symbol="X'; DROP TABLE model_predictions;--"), None, "schema"),
    ("sql in model_version", PRED.encode(), pred(model_version="v1'; DELETE FROM model_predictions;--"), None, "schema"),
    ("NUL in model_version", PRED.encode(), pred(model_version="v1\u0000"), None, "schema"),
    ("NUL in feature_vector", PRED.encode(), pred(feature_vector={"note": "a\u0000b"}), None, "invalid_value"),
    ("deeply nested feature_vector", PRED.encode(), encode(pred_base).replace(b'{"momentum":0.002,"lookback":10}', _deep), None, "schema"),
    ("key is not the symbol", b"OTHER", pred(), None, "invalid_value"),
    ("unknown schema version", PRED.encode(), pred(), [("tickwire.schema.version", b"2")], "unknown_version"),
]
GOOD_PREDICTIONS = 14


def prediction_stream() -> list[Case]:
    goods = [_prediction(i) for i in range(GOOD_PREDICTIONS)]
    goods[3]["model_type"] = SQL_MODEL_TYPE
    cases: list[Case] = []
    hostile = [Case(kind, key, value, headers, reason) for kind, key, value, headers, reason in PREDICTION_CORPUS]
    for i, body in enumerate(goods):
        cases.append(good(PRED.encode(), encode(body)))
        cases += hostile[2 * i: 2 * i + 2]
    cases += hostile[2 * len(goods):]
    # The same prediction_id again, after other messages: dropped and counted, not dead-lettered.
    cases.append(Case("duplicate prediction_id", PRED.encode(), encode(goods[5]), duplicate=True))
    return cases


# --- exec.fills.v1 --------------------------------------------------------------------

FILL = "FILL"
STRATEGY = "hostile-strategy"


def _fill(trade: int, leg: str, side: str, quantity: int, price: float, minutes: float, **changes) -> dict:
    body = {
        "fill_id": f"t{trade}-{leg}",
        "trade_id": str(uuid.UUID(int=0xF111_0000 + trade)),
        "strategy_id": STRATEGY,
        "model_version": "hostile-1",
        "symbol": FILL,
        "side": side,
        "ts": _ts(minutes),
        "price": price,
        "quantity": quantity,
        "commission": 1.0,
        "decision_price": price,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


fill_base = _fill(99, "x", "BUY", 10, 100.0, 0)


def fill(**changes) -> bytes:
    """A lone hostile fill of its own (never opened) trade."""
    return _message(fill_base, changes)


# Trades 1..6: each opened by a good fill and closed by another. (trade, leg, side, qty, price, minutes)
GOOD_FILLS = [
    (1, "open", "BUY", 10, 100.0, 1), (1, "close", "SELL", 10, 101.0, 5),
    (2, "open", "SELL", 5, 50.0, 2), (2, "close", "BUY", 5, 49.0, 6),
    (3, "open", "BUY", 7, 20.0, 3), (3, "close", "SELL", 7, 19.0, 7),
    (4, "open", "SELL", 3, 80.0, 4), (4, "close", "BUY", 3, 80.0, 8),
    (5, "open", "BUY", 100, 10.0, 9), (5, "close", "SELL", 100, 10.5, 12),
    (6, "open", "BUY", 1, 5.0, 10), (6, "close", "SELL", 1, 4.0, 13),
]
FILL_CORPUS = [
    ("invalid utf-8", FILL.encode(), b'{"symbol": "FI\xffLL"}', None, "not_utf8"),
    ("not json", FILL.encode(), b"<fill id=1/>", None, "not_json"),
    ("empty message", FILL.encode(), b"", None, "empty"),
    ("wrong type", FILL.encode(), fill(quantity="10"), None, "schema"),
    ("missing field", FILL.encode(), fill(price=_DROP), None, "schema"),
    ("unknown field", FILL.encode(), fill(venue="XNYS"), None, "schema"),
    ("NaN price", FILL.encode(), _raw_value(encode(fill_base), "price", fill_base, b"NaN"), None, "not_json"),
    ("Infinity commission", FILL.encode(), _raw_value(encode(fill_base), "commission", fill_base, b"Infinity"), None, "not_json"),
    ("overflowing price", FILL.encode(), _raw_value(encode(fill_base), "price", fill_base, b"1e999"), None, "schema"),
    ("zero price", FILL.encode(), fill(price=0.0), None, "invalid_value"),
    ("negative price", FILL.encode(), fill(price=-3.0), None, "invalid_value"),
    ("zero quantity", FILL.encode(), fill(quantity=0), None, "invalid_value"),
    ("negative quantity", FILL.encode(), fill(quantity=-10), None, "invalid_value"),
    ("fractional quantity", FILL.encode(), fill(quantity=2.5), None, "schema"),
    ("unknown side", FILL.encode(), fill(side="HOLD"), None, "invalid_value"),
    ("negative commission", FILL.encode(), fill(commission=-1.0), None, "invalid_value"),
    ("commission beyond DECIMAL(18,4)", FILL.encode(), fill(commission=1e300), None, "invalid_value"),
    ("before 1970", FILL.encode(), fill(ts="1969-07-20T20:17:00Z"), None, "bad_timestamp"),
    ("years ahead", FILL.encode(), fill(ts="2099-01-01T00:00:00Z"), None, "bad_timestamp"),
    ("trade_id not a uuid", FILL.encode(), fill(trade_id="42"), None, "schema"),
    ("sql in strategy_id", FILL.encode(), fill(strategy_id="s'; DROP TABLE trade_outcomes;--"), None, "schema"),
    ("sql in symbol", b"X'; DROP", fill(symbol="X'; DROP TABLE trade_outcomes;--"), None, "schema"),
    ("NUL in model_version", FILL.encode(), fill(model_version="v\u00001"), None, "schema"),
    ("key is not the symbol", b"OTHER", fill(), None, "invalid_value"),
    ("unknown schema version", FILL.encode(), fill(), [("tickwire.schema.version", b"0")], "unknown_version"),
]


def fill_stream() -> list[Case]:
    goods = {(t, leg): good(FILL.encode(), encode(_fill(t, leg, side, q, p, m))) for t, leg, side, q, p, m in GOOD_FILLS}
    hostile = iter(Case(kind, key, value, headers, reason) for kind, key, value, headers, reason in FILL_CORPUS)
    # Breaking a trade's rules needs the trade: these sit right where they break it.
    stateful = {
        (1, "open"): [Case("closing fill larger than the position", FILL.encode(),
                           encode(_fill(1, "big", "SELL", 20, 101.0, 2)), reason="invalid_value")],
        (1, "close"): [Case("fill on a closed trade", FILL.encode(),
                            encode(_fill(1, "late", "SELL", 5, 101.0, 6)), reason="invalid_value")],
        (2, "open"): [
            Case("fill older than the trade's last fill", FILL.encode(),
                 encode(_fill(2, "old", "SELL", 1, 50.0, 1.5)), reason="out_of_order"),
            Case("fill of another strategy", FILL.encode(),
                 encode(_fill(2, "other", "SELL", 1, 50.0, 2.5, strategy_id="someone-else")), reason="invalid_value"),
            Case("duplicate fill_id", FILL.encode(), goods[(2, "open")].value, duplicate=True),
        ],
    }
    cases: list[Case] = []
    for t, leg, *_ in sorted(GOOD_FILLS, key=lambda f: f[-1]):
        cases.append(goods[(t, leg)])
        cases += stateful.get((t, leg), [])
        cases += [c for c in (next(hostile, None), next(hostile, None)) if c]
    cases += list(hostile)
    return cases


# --- md.trades.v1 ---------------------------------------------------------------------

TRDS = "TRDS"
TRADE_MINUTES = 12  # trades in minutes 0..11: the first 11 minutes' bars close


def _trade(n: int, minutes: float, price: float, size: int = 10, **changes) -> dict:
    body = {"symbol": TRDS, "ts": _ts(minutes), "price": price, "size": size, "trade_id": str(n)}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


trade_base = _trade(9999, 3.5, 100.0)


def trade(**changes) -> bytes:
    return _message(trade_base, changes)


TRADE_CORPUS = [
    ("invalid utf-8", TRDS.encode(), b'{"symbol": "TR\xffDS"}', None, "not_utf8"),
    ("not json", TRDS.encode(), b"TRDS 100.0 x 10", None, "not_json"),
    ("empty message", TRDS.encode(), b"", None, "empty"),
    ("json string", TRDS.encode(), b'"trade"', None, "schema"),
    ("wrong type", TRDS.encode(), trade(size="10"), None, "schema"),
    ("missing field", TRDS.encode(), trade(trade_id=_DROP), None, "schema"),
    ("unknown field", TRDS.encode(), trade(exchange="XNAS"), None, "schema"),
    ("NaN price", TRDS.encode(), _raw_value(encode(trade_base), "price", trade_base, b"NaN"), None, "not_json"),
    ("Infinity price", TRDS.encode(), _raw_value(encode(trade_base), "price", trade_base, b"Infinity"), None, "not_json"),
    ("overflowing price", TRDS.encode(), _raw_value(encode(trade_base), "price", trade_base, b"1e999"), None, "schema"),
    ("zero price", TRDS.encode(), trade(price=0), None, "schema"),
    ("negative price", TRDS.encode(), trade(price=-100.0), None, "schema"),
    ("zero size", TRDS.encode(), trade(size=0), None, "schema"),
    ("fractional size", TRDS.encode(), trade(size=0.5), None, "schema"),
    ("before 1970", TRDS.encode(), trade(ts="1969-07-20T20:17:00Z"), None, "bad_timestamp"),
    ("years ahead", TRDS.encode(), trade(ts="2099-01-01T00:00:00Z"), None, "bad_timestamp"),
    ("naive timestamp", TRDS.encode(), trade(ts="2026-03-02T14:33:30"), None, "schema"),
    ("sql in trade_id", TRDS.encode(), trade(trade_id="1'; DROP TABLE market_conditions;--"), None, "schema"),
    ("sql in symbol", b"X'; DROP", trade(symbol="X'; DROP TABLE market_conditions;--"), None, "schema"),
    ("control characters in symbol", b"TR\x00DS", trade(symbol="TR\u0000DS"), None, "schema"),
    ("key is not the symbol", b"OTHER", trade(), None, "invalid_value"),
    ("unknown schema version", TRDS.encode(), trade(), [("tickwire.schema.version", b"v1")], "unknown_version"),
]


def trade_stream() -> list[Case]:
    hostile = iter(Case(kind, key, value, headers, reason) for kind, key, value, headers, reason in TRADE_CORPUS)
    cases: list[Case] = []
    n = 0
    for minute in range(TRADE_MINUTES):
        for second in (5, 25, 45):
            n += 1
            cases.append(good(TRDS.encode(), encode(_trade(n, minute + second / 60, 100.0 + minute + second / 100, 10 + n))))
            if minute == 4 and second == 25:
                # The trade just sent, again (it closed nothing): dropped and counted.
                cases.append(Case("duplicate trade_id", TRDS.encode(), cases[-1].value, duplicate=True))
                # A new trade in minute 1, closed long ago.
                cases.append(Case("trade in a closed period", TRDS.encode(), encode(_trade(9000, 1.5, 100.0)), reason="out_of_order"))
        cases += [c for c in (next(hostile, None), next(hostile, None)) if c]
    cases += list(hostile)
    return cases


# --- exec.sizing.v1 and exec.exits.v1: decisions of the good fills' trades ---------------

OPENED = {t: (q, p, m) for t, leg, _, q, p, m in GOOD_FILLS if leg == "open"}
CLOSED = {t: (p, m) for t, leg, _, _, p, m in GOOD_FILLS if leg == "close"}


def _sizing(trade: int, **changes) -> dict:
    """Trade ``trade``'s sizing decision, half a minute before its opening fill."""
    quantity, _, minutes = OPENED.get(trade, (10, 0, 0.5))
    body = {"kind": "decision", "decision_id": str(uuid.UUID(int=0x5122_0000 + trade)), "strategy_id": STRATEGY, "symbol": FILL,
            "trade_id": str(uuid.UUID(int=0xF111_0000 + trade)), "ts": _ts(minutes - 0.5), "account_value": 1e5,
            "risk_per_trade": 0.01, "stop_distance": 1.0, "quantity": quantity}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


def _exit(trade: int, **changes) -> dict:
    """Trade ``trade``'s exit decision, at its closing fill's time and price."""
    quantity = OPENED.get(trade, (10,))[0]
    price, minutes = CLOSED.get(trade, (100.0, 1))
    body = {"exit_id": str(uuid.UUID(int=0xE417_0000 + trade)), "trade_id": str(uuid.UUID(int=0xF111_0000 + trade)),
            "strategy_id": STRATEGY, "symbol": FILL, "ts": _ts(minutes), "reason": "target", "price": price, "quantity": quantity}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


sizing_base, exit_base = _sizing(99), _exit(99)


def sizing(**changes) -> bytes:
    return _message(sizing_base, changes)


def exit_(**changes) -> bytes:
    return _message(exit_base, changes)


CONFIG = {"kind": "config", "config_id": str(uuid.UUID(int=0xC0F1)), "strategy_id": STRATEGY, "symbol": FILL, "ts": _ts(0),
          "method": "fixed_fractional", "risk_per_trade": 0.01}
SIZING_CORPUS = [
    ("not json", FILL.encode(), b"kind=decision", None, "not_json"),
    ("no kind", FILL.encode(), sizing(kind=_DROP), None, "schema"),
    ("unknown kind", FILL.encode(), sizing(kind="order"), None, "schema"),
    ("unknown field", FILL.encode(), sizing(leverage=3), None, "schema"),
    ("NaN stop distance", FILL.encode(), _raw_value(encode(sizing_base), "stop_distance", sizing_base, b"NaN"), None, "not_json"),
    ("zero stop distance", FILL.encode(), sizing(stop_distance=0.0), None, "invalid_value"),
    ("risk above the account", FILL.encode(), sizing(risk_per_trade=1.5), None, "invalid_value"),
    ("negative quantity", FILL.encode(), sizing(quantity=-1), None, "invalid_value"),
    ("adjustment a hundredfold", FILL.encode(), sizing(regime_adjustment=100.0), None, "invalid_value"),
    ("years ahead", FILL.encode(), sizing(ts="2099-01-01T00:00:00Z"), None, "bad_timestamp"),
    ("unknown sizing method", FILL.encode(), encode({**CONFIG, "method": "martingale"}), None, "invalid_value"),
    ("key is not the symbol", b"OTHER", sizing(), None, "invalid_value"),
]
EXIT_CORPUS = [
    ("empty message", FILL.encode(), b"", None, "empty"),
    ("unknown reason", FILL.encode(), exit_(reason="panic"), None, "invalid_value"),
    ("zero price", FILL.encode(), exit_(price=0.0), None, "invalid_value"),
    ("zero quantity", FILL.encode(), exit_(quantity=0), None, "invalid_value"),
    ("trade_id not a uuid", FILL.encode(), exit_(trade_id="42"), None, "schema"),
    ("partial not a bool", FILL.encode(), exit_(partial="yes"), None, "schema"),
    ("sql in strategy_id", FILL.encode(), exit_(strategy_id="s'; DROP TABLE smart_exit_history;--"), None, "schema"),
    ("unknown schema version", FILL.encode(), exit_(), [("tickwire.schema.version", b"0")], "unknown_version"),
]


def decision_stream(make, corpus) -> list[Case]:
    """A good decision per good trade, the first again (a duplicate) and reused with another
    quantity (``conflicting_id``), the corpus in between."""
    goods = [good(FILL.encode(), encode(make(t))) for t in sorted(OPENED)]
    hostile = [Case(kind, key, value, headers, reason) for kind, key, value, headers, reason in corpus]
    return [
        goods[0], Case("duplicate decision", FILL.encode(), goods[0].value, duplicate=True),
        Case("id reused with other values", FILL.encode(), encode(make(1, quantity=OPENED[1][0] - 1)), reason="conflicting_id"),
        *[case for pair in zip(goods[1:], hostile) for case in pair], *hostile[len(goods) - 1:], *goods[len(hostile) + 1:],
    ]


# --- the run --------------------------------------------------------------------------

STREAMS = {
    BARS: bar_stream(), PREDICTIONS: prediction_stream(), FILLS: fill_stream(), TRADES: trade_stream(),
    SIZING: [good(FILL.encode(), encode(CONFIG)), *decision_stream(_sizing, SIZING_CORPUS)], EXITS: decision_stream(_exit, EXIT_CORPUS),
}


class Run(NamedTuple):
    settings: object
    processes: object
    port: int
    sent: dict  # (topic, partition, offset) -> Case
    found: dict  # (source topic, partition, offset) -> (reason, value, headers)


@pytest.fixture(scope="module")
async def run(isolated, processes) -> Run:
    await ensure_topics(isolated)
    _, port = processes.start("worker")
    processes.start("sink")
    producer = AIOKafkaProducer(**isolated.kafka_options(), acks="all", max_request_size=12_000_000)
    await producer.start()
    sent = {}
    try:
        # Round-robin over the topics, so the four corpora are in flight together.
        queues = {isolated.topic(spec.name): list(cases) for spec, cases in STREAMS.items()}
        while any(queues.values()):
            for topic, queue in queues.items():
                if queue:
                    case = queue.pop(0)
                    meta = await producer.send_and_wait(topic, key=case.key, value=case.value, headers=case.headers)
                    sent[(topic, meta.partition, meta.offset)] = case
    finally:
        await producer.stop()

    expected = sum(1 for case in sent.values() if case.reason)
    consumer = AIOKafkaConsumer(
        isolated.topic(DLQ.name), **isolated.kafka_options(), auto_offset_reset="earliest", fetch_max_bytes=64_000_000,
        max_partition_fetch_bytes=16_000_000,
    )
    await consumer.start()
    found = {}
    try:
        for _ in range(240):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    h = dict(r.headers)
                    where = (h["tickwire.source.topic"].decode(), int(h["tickwire.source.partition"]), int(h["tickwire.source.offset"]))
                    found[where] = (h["tickwire.reason"].decode(), r.value, h)
            if len(found) >= expected:
                break
            processes.check_alive()
    finally:
        await consumer.stop()
    return Run(isolated, processes, port, sent, found)


def check_dead_letters(run: Run, spec) -> None:
    """Every hostile message of ``spec``'s topic, and nothing else, is in the DLQ with its
    reason, source topic, partition and offset and original bytes; and counted."""
    topic = run.settings.topic(spec.name)
    mine = {where: case for where, case in run.sent.items() if where[0] == topic}
    expected = {case.kind: case.reason for case in mine.values() if case.reason}
    assert len(expected) == sum(1 for case in mine.values() if case.reason), "kinds must be unique"
    dead = {where: found for where, found in run.found.items() if where[0] == topic}
    # Only hostile messages are dead-lettered: no good message, no duplicate.
    assert {mine[where].kind for where in dead} == set(expected)
    got = {mine[where].kind: reason for where, (reason, _, _) in dead.items()}
    assert got == expected
    for where, (_, value, headers) in dead.items():
        assert value == mine[where].value[:DLQ_MAX_VALUE_BYTES], mine[where].kind
        assert headers["tickwire.source.topic"].decode() == topic and headers["tickwire.detail"]
    metrics = scrape(run.port)
    counted = {
        reason: sample(metrics, "tickwire_dlq_messages_total", topic=topic, reason=reason) for reason in set(expected.values())
    }
    assert counted == Counter(expected.values())
    total = sum(v for (name, labels), v in metrics.items() if name == "tickwire_dlq_messages_total" and ("topic", topic) in labels)
    assert total == len(expected)
    duplicates = sum(1 for case in mine.values() if case.duplicate)
    assert sample(metrics, "tickwire_duplicates_dropped_total", topic=topic) == duplicates


async def _settled(run: Run, query: str, *args, want: int) -> int:
    conn = await asyncpg.connect(**run.settings.pg_options())
    try:
        async def enough():
            return await conn.fetchval(query, *args) >= want

        await wait_for(enough, timeout_s=120, check=run.processes.check_alive)
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def test_hostile_bars_are_dead_lettered_and_good_ones_flow(run):
    check_dead_letters(run, BARS)
    count = "SELECT count(*) FROM market_conditions WHERE symbol = 'HOST' AND timeframe = '1m'"
    assert await _settled(run, count, want=40) == 40
    # Nothing under any other symbol than the two that were sent good data (HOST bars, TRDS trades).
    assert await _settled(run, "SELECT count(*) FROM market_conditions WHERE symbol NOT IN ('HOST', 'TRDS')", want=0) == 0
    run.processes.check_alive()


async def test_hostile_predictions_are_dead_lettered_and_good_ones_flow(run):
    check_dead_letters(run, PREDICTIONS)
    count = "SELECT count(*) FROM model_predictions WHERE symbol = $1"
    assert await _settled(run, count, PRED, want=GOOD_PREDICTIONS) == GOOD_PREDICTIONS
    conn = await asyncpg.connect(**run.settings.pg_options())
    try:
        rows = await conn.fetch("SELECT prediction_id, model_type FROM model_predictions ORDER BY predicted_at")
        assert [r["prediction_id"] for r in rows] == [uuid.UUID(int=0xB0B0_0000 + i) for i in range(GOOD_PREDICTIONS)]
        # A SQL-looking string the schema allows is data: stored verbatim, the table intact.
        assert rows[3]["model_type"] == SQL_MODEL_TYPE
    finally:
        await conn.close()
    run.processes.check_alive()


async def test_hostile_fills_are_dead_lettered_and_good_ones_flow(run):
    check_dead_letters(run, FILLS)
    trades = len({t for t, *_ in GOOD_FILLS})
    closed = "SELECT count(*) FROM trade_outcomes WHERE symbol = $1 AND outcome_type <> 'OPEN'"
    assert await _settled(run, closed, FILL, want=trades) == trades
    conn = await asyncpg.connect(**run.settings.pg_options())
    try:
        rows = await conn.fetch(
            "SELECT trade_id, strategy_id, quantity, entry_price::float8 AS entry, exit_price::float8 AS exit, commission::float8 AS fee "
            "FROM trade_outcomes ORDER BY entry_time"
        )
    finally:
        await conn.close()
    opened = {t: (q, p) for t, leg, _, q, p, _ in GOOD_FILLS if leg == "open"}
    exits = {t: p for t, leg, _, _, p, _ in GOOD_FILLS if leg == "close"}
    # Exactly the good trades, untouched by the hostile fills aimed at them.
    assert {r["trade_id"]: (r["strategy_id"], r["quantity"], r["entry"], r["exit"], r["fee"]) for r in rows} == {
        uuid.UUID(int=0xF111_0000 + t): (STRATEGY, q, p, exits[t], 2.0) for t, (q, p) in opened.items()
    }
    run.processes.check_alive()


async def test_hostile_trades_are_dead_lettered_and_good_ones_flow(run):
    check_dead_letters(run, TRADES)
    bars = TRADE_MINUTES - 1  # the last minute's bar stays open: no later trade closed it
    count = "SELECT count(*) FROM market_conditions WHERE symbol = $1 AND timeframe = '1m'"
    assert await _settled(run, count, TRDS, want=bars) == bars
    conn = await asyncpg.connect(**run.settings.pg_options())
    try:
        rows = await conn.fetch(
            "SELECT timestamp, volume FROM market_conditions WHERE symbol = $1 AND timeframe = '1m' ORDER BY timestamp", TRDS
        )
    finally:
        await conn.close()
    # Each bar holds exactly its minute's three good trades (sizes 10 + n): none lost, none doubled.
    assert [r["timestamp"] for r in rows] == [START + timedelta(minutes=m) for m in range(bars)]
    assert [r["volume"] for r in rows] == [sum(10 + n for n in range(3 * m + 1, 3 * m + 4)) for m in range(bars)]
    run.processes.check_alive()


async def test_hostile_sizing_decisions_are_dead_lettered_and_good_ones_joined(run):
    check_dead_letters(run, SIZING)
    joined = "SELECT count(*) FROM position_sizing_history WHERE realized_pnl IS NOT NULL"
    assert await _settled(run, joined, want=len(OPENED)) == len(OPENED)
    conn = await asyncpg.connect(**run.settings.pg_options())
    try:
        rows = {r["trade_id"]: r for r in await conn.fetch("SELECT * FROM position_sizing_history")}
        assert await conn.fetchval("SELECT count(*) FROM position_sizing_config_history") == 1
    finally:
        await conn.close()
    assert set(rows) == {uuid.UUID(int=0xF111_0000 + t) for t in OPENED}
    # Trade 1: 10 bought at 100, sold at 101, 2 of commission; 10 planned at a stop of 1.
    first = rows[uuid.UUID(int=0xF111_0001)]
    assert (first["quantity"], float(first["planned_risk"]), float(first["realized_pnl"])) == (10, 10.0, 8.0)
    assert first["config_id"] == uuid.UUID(int=0xC0F1)
    run.processes.check_alive()


async def test_hostile_exit_decisions_are_dead_lettered_and_good_ones_joined(run):
    check_dead_letters(run, EXITS)
    joined = "SELECT count(*) FROM smart_exit_history WHERE trade_closed_at IS NOT NULL"
    assert await _settled(run, joined, want=len(OPENED)) == len(OPENED)
    conn = await asyncpg.connect(**run.settings.pg_options())
    try:
        rows = {r["trade_id"]: r for r in await conn.fetch("SELECT * FROM smart_exit_history")}
    finally:
        await conn.close()
    assert set(rows) == {uuid.UUID(int=0xF111_0000 + t) for t in OPENED}
    # Trade 2: 5 sold short at 50, bought back at 49 (the exit's price): +5, all of its MFE.
    second = rows[uuid.UUID(int=0xF111_0002)]
    assert (second["direction"], second["quantity"], float(second["exit_pnl"])) == ("SHORT", 5, 5.0)
    run.processes.check_alive()
