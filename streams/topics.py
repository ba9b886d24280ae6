"""Creates the registry's topics and the worker's changelogs before any process uses them."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from tickwire.schemas.errors import Unreachable
from tickwire.schemas.settings import Settings
from tickwire.schemas.topics import ALL


async def ensure_topics(settings: Settings) -> None:
    """Create whichever of the registry's topics and the changelogs are missing.

    The changelogs are made here too: one faust creates itself during the first rebalance
    may be missing from that rebalance's metadata, and its table then cannot be written
    until the next one.
    """
    from tickwire.streams.worker.app import changelog_topics

    admin = AIOKafkaAdminClient(**settings.kafka_options())
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.topic(t.name),
                t.partitions,
                1,
                topic_configs={"cleanup.policy": t.cleanup_policy, "retention.ms": str(t.retention_ms)},
            )
            for t in ALL
        ] + [NewTopic(name, partitions, 1, topic_configs={"cleanup.policy": "compact"}) for name, partitions in changelog_topics(settings)]
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            await admin.create_topics(missing)
    except KafkaError as exc:
        raise Unreachable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
    finally:
        await admin.close()
