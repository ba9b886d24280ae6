"""The machine-readable contract: JSON Schemas that accept what the codecs accept and
refuse what they refuse, and an AsyncAPI document whose references all resolve."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import jsonschema
import msgspec
import pytest

from tickwire.schemas.contract import INPUTS, OUTPUTS, schema_version, write
from tickwire.schemas.topics import ALL, BARS, CONDITIONS_BY_TIMEFRAME, DLQ, EXPIRY_TICKS
from tickwire.streams.simulator import MarketSimulator, ToyStrategy
from tickwire.streams.symbol import SymbolProcessor, SymbolState


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    out = tmp_path_factory.mktemp("contract")
    write(out)
    return out


def validator(contract, topic) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((contract / f"{topic.name}.schema.json").read_text()))


def test_every_public_topic_has_a_schema_and_the_asyncapi_document_points_at_them(contract):
    public = set(ALL) - {CONDITIONS_BY_TIMEFRAME, EXPIRY_TICKS, DLQ}  # internal, and the DLQ's bytes are the producer's
    assert set(INPUTS) | set(OUTPUTS) == public
    document = json.loads((contract / "asyncapi.json").read_text())
    assert set(document["channels"]) == {t.name for t in public} | {DLQ.name}
    for name, message in document["components"]["messages"].items():
        assert (contract / message["payload"]["$ref"]).is_file(), name
    bars = document["channels"][BARS.name]
    assert bars["bindings"]["kafka"]["partitions"] == BARS.partitions and "publish" in bars


def test_the_schemas_accept_what_tickwire_produces_and_refuse_what_its_codecs_refuse(contract):
    start = datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)
    bars = list(MarketSimulator(["AAPL", "SPY"], seed=1, start=start).bars(40))
    bar_schema = validator(contract, BARS)
    for bar in bars:
        bar_schema.validate(json.loads(msgspec.json.encode(bar)))
    conditions = [v for bar in bars for kind, v in SymbolProcessor().process(SymbolState(), bar)[0] if kind == "condition"]
    condition_schema = validator(contract, next(t for t, m in OUTPUTS.items() if m.__name__ == "Condition"))
    for value in conditions:
        condition_schema.validate(json.loads(value))
    strategy = ToyStrategy(seed=1)
    for message in (m for bar in bars for m in strategy.on_bar(bar)):
        topic = next(t for t, m in INPUTS.items() if isinstance(message, m))
        validator(contract, topic).validate(json.loads(msgspec.json.encode(message)))
    good = json.loads(msgspec.json.encode(bars[0]))
    for bad in ({**good, "symbol": "AAPL\n"}, {**good, "volume": -1}, {**good, "extra": 1}, {k: v for k, v in good.items() if k != "close"}):
        assert not bar_schema.is_valid(bad), bad


def test_a_topics_schema_version_is_its_names():
    assert schema_version(BARS) == b"1" and schema_version("tw_x.tickwire.conditions_by_timeframe.v2") == b"2"
