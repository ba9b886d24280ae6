"""What a stage declares: the topics it reads, the state table it keeps, and its handler.

A stage is one module of ``tickwire.streams.stages`` and one line of its registry; the
runtime (``app``) gives each an agent, a table, a batch checkpoint and its timers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, ClassVar, NamedTuple

import faust
import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.metrics import Metrics
from tickwire.schemas.settings import Settings
from tickwire.schemas.topics import Topic
from tickwire.streams.worker.outbox import Message
from tickwire.streams.worker.state import KeyedStates, StateCodec


class StateTable(NamedTuple):
    """A stage's faust table: its changelog is ``<app id>-<name>-changelog``, partitioned
    like ``partitioned_like`` (a key's state sits in its source message's partition)."""

    name: str
    partitioned_like: Topic
    codec: StateCodec


@dataclass(frozen=True)
class StageContext:
    """What the runtime hands every stage."""

    settings: Settings
    metrics: Metrics
    names: dict[Topic, str]  # registry topic -> its name on the broker (with the prefix)
    encode: Callable[[Any], bytes]  # JSON: the output topics' format
    topic: Callable[[Topic], faust.TopicT]  # for a message sent outside a batch (a timer's)


class Stage:
    """One agent's logic. ``handle`` turns one message into outputs and state changes.

    It raises ``InvalidMessage`` for a message it refuses (the runtime sends it to the
    DLQ); it marks what it changed in ``self.states`` and appends its outputs to ``out``.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[Topic, ...]]
    table: ClassVar[StateTable]

    def __init__(self, context: StageContext, states: KeyedStates) -> None:
        self.context, self.states = context, states

    def handle(self, event: faust.EventT, out: list[Message]) -> None:
        raise NotImplementedError

    def forget(self, key: bytes | None) -> None:
        """Back to ``key``'s last written state, after a message of it failed half-way."""
        self.states.forget(lambda stored: stored == key)

    def finish(self, out: list[Message]) -> list[Message]:
        """The batch's outputs as they are delivered (a stage may pack them)."""
        return out

    def assigned(self) -> None:
        """Partitions were reassigned: another worker may have changed the states meanwhile."""
        self.states.release()

    def timers(self) -> list[tuple[float, Callable[[], Awaitable[None]]]]:
        """(interval in seconds, coroutine function) for work that is due without messages."""
        return []


def keyed(message: faust.types.Message, symbol: str) -> bytes:
    """The record key, which must be ``symbol``: state is partitioned by key, and a record
    keyed otherwise would split a symbol's history."""
    key = symbol.encode()
    if message.key != key:
        shown = message.key if message.key is None or len(message.key) <= 40 else message.key[:40] + b"..."
        raise InvalidMessage("invalid_value", f"record key {shown!r} is not the symbol {symbol!r}")
    return key


def decode(decoder: msgspec.json.Decoder | msgspec.msgpack.Decoder, value: bytes | None) -> Any:
    """A record of one of Tickwire's own topics; anything else a producer put there is refused."""
    try:
        return decoder.decode(value or b"")
    except msgspec.DecodeError as exc:
        raise InvalidMessage("schema", str(exc)) from None


def redelivered(offsets: dict[str, int], message: faust.types.Message) -> bool:
    """Whether a key's state already holds ``message``: the one way a stage recognises a
    redelivery.

    A batch's outputs are delivered before its states are written, and the states before
    its offsets are committed. A message redelivered after a crash between the last two
    is in its key's state (``offsets``: source topic -> offset of the last message applied,
    written with the state) and is skipped, its outputs being on the broker already; one
    redelivered after a crash before the state write is not, and is applied again to the
    same outputs. A key's messages of one topic all come from one partition, so one offset
    per topic is enough. Stages whose cores are idempotent by construction (statistics,
    where a re-sent outcome replaces itself; correlations, where a bar rejoins its open
    timestamp or is late) keep no offsets.
    """
    return offsets.get(message.topic, -1) >= message.offset


def applied(offsets: dict[str, int], message: faust.types.Message) -> None:
    """Record ``message`` in its key's state (see ``redelivered``)."""
    offsets[message.topic] = message.offset
