"""A stage's batches: what is ready, taken at once, instead of faust's fixed window.

faust's ``take_events(max_, within)`` waits ``within`` after every batch, however many
records are already waiting: each stage of a record's path costs that wait whether the
worker is idle or not (two stages and a 50 ms window: 100 ms a record, before any work),
and a short window, which would cut it, closes before a backlog is drained, so batches
stay small when they should grow, and the worker saturates sooner (the portfolio bench
at 2,000 bars/s + 1,000 fills/s: a 5 ms or 20 ms window fell behind where 50 ms kept up).

``ready_batches`` closes a batch once the stream's queue is empty and nothing more came
for ``QUIET_S`` (the consumer's fetcher hands records over in chunks: closing on an empty
queue alone made batches of 14-30 records at saturation, and the worker fell behind):
one record when the worker is idle, as it arrives; the whole backlog when it is busy, so
batches grow with the load and their fixed costs (a delivery and a state write awaited)
stay shared.
``within`` only bounds how long a batch keeps taking records that arrive one by one,
and ``max_`` its size. Records are acknowledged after the batch is processed, as faust's
own ``take_events`` does (its buffering, acknowledgement and flow control are kept;
only the wait differs): faust 0.15's stream internals, pinned in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import faust

IDLE_CHECK_S = 1.0  # how often an idle stream looks whether it should stop
QUIET_S = 0.002  # a batch closes once nothing more came for this long


async def ready_batches(stream: faust.StreamT, max_: int, within: float) -> AsyncIterator[list[faust.EventT]]:
    """The records ready now (at least one), at most ``max_``, gathered for at most ``within``."""
    events: list[faust.EventT] = []
    first, full, consumed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    consuming: asyncio.Future | None = None
    queue = stream.channel.queue

    async def add(value: object) -> object:
        nonlocal consuming
        if consuming is not None:  # a batch is being processed: wait for it to be acknowledged
            try:
                await consuming
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("a record reached the batch without its event")
        events.append(event)
        first.set()
        if len(events) >= max_:
            full.set()
            consumed.clear()
            await stream.wait(consumed)
        return value

    acks, stream.enable_acks = stream.enable_acks, False
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if await stream.wait_for_stopped(first, timeout=IDLE_CHECK_S) or not events:
                continue
            deadline = time.monotonic() + within
            while not full.is_set() and time.monotonic() < deadline:
                if not queue.empty():
                    await asyncio.sleep(0)  # the stream's drainer moves what is queued into the batch
                    continue
                seen = len(events)
                await asyncio.sleep(QUIET_S)  # the fetcher may be handing over what came meanwhile
                if len(events) == seen and queue.empty():
                    break
            consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(events)
            finally:
                taken = list(events)
                events.clear()
                first.clear()
                for event in taken:
                    await stream.ack(event)
                if not consuming.done():
                    consuming.set_result(None)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add)
