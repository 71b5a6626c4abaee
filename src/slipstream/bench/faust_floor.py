"""F: faust-streaming itself, an agent that does nothing with what it takes.

Not one of PERFORMANCE.md's rungs: faust's own per-message path, which capped the
worker at this rate until its source topics were taken past it (``batch_drain``); kept
as the figure that change is measured against. Run as
``python -m slipstream.bench.faust_floor TOPIC MESSAGES`` (its own process, like the
worker, with the same event loop and micro-batch settings); prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from slipstream.streams.worker import BATCH_MAX_MESSAGES, BATCH_WITHIN_S, use_uvloop


def main(topic: str, messages: int) -> None:
    uvloop = use_uvloop()
    import faust

    app = faust.App(
        f"bench-f-{uuid.uuid4().hex[:8]}",
        broker="kafka://" + os.environ.get("SLIPSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="slipstream-faust-floor-"),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes)
    seen = {"messages": 0, "first": 0}
    started = [0.0]

    @app.agent(source, concurrency=1)
    async def drain(stream: Any) -> AsyncIterator[None]:
        async for events in stream.take_events(BATCH_MAX_MESSAGES, BATCH_WITHIN_S):
            if not started[0]:
                started[0], seen["first"] = time.perf_counter(), len(events)
            seen["messages"] += len(events)
            if seen["messages"] >= messages:
                elapsed = time.perf_counter() - started[0]
                rate = (messages - seen["first"]) / elapsed
                print(json.dumps({"messages_per_s": rate, "uvloop": uvloop}), flush=True)
                os._exit(0)  # done: no graceful shutdown to wait for
            yield None

    worker = faust.Worker(app, loglevel="error", quiet=True, redirect_stdouts=False)
    worker.spinner = None  # no terminal escape codes in the line the bench parses
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
