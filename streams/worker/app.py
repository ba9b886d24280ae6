"""The faust app: one agent per registered stage, each running its batches through a
``Checkpoint``, with its state in a changelog-backed table (so it survives restarts and
rebalances) kept decoded in memory while this worker owns the key."""

from __future__ import annotations

import functools
import os
import tempfile

import faust
import msgspec

from tickwire.schemas.metrics import Metrics, watch_broker
from tickwire.schemas.settings import Settings
from tickwire.schemas.topics import ALL as ALL_TOPICS
from tickwire.schemas.topics import BARS, DLQ, Topic
from tickwire.streams.stages import selected
from tickwire.streams.worker.batch import Checkpoint
from tickwire.streams.worker.outbox import Outbox
from tickwire.streams.worker.sequence import Beginnings, Sequence, StuckRecovery, hand_over_every_record
from tickwire.streams.worker.stage import Stage, StageContext
from tickwire.streams.worker.state import KeyedStates
from tickwire.streams.worker.take import ready_batches

_RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def changelog_topics(settings: Settings) -> list[tuple[str, int]]:
    """faust's changelog topic names and partitions, one per table of the stages this worker runs."""
    app_id = settings.topic_prefix + settings.processor_group
    return [(f"{app_id}-{stage.table.name}-changelog", stage.table.partitioned_like.partitions) for stage in selected(settings.stages)]


def _credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=settings.kafka_ssl_context(),
        )
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(settings.kafka_ssl_context())
    return None


def create_app(settings: Settings, metrics: Metrics) -> faust.App:
    """Build the processors' faust app for ``settings`` from the stage registry."""
    app = faust.App(
        settings.topic_prefix + settings.processor_group,
        broker=["kafka://" + host for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        # State lives in changelog topics ("memory://"); faust still makes its data
        # directory, which would otherwise land in the working directory.
        datadir=os.path.join(tempfile.gettempdir(), "{conf.id}-data"),
        web_enabled=False,
        processing_guarantee="at_least_once",
        topic_partitions=BARS.partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        key_serializer="raw",
        value_serializer="raw",
        producer_linger_ms=5,
        # A worker killed without leaving holds its partitions until the session expires:
        # keep that short so a restarted worker resumes within seconds, not a minute.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )

    def topic(spec: Topic) -> faust.TopicT:
        return app.topic(settings.topic(spec.name), partitions=spec.partitions, **_RAW)

    names = {spec: settings.topic(spec.name) for spec in ALL_TOPICS}
    context = StageContext(settings, metrics, names, msgspec.json.Encoder().encode, topic)
    outbox, beginnings = Outbox(settings), Beginnings(settings)
    stages = selected(settings.stages)
    checkpoints = [_install(app, stage_type, context, outbox, beginnings) for stage_type in stages]

    @app.on_rebalance_complete.connect
    async def on_assigned(sender: object, **kwargs: object) -> None:
        metrics.rebalances.inc()
        metrics.set_ready(True)
        for checkpoint in checkpoints:
            checkpoint.assigned()

    @app.on_partitions_revoked.connect
    async def before_assignment(sender: object, *args: object, **kwargs: object) -> None:
        # faust revokes (an empty set at first) before every assignment, so before its fetcher starts.
        hand_over_every_record(app.consumer, [context.names[t] for stage in stages for t in stage.inputs])

    @app.on_before_shutdown.connect
    async def close_clients(sender: object, **kwargs: object) -> None:
        await outbox.stop()
        await beginnings.stop()

    app.timer(interval=5.0, name="finish_stuck_recovery")(StuckRecovery(app))

    @app.task
    async def broker_health() -> None:
        await watch_broker(metrics, settings.kafka_bootstrap)

    return app


def _install(app: faust.App, stage_type: type[Stage], context: StageContext, outbox: Outbox, beginnings: Beginnings) -> Checkpoint:
    """``stage_type``'s table, agent and timers on ``app``."""
    spec, settings = stage_type.table, context.settings
    table = app.Table(spec.name, default=bytes, partitions=spec.partitioned_like.partitions, key_type=bytes, value_type=bytes)
    changelog = functools.partial(outbox.write, table.changelog_topic.get_topic_name())
    stage = stage_type(context, KeyedStates(table, spec.codec, context.metrics, changelog))
    checkpoint = Checkpoint(stage, outbox, context.names[DLQ], context.metrics, sequence=Sequence(
        lambda: app.consumer, beginnings, lambda: app.rebalancing, beginnings.ends, [context.names[t] for t in stage_type.inputs],
        lag=context.metrics.lag,
    ))
    # One channel over every input: the stage sees a key's inputs in one agent, in one partition.
    inputs = app.topic(*(context.names[t] for t in stage_type.inputs), partitions=stage_type.inputs[0].partitions, **_RAW)

    async def agent(stream: faust.StreamT) -> None:
        async for events in ready_batches(stream, settings.worker_batch_events, settings.worker_batch_within_s):
            await checkpoint.run(events)

    app.agent(inputs, name=stage_type.name)(agent)
    app.timer(interval=1.0, name=f"{stage_type.name}.reseek")(checkpoint.reseek)
    for interval, work in stage.timers():
        app.timer(interval=interval, name=f"{stage_type.name}.{work.__name__}")(work)
    return checkpoint
