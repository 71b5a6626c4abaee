"""P: the real worker (faust, tables, evaluation, alerts, Redis, Prometheus) draining a topic.

The worker runs as users run it, in its own process, in a fresh consumer group (so a
fresh changelog). Its rate is read from its own metrics endpoint: messages consumed
between the first scrape that shows progress and the one that shows the whole topic,
over the time between them (start-up and group join are not throughput).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slipstream import conventions
from slipstream.bench.load import Load
from slipstream.settings import Settings

SCRAPE_INTERVAL_S = 0.2
_TOPIC = re.escape(conventions.REQUESTS_TOPIC)
_INPUT = re.compile(
    rf'^{conventions.METRIC_INPUT_MESSAGES}_total\{{topic="{_TOPIC}"\}} (\S+)$', re.M
)


@dataclass(frozen=True)
class PipelineRun:
    events_per_s: float
    startup_s: float  # exec to first consumed message
    peak_rss_mib: float
    group: str


def consumed(url: str) -> int | None:
    """Messages of the request topic the worker at ``url`` has consumed (None: not up)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None  # not serving yet
    match = _INPUT.search(text)
    return int(float(match.group(1))) if match else 0


def _peak_rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else 0.0


def worker_env(
    settings: Settings, namespace: str, catalogue: Path, group: str, port: int
) -> dict[str, str]:
    return os.environ | {
        "SLIPSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SLIPSTREAM_REDIS_URL": settings.redis_url,
        "SLIPSTREAM_NAMESPACE": namespace,
        "SLIPSTREAM_CONSUMER_GROUP": group,
        "SLIPSTREAM_CATALOGUE": str(catalogue),
        "SLIPSTREAM_METRICS_ADDR": f"127.0.0.1:{port}",
        "SLIPSTREAM_PARTITIONS": str(settings.partitions),
    }


@contextlib.contextmanager
def worker_process(
    settings: Settings, namespace: str, catalogue: Path, port: int, log: Path, group: str
) -> Iterator[subprocess.Popen[bytes]]:
    """The real worker in its own process, in consumer group ``group``; SIGTERM at the end."""
    env = worker_env(settings, namespace, catalogue, group, port)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slipstream.streams.cli", "worker"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_pipeline(
    settings: Settings, load: Load, catalogue: Path, port: int, log: Path, timeout_s: float = 600
) -> PipelineRun:
    group = f"bench-p-{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{port}/metrics"
    started = time.perf_counter()
    with worker_process(settings, load.namespace, catalogue, port, log, group) as proc:
        first: tuple[float, int] | None = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}; see {log}")
            now = time.perf_counter()
            if now - started > timeout_s:
                raise RuntimeError(f"the worker did not drain {load.topic} in {timeout_s:.0f} s")
            seen = consumed(url)
            if seen:
                if first is None:
                    first = (now, seen)
                if seen >= load.messages and now > first[0]:
                    break
            time.sleep(SCRAPE_INTERVAL_S)
        rss = _peak_rss_mib(proc.pid)
    rate = (load.messages - first[1]) / (now - first[0]) * load.events / load.messages
    return PipelineRun(rate, first[0] - started, rss, group)
