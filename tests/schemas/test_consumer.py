"""The consumer helper: every topic's messages decode to their types, without any extra."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import pytest

from tickwire.schemas.consumer import UnknownTopic, decoder, message_type
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.signals import TradeOutcomeRow
from tickwire.schemas.topics import CONDITIONS, DLQ, TRADE_OUTCOMES, TRADES
from tickwire.schemas.trades import Trade
from tests.conftest import ROOT, WITHOUT_EXTRAS
from tests.schemas.test_contract import examples

# Run in a fresh interpreter where the extras' packages cannot be imported: the helper must not need them.
BLOCKED = WITHOUT_EXTRAS + """
from tickwire.schemas.consumer import decoder
out = {}
for topic, value in json.load(sys.stdin).items():
    message = decoder("prod." + topic, max_future_skew_s=1e9)(value.encode(), [("tickwire.schema.version", topic.rsplit(".v", 1)[1].encode())])
    out[topic] = type(message).__name__
print(json.dumps(out))
"""


def test_every_topics_message_decodes_without_the_worker_sink_or_replay_dependencies():
    found = examples()
    sample = {topic.name: msgspec.json.encode(messages[0]).decode() for topic, messages in found.items()}
    run = subprocess.run([sys.executable, "-c", BLOCKED], input=json.dumps(sample), capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    decoded = json.loads(run.stdout)
    made = {topic.name: messages[0] for topic, messages in found.items()}  # a Struct, or a core's JSON output as a dict
    assert decoded == {name: type(m).__name__ if isinstance(m, msgspec.Struct) else message_type(name).__name__ for name, m in made.items()}
    assert decoded[CONDITIONS.name] == "Condition"


def test_a_prefixed_topic_finds_its_type_and_an_unknown_one_or_the_dlq_is_named():
    assert message_type("tw_1." + TRADES.name) is Trade and message_type("prod-" + TRADE_OUTCOMES.name) is TradeOutcomeRow
    for topic in ("md.quotes.v1", DLQ.name, "md.conditions.v2"):
        with pytest.raises(UnknownTopic, match="is not one of Tickwire's topics"):
            message_type(topic)


def test_a_message_of_another_version_or_off_contract_is_refused():
    trade = msgspec.json.encode(examples()[TRADES][0])
    decode = decoder(TRADES.name, max_future_skew_s=1e9)
    assert decode(trade, {"tickwire.schema.version": b"1"}).symbol == "AAPL"
    with pytest.raises(InvalidMessage) as refused:
        decode(trade, [("tickwire.schema.version", b"2")])
    assert refused.value.reason == "unknown_version"
    with pytest.raises(InvalidMessage) as refused:
        decode(trade.replace(b'"AAPL"', b'"AAPL\\n"'))
    assert refused.value.reason == "schema"
