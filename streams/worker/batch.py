"""The checkpoint every batch goes through, in this order:

1. each message through its stage's handler; one it refuses, or fails on, goes to the DLQ
   with its reason and source offset, and its key's state goes back to the last written;
2. the outputs delivered, awaited until the broker has them (``Outbox``);
3. each state the batch changed written once, to the table and its changelog;
4. the source offsets committed, by faust, once the agent has taken the batch.

A crash between any two steps leaves a state that redoes the batch to the same outputs
(see ``stage.redelivered``). A failure of the broker is not the messages' fault: it
propagates, and faust's supervisor restarts the agent from the last committed offset.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from tickwire.schemas.codec import dlq_record
from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.metrics import Metrics
from tickwire.streams.worker.outbox import Message, Outbox
from tickwire.streams.worker.stage import Stage

log = logging.getLogger("tickwire.worker")


class _Labelled(dict):
    """A metric's children by label value, each looked up once."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, label: str) -> Any:
        child = self[label] = self.metric.labels(label)
        return child


def where(message: faust.types.Message) -> dict[str, object]:
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


class Checkpoint:
    """Runs one stage's batches through the steps above."""

    def __init__(self, stage: Stage, outbox: Outbox, dlq_topic: str, metrics: Metrics) -> None:
        self.stage, self.outbox, self.dlq_topic, self.metrics = stage, outbox, dlq_topic, metrics
        self._consumed, self._produced = _Labelled(metrics.consumed), _Labelled(metrics.produced)

    async def run(self, events: list[faust.EventT]) -> None:
        out = self.handle(events)  # 1
        await self.outbox.deliver(out)  # 2
        for topic, _, _, _ in out:
            self._produced[topic].inc()
        self.stage.states.write()  # 3; faust commits the offsets (4) after this returns

    def handle(self, events: list[faust.EventT]) -> list[Message]:
        """Step 1. A failure may have left its key's state half-changed: the key is forgotten
        and the batch's earlier messages of that key are applied again, their outputs
        (already queued) discarded."""
        stage, out = self.stage, []
        applied: dict[bytes | None, list[faust.EventT]] = {}
        for event in events:
            message = event.message
            self._consumed[message.topic].inc()
            mark = len(out)
            try:
                stage.handle(event, out)
            except InvalidMessage as exc:
                del out[mark:]
                out.append(self.reject(event, exc))
                continue
            except Exception as exc:  # a bug must cost one message, never the stream
                log.exception("internal error on a message; it goes to the DLQ", extra=where(message))
                del out[mark:]
                stage.forget(message.key)
                for earlier in applied.get(message.key, ()):
                    stage.handle(earlier, [])
                out.append(self.reject(event, InvalidMessage("internal", f"{type(exc).__name__}: {str(exc)[:500]}")))
                continue
            applied.setdefault(message.key, []).append(event)
        return stage.finish(out)

    def reject(self, event: faust.EventT, exc: InvalidMessage) -> Message:
        message = event.message
        self.metrics.dlq.labels(message.topic, exc.reason).inc()
        log.warning("rejected: %s", exc, extra={**where(message), "reason": exc.reason})
        dead = dlq_record(
            key=message.key, value=event.value, reason=exc.reason, detail=exc.detail,
            topic=message.topic, partition=message.partition, offset=message.offset,
        )
        return self.dlq_topic, dead.key, dead.value, dead.headers
