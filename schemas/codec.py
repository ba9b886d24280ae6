"""JSON and msgpack codecs that turn raw Kafka values into validated Structs or a DLQ reason."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Generic, Literal, TypeVar

import msgspec

from schemas.errors import InvalidMessage

T = TypeVar("T", bound=msgspec.Struct)
Format = Literal["json", "msgpack"]


class Codec(Generic[T]):
    """Decode and validate one message type; encode it back.

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
        self._validates = hasattr(message_type, "validate")

    def encode(self, message: T) -> bytes:
        return self._encoder.encode(message)

    def decode(self, raw: bytes | None, *, now: datetime | None = None) -> T:
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
        if self._validates:
            message.validate(now=now or datetime.now(timezone.utc), max_future_skew_s=self.max_future_skew_s)
        return message


def dlq_headers(*, reason: str, detail: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Kafka headers of a DLQ record; the value stays the original bytes."""
    return [
        ("tickwire.reason", reason.encode()),
        ("tickwire.detail", detail[:1000].encode("utf-8", "replace")),
        ("tickwire.source.topic", topic.encode()),
        ("tickwire.source.partition", str(partition).encode()),
        ("tickwire.source.offset", str(offset).encode()),
    ]
