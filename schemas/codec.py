"""JSON and msgpack codecs that turn raw Kafka values into validated Structs or a DLQ reason."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Generic, Literal, Mapping, NamedTuple, Sequence, TypeVar, get_args

import msgspec

from tickwire.schemas.errors import InvalidMessage

T = TypeVar("T", bound=msgspec.Struct)
# Producers may stamp this header; the version in the topic name (.v1) must agree with it.
VERSION_HEADER = "tickwire.schema.version"
SCHEMA_VERSION = b"1"
Format = Literal["json", "msgpack"]


class Codec(Generic[T]):
    """Decode and validate one message type (or a tagged union of them); encode it back.

    ``decode`` raises ``InvalidMessage`` (never anything else) for any bad input, so a
    caller needs one ``except`` to route a message to the DLQ.
    """

    def __init__(
        self,
        message_type: type[T],
        *,
        fmt: Format = "json",
        max_message_bytes: int = 1_000_000,
        max_future_skew_s: float = 86_400.0,
    ) -> None:
        self.message_type = message_type
        self.max_message_bytes = max_message_bytes
        self.max_future_skew_s = max_future_skew_s
        module = msgspec.json if fmt == "json" else msgspec.msgpack
        self._decoder = module.Decoder(message_type)
        self._encoder = module.Encoder()
        self._fmt = fmt
        members = get_args(message_type) or (message_type,)  # a Struct, or a tagged union of them
        self._validates = all(hasattr(member, "validate") for member in members)
        fields = [field for member in members for field in msgspec.structs.fields(member)]
        self._quoted_names = [f'"{field.encode_name}"'.encode() for field in fields]
        # A field of free-form JSON can repeat a key anywhere: such messages are always checked.
        self._free_form = any(field.type in (dict, Any) or getattr(field.type, "__origin__", None) is dict for field in fields)

    def encode(self, message: T) -> bytes:
        return self._encoder.encode(message)

    def decode(
        self,
        raw: bytes | None,
        *,
        now: datetime | None = None,
        headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] = (),
    ) -> T:
        """Decode and validate ``raw``; ``headers`` may carry ``tickwire.schema.version``."""
        for name, value in headers.items() if isinstance(headers, Mapping) else headers:
            if name == VERSION_HEADER and value != SCHEMA_VERSION:
                raise InvalidMessage("unknown_version", f"schema version {value[:20]!r} is not {SCHEMA_VERSION.decode()}")
        if not raw:
            raise InvalidMessage("empty", "message has no value")
        if len(raw) > self.max_message_bytes:
            raise InvalidMessage("too_large", f"{len(raw)} bytes exceeds the {self.max_message_bytes} byte limit")
        if self._fmt == "json" and not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidMessage("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None
        try:
            message = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidMessage("schema", str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InvalidMessage("not_json" if self._fmt == "json" else "schema", str(exc)) from None
        except RecursionError:
            # Deeply nested arrays or objects in a free-form field (``feature_vector``).
            raise InvalidMessage("schema", "nesting too deep") from None
        if self._fmt == "json":
            self._refuse_repeated_keys(raw)
        if self._validates:
            message.validate(now=now or datetime.now(timezone.utc), max_future_skew_s=self.max_future_skew_s)
        return message

    def _refuse_repeated_keys(self, raw: bytes) -> None:
        """A JSON object with a key twice (msgspec, like most parsers, keeps the last) is
        refused: which one the producer meant is unknowable. A field name that occurs once
        in the bytes cannot be repeated, so only a message with a name twice, or with
        free-form JSON, is parsed again to look (rare, and never the bars' hot path)."""
        if not self._free_form and all(raw.count(name) < 2 for name in self._quoted_names):
            return
        try:
            json.loads(raw, object_pairs_hook=_unique_keys)
        except _RepeatedKey as exc:
            raise InvalidMessage("schema", f"key {str(exc)[:60]!r} appears twice in one object") from None
        except RecursionError:
            raise InvalidMessage("schema", "nesting too deep") from None


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return result


DLQ_MAX_VALUE_BYTES = 64 * 1024


class DlqRecord(NamedTuple):
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


# Headers Tickwire adds to a DLQ record; replaying a record strips them and keeps the rest.
DLQ_HEADER_PREFIXES = ("tickwire.", "__connect.errors.")


def dlq_record(
    *, key: bytes | None, value: bytes | None, reason: str, detail: str, topic: str, partition: int, offset: int,
    timestamp_ms: int | None = None, headers: Sequence[tuple[str, bytes]] = (), stage: str = "", exception: str = "InvalidMessage",
) -> DlqRecord:
    """The DLQ record for a rejected message: its original key, bytes and headers, plus
    Tickwire's reason headers and Kafka Connect's error headers (where they fit: source
    topic, partition, offset, the stage and the exception's class and message), so tools
    made for Connect's dead-letter queues read it too.

    A value too large for an ordinary produce request keeps its first 64 KiB, and
    ``tickwire.truncated_from_bytes`` says how long it was (such a record cannot be replayed).
    """
    value = value or b""
    detail = detail[:1000].encode("utf-8", "replace")
    out = [(name, raw) for name, raw in headers if not name.startswith(DLQ_HEADER_PREFIXES)]
    out += [
        ("tickwire.reason", reason.encode()),
        ("tickwire.detail", detail),
        ("tickwire.source.topic", topic.encode()),
        ("tickwire.source.partition", str(partition).encode()),
        ("tickwire.source.offset", str(offset).encode()),
        ("__connect.errors.topic", topic.encode()),
        ("__connect.errors.partition", str(partition).encode()),
        ("__connect.errors.offset", str(offset).encode()),
        ("__connect.errors.stage", stage.encode()),
        ("__connect.errors.exception.class.name", exception.encode()),
        ("__connect.errors.exception.message", detail),
    ]
    if timestamp_ms is not None:
        out.append(("tickwire.source.timestamp_ms", str(timestamp_ms).encode()))
    if len(value) > DLQ_MAX_VALUE_BYTES:
        out.append(("tickwire.truncated_from_bytes", str(len(value)).encode()))
        value = value[:DLQ_MAX_VALUE_BYTES]
    return DlqRecord(key, value, out)
