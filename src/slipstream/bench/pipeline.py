"""P: the real worker (faust, tables, evaluation, alerts, Redis, Prometheus) draining a topic.

The worker runs as users run it, in its own process, in a fresh consumer group (so a
fresh changelog). Its rate is read from its own metrics endpoint: messages consumed
between the first scrape that shows progress and the one that shows the whole topic,
over the time between them (start-up and group join are not throughput).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from slipstream import conventions
from slipstream.bench.load import Load
from slipstream.settings import Settings
from slipstream.streams.supervise import scrape, status_kib, worker_process

SCRAPE_INTERVAL_S = 0.2
_CONSUMED = (f"{conventions.METRIC_INPUT_MESSAGES}_total", (("topic", conventions.REQUESTS_TOPIC),))


@dataclass(frozen=True)
class PipelineRun:
    events_per_s: float
    startup_s: float  # exec to first consumed message
    peak_rss_mib: float
    group: str


def consumed(addr: str) -> int | None:
    """Messages of the request topic the worker serving /metrics at ``addr`` has consumed
    (None: not serving yet)."""
    # Only this counter: a full scrape five times a second would cost the worker under
    # test several per cent of its time (every SLO's series; Prometheus asks every 15 s).
    samples = scrape(addr, names=(_CONSUMED[0],))
    return int(samples.get(_CONSUMED, 0)) if samples else None


def worker_settings(
    settings: Settings, namespace: str, catalogue: Path, group: str, port: int
) -> Settings:
    """The bench worker's settings: its namespace, a fresh group, metrics on ``port``."""
    return settings.replace(namespace=namespace, consumer_group=group,
                            catalogue=str(catalogue), metrics_addr=f"127.0.0.1:{port}")  # fmt: skip


def run_pipeline(
    settings: Settings, load: Load, catalogue: Path, port: int, log: Path, timeout_s: float = 600
) -> PipelineRun:
    group = f"bench-p-{uuid.uuid4().hex[:8]}"
    child = worker_settings(settings, load.namespace, catalogue, group, port)
    started = time.perf_counter()
    with worker_process(child, log, loglevel="warning") as proc:
        first: tuple[float, int] | None = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}; see {log}")
            now = time.perf_counter()
            if now - started > timeout_s:
                raise RuntimeError(f"the worker did not drain {load.topic} in {timeout_s:.0f} s")
            seen = consumed(child.metrics_addr)
            if seen:
                if first is None:
                    if seen >= load.messages:
                        raise ValueError(
                            f"{load.messages} messages were drained between two scrapes "
                            f"({SCRAPE_INTERVAL_S} s): too few to time; load more events"
                        )
                    first = (now, seen)
                if seen >= load.messages and now > first[0]:
                    break
            time.sleep(SCRAPE_INTERVAL_S)
        rss = status_kib("VmHWM", proc.pid) / 1024
    rate = (load.messages - first[1]) / (now - first[0]) * load.events / load.messages
    return PipelineRun(rate, first[0] - started, rss, group)
