"""Sends a stream of trace events through the SDK, as fast as possible or paced by event time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slipstream.client.producer import SlipstreamProducer
from slipstream.client.trace import TraceError, TraceEvent
from slipstream.slo.events import Request


@dataclass
class EmitStats:
    requests: int = 0
    deploys: int = 0
    skipped: int = 0
    elapsed_s: float = 0.0

    @property
    def events(self) -> int:
        return self.requests + self.deploys

    def rate(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def emit(
    events: Iterable[TraceEvent | TraceError],
    producer: SlipstreamProducer,
    *,
    speed: float | None = None,
    on_progress: Callable[[EmitStats], None] | None = None,
    progress_every_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stats: EmitStats | None = None,
) -> EmitStats:
    """Send every event with its original event time.

    ``speed=None`` sends as fast as the SDK takes them; ``speed=N`` keeps N times
    the trace's own pace, measured from its first event (an event earlier than
    the ones already sent goes out at once). Pass ``stats`` to keep the counts
    when the caller interrupts the sending.
    """
    stats = stats if stats is not None else EmitStats()
    start = clock()
    first_event_ms: int | None = None
    next_progress = start + progress_every_s
    for event in events:
        if isinstance(event, TraceError):
            stats.skipped += 1
            continue
        if speed is not None:
            if first_event_ms is None:
                first_event_ms = event.timestamp_ms
            due = start + (event.timestamp_ms - first_event_ms) / 1000 / speed
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        if isinstance(event, Request):
            producer.record(event)
            stats.requests += 1
        else:
            producer.send_deploy(event)
            stats.deploys += 1
        now = clock()
        if on_progress is not None and now >= next_progress:
            stats.elapsed_s = now - start
            on_progress(stats)
            next_progress = now + progress_every_s
    producer.flush()
    stats.elapsed_s = clock() - start
    if on_progress is not None:
        on_progress(stats)
    return stats
