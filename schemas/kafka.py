"""Starting aiokafka clients the one way every process does, so a broker out of reach is
one clear error: no stray ERROR lines before it, no unclosed clients after it."""

from __future__ import annotations

import logging

from tickwire.schemas.errors import Unreachable
from tickwire.schemas.settings import Settings

_AIOKAFKA = logging.getLogger("aiokafka")


async def start_kafka(settings: Settings, *clients) -> None:
    """Start aiokafka ``clients`` (producers, consumers, admin clients) in order; when one
    cannot, close them all and raise ``Unreachable`` with the reason.

    aiokafka logs each bootstrap server it cannot connect to at ERROR, then raises a bare
    "Unable to bootstrap": its lines are held back meanwhile and become the error's reason,
    or are logged after all when another server answered.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    _AIOKAFKA.addFilter(hold)
    try:
        for client in clients:
            await client.start()
    except KafkaError as exc:
        for client in clients:
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        reasons = dict.fromkeys(r.getMessage() for r in held if r.levelno >= logging.WARNING)
        raise Unreachable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {'; '.join(reasons) or exc}") from None
    finally:
        _AIOKAFKA.removeFilter(hold)
    for record in held:
        _AIOKAFKA.handle(record)
