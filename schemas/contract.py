"""The topics' machine-readable contract, for the services around Tickwire: a JSON Schema
per message type and one AsyncAPI 2.6 document (``tickwire schemas --out DIR``).

Generated from the same msgspec Structs the codecs validate with, so they cannot drift.
Patterns end in ``(?![\\s\\S])`` (nothing follows) instead of Python's ``\\Z``, which
ECMA-262 lacks: ``$`` would do in ECMA-262 but, in the Python validators, match before a
trailing newline. Every message Tickwire publishes carries the
``tickwire.schema.version`` header, the version its topic's name ends in.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import msgspec

from tickwire.schemas.codec import VERSION_HEADER
from tickwire.schemas.correlations import CorrelationRecord
from tickwire.schemas.decisions import DecisionRecord, ExitDecision, SizingMessage
from tickwire.schemas.execution import (
    AuditRow, Order, OrderUpdate, PortfolioPerformanceRow, PortfolioRow, PositionRow, RiskEvent,
)
from tickwire.schemas.market import Bar, Condition, CorrelationContext, MultiTimeframeAnalysis, RegimeChange
from tickwire.schemas.signals import (
    Fill, ModelPerformanceRow, Prediction, PredictionOutcome, RegimePerformanceRow, StrategyPerformanceRow, StrategyScoreRow,
    TradeOutcomeRow,
)
from tickwire.schemas.topics import (
    AUDIT, BARS, CONDITIONS, CORRELATIONS, CORRELATION_CONTEXT, DECISION_HISTORY, DLQ, EXITS, FILLS,
    MODEL_PERFORMANCE, MTF, ORDERS, ORDER_UPDATES, OUTCOMES, PORTFOLIOS, PORTFOLIO_PERFORMANCE, POSITIONS,
    PREDICTIONS, REGIMES, REGIME_PERFORMANCE, RISK_EVENTS, SIZING, STRATEGY_PERFORMANCE, STRATEGY_SCORES, TRADES,
    TRADE_OUTCOMES, Topic, Topic,
)
from tickwire.schemas.trades import Trade

# What producers publish to Tickwire, and what Tickwire publishes (JSON, one message per record).
INPUTS: dict[Topic, Any] = {
    BARS: Bar, TRADES: Trade, PREDICTIONS: Prediction, FILLS: Fill, ORDERS: Order, SIZING: SizingMessage, EXITS: ExitDecision,
}
OUTPUTS: dict[Topic, Any] = {
    CONDITIONS: Condition, REGIMES: RegimeChange, MTF: MultiTimeframeAnalysis, CORRELATIONS: CorrelationRecord,
    CORRELATION_CONTEXT: CorrelationContext, OUTCOMES: PredictionOutcome, TRADE_OUTCOMES: TradeOutcomeRow,
    MODEL_PERFORMANCE: ModelPerformanceRow, STRATEGY_PERFORMANCE: StrategyPerformanceRow, STRATEGY_SCORES: StrategyScoreRow,
    REGIME_PERFORMANCE: RegimePerformanceRow, ORDER_UPDATES: OrderUpdate, POSITIONS: PositionRow, PORTFOLIOS: PortfolioRow,
    RISK_EVENTS: RiskEvent, AUDIT: AuditRow, PORTFOLIO_PERFORMANCE: PortfolioPerformanceRow, DECISION_HISTORY: DecisionRecord,
}
_DLQ_HEADERS = {
    "tickwire.reason": "why it was refused, from the fixed vocabulary of schemas/errors.py",
    "tickwire.detail": "what was wrong, in words",
    "tickwire.source.topic": "the topic it came from (also __connect.errors.topic)",
    "tickwire.source.partition": "its partition (also __connect.errors.partition)",
    "tickwire.source.offset": "its offset (also __connect.errors.offset)",
    "__connect.errors.stage": "the stage that refused it",
    "__connect.errors.exception.class.name": "InvalidMessage, DatabaseRejected, ConflictingKey, or a bug's exception",
    "tickwire.source.timestamp_ms": "its timestamp, when it had one",
    "tickwire.truncated_from_bytes": "present when the payload is only the first 64 KiB of this many bytes",
}


def schema_version(topic: Topic | str) -> bytes:
    """The version a topic's messages carry in ``tickwire.schema.version``: its name's ``.vN``."""
    return (topic if isinstance(topic, str) else topic.name).rsplit(".v", 1)[1].encode()


def json_schema(message_type: Any) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one message type."""
    schema = msgspec.json.schema(message_type)

    def ecma(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (v.replace("\\Z", "(?![\\s\\S])") if k == "pattern" else ecma(v)) for k, v in node.items()}
        return [ecma(v) for v in node] if isinstance(node, list) else node

    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **ecma(schema)}


def _file(topic: Topic) -> str:
    return f"{topic.name}.schema.json"


def asyncapi() -> dict[str, Any]:
    """One AsyncAPI 2.6 document: every public topic, its key, partitions, retention,
    headers and payload (a reference to its JSON Schema file, beside the document)."""
    try:
        release = version("tickwire")
    except PackageNotFoundError:
        release = "0"
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic, message_type in {**INPUTS, **OUTPUTS}.items():
        name = topic.name.replace(".", "_")
        messages[name] = {
            "name": name,
            "contentType": "application/json",
            "payload": {"$ref": _file(topic)},
            "headers": {
                "type": "object",
                "properties": {VERSION_HEADER: {"type": "string", "const": schema_version(topic).decode()}},
            },
            "bindings": {"kafka": {"key": {"type": "string", "description": f"the message's {topic.key}, UTF-8"}}},
        }
        # AsyncAPI 2: "publish" is what others send to the channel (Tickwire's inputs),
        # "subscribe" what they receive from it (its outputs).
        operation = "publish" if topic in INPUTS else "subscribe"
        channels[topic.name] = {
            operation: {"message": {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": _kafka_binding(topic)},
        }
    channels[DLQ.name] = {
        "description": "Refused messages: the original key, bytes and headers, and why (see the headers).",
        "subscribe": {"message": {
            "name": "dead_letter",
            "payload": {"description": "the refused message's own bytes (its first 64 KiB when longer)"},
            "headers": {"type": "object", "properties": {h: {"type": "string", "description": d} for h, d in _DLQ_HEADERS.items()}},
            "bindings": {"kafka": {"key": {"description": "the refused message's own key"}}},
        }},
        "bindings": {"kafka": _kafka_binding(DLQ)},
    }
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "Tickwire",
            "version": release,
            "description": "Market data, signals and fills in; indicators, regimes, correlations, validated "
            "predictions, trade outcomes and performance out. Topic names carry the schema version; a "
            "breaking change publishes .v2 beside .v1.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "components": {"messages": messages},
    }


def _kafka_binding(topic: Topic) -> dict[str, Any]:
    return {
        "topic": topic.name,
        "partitions": topic.partitions,
        "topicConfiguration": {"cleanup.policy": [topic.cleanup_policy], "retention.ms": topic.retention_ms},
        "bindingVersion": "0.4.0",
    }


def write(out: Path) -> list[Path]:
    """Every JSON Schema and ``asyncapi.json`` into ``out`` (created); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, message_type in {**INPUTS, **OUTPUTS}.items():
        path = out / _file(topic)
        path.write_text(json.dumps(json_schema(message_type), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    path = out / "asyncapi.json"
    path.write_text(json.dumps(asyncapi(), indent=2) + "\n", encoding="utf-8")
    return written + [path]
