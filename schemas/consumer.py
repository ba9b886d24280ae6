"""Typed decoders for the services that read Tickwire's topics.

A consumer of the enriched streams needs the message types and their checks, not the
worker: this module and what it imports need msgspec only (``pip install tickwire``,
without the ``worker``, ``sink`` or ``replay`` extras). Any Kafka client will do::

    from tickwire.schemas.consumer import decoder

    decode = decoder("md.conditions.v1")  # a deployment's prefix is fine: "prod.md.conditions.v1"
    for record in kafka_consumer:
        condition = decode(record.value, record.headers)  # a Condition, or InvalidMessage

A message whose ``tickwire.schema.version`` header names another version than the
decoder's is refused (``InvalidMessage`` with reason ``unknown_version``), as is one that
breaks its contract: the same checks the worker applies to its own inputs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from tickwire.schemas.codec import Codec
from tickwire.schemas.contract import INPUTS, OUTPUTS
from tickwire.schemas.errors import TickwireError

Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes]
_TYPES = {topic.name: message_type for topic, message_type in {**INPUTS, **OUTPUTS}.items()}


class UnknownTopic(TickwireError):
    """A topic no decoder is made for: not one of Tickwire's, or the DLQ (whose records
    are refused messages as they came, described by their headers)."""


def message_type(topic: str) -> Any:
    """The message type of ``topic``, its name with or without a deployment's prefix."""
    name = max((name for name in _TYPES if topic.endswith(name)), key=len, default=None)
    if name is None:
        raise UnknownTopic(f"{topic!r} is not one of Tickwire's topics ({', '.join(sorted(_TYPES))})")
    return _TYPES[name]


def decoder(topic: str, *, max_future_skew_s: float = 86_400.0) -> Callable[..., Any]:
    """``decode(value, headers=())``: one record's value as its topic's message type."""
    codec = Codec(message_type(topic), max_future_skew_s=max_future_skew_s)

    def decode(value: bytes | None, headers: Headers = (), *, now: datetime | None = None) -> Any:
        return codec.decode(value, headers=headers or (), now=now)

    return decode
