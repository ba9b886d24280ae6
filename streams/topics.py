"""Creates the registry's topics and the worker's changelogs before any process uses them,
and says how the existing ones differ from the registry."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from tickwire.schemas.errors import Unreachable
from tickwire.schemas.kafka import start_kafka
from tickwire.schemas.settings import Settings
from tickwire.schemas.topics import ALL


def wanted_topics(settings: Settings) -> list[NewTopic]:
    """Every topic of the registry and every changelog, as ``settings`` would create them."""
    from tickwire.streams.worker.app import changelog_topics

    replicas, insync = settings.topic_replication_factor, str(settings.topic_min_insync_replicas)
    return [
        NewTopic(
            settings.topic(t.name), t.partitions, replicas,
            topic_configs={"cleanup.policy": t.cleanup_policy, "retention.ms": str(t.retention_ms), "min.insync.replicas": insync},
        )
        for t in ALL
    ] + [
        NewTopic(name, partitions, replicas, topic_configs={"cleanup.policy": "compact", "min.insync.replicas": insync})
        for name, partitions in changelog_topics(settings)
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create whichever topics are missing; return a line for each way an existing one
    differs from the registry (partitions, replicas, cleanup, retention, min.insync.replicas).

    The changelogs are made here too: one faust creates itself during the first rebalance
    may be missing from that rebalance's metadata, and its table then cannot be written
    until the next one.
    """
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await start_kafka(settings, admin)
    try:
        existing = set(await admin.list_topics())
        wanted = wanted_topics(settings)
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            await admin.create_topics(missing)
        present = {topic.name: topic for topic in wanted if topic.name in existing}
        return await _differences(admin, present) if present else []
    except KafkaError as exc:
        raise Unreachable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
    finally:
        await admin.close()


def partition_changes(differences: list[str]) -> list[str]:
    """The differences that move keys to other partitions (and so split their state)."""
    return [line for line in differences if " partitions, " in line]


async def _differences(admin: AIOKafkaAdminClient, present: dict[str, NewTopic]) -> list[str]:
    out = []
    for described in await admin.describe_topics(list(present)):
        topic, partitions = present[described["topic"]], described.get("partitions") or []
        if len(partitions) != topic.num_partitions:
            out.append(f"{topic.name}: {len(partitions)} partitions, the registry says {topic.num_partitions}: "
                       "symbols would move to other partitions, away from their state")
        replicas = min((len(p["replicas"]) for p in partitions), default=0)
        if partitions and replicas != topic.replication_factor:
            out.append(f"{topic.name}: {replicas} replicas, TICKWIRE_TOPIC_REPLICATION_FACTOR says {topic.replication_factor}")
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, None) for name in present]
    for response in await admin.describe_configs(resources):
        for _, _, _, name, entries in response.resources:
            actual = {entry[0]: entry[1] for entry in entries}
            for key, value in present[name].topic_configs.items():
                if actual.get(key) != value:
                    out.append(f"{name}: {key} is {actual.get(key)}, the registry says {value}")
    return sorted(out)
