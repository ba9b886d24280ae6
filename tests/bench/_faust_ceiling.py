"""faust's own ceiling: an agent that takes the bars in batches, as the worker does, and
does nothing else. Run by bench_pipeline.py in a process of its own:

    python tests/bench/_faust_ceiling.py BOOTSTRAP TOPIC COUNT RESULT_FILE

It writes the agent's messages/s, from its first batch to its COUNT-th message, to
RESULT_FILE (faust takes over stdout for its logging).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import faust  # noqa: E402

from tickwire.streams.cli import _use_uvloop  # noqa: E402


def main() -> None:
    bootstrap, topic_name, count, result = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    _use_uvloop()  # as the worker does
    app = faust.App(f"ceiling{os.getpid()}", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_replication_factor=1)
    source = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen, started = [0], []

    @app.agent(source)
    async def null(stream: faust.StreamT) -> None:
        async for events in stream.take_events(2000, within=0.05):
            if not started:
                started.append(time.perf_counter())
            seen[0] += len(events)
            if seen[0] >= count:
                result.write_text(str(seen[0] / (time.perf_counter() - started[0])))
                os._exit(0)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
