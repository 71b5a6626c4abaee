"""What the fault tests share: how big a run is, a worker to hurt, and the final reckoning.

Short form (the README's test command): enough events and faults to catch a regression
in minutes. Full form (``make faults``, ``SLIPSTREAM_FAULTS=full``): the sizes of
RELIABILITY.md's table.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from slipstream import conventions
from slipstream.bench.load import request_record, zipf_services
from slipstream.catalogue_file import load_catalogue
from slipstream.settings import Settings
from slipstream.stack.process import free_port
from slipstream.streams.supervise import scrape, worker_process

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from helpers import group_lag
from truth import (
    Comparison,
    changelog_table,
    compare_buckets,
    published_transitions,
    read_records,
    reference_run,
)

FULL = os.environ.get("SLIPSTREAM_FAULTS", "").lower() == "full"
REPORT = Path(os.environ.get("SLIPSTREAM_FAULTS_REPORT", "fault-report.jsonl"))
CONSUMED = (f"{conventions.METRIC_INPUT_MESSAGES}_total", (("topic", conventions.REQUESTS_TOPIC),))


EVENTS_PER_S = 200  # event time: a replay of N events spans N / 200 s
FAILING = "svc001"  # fails 25 % of its requests over the replay's second quarter: pages
SLOW = "svc003"  # slow over its third quarter: the latency SLO burns


def replay_records(n: int, services: int, seed: int, start_ms: int) -> Iterator[dict[str, Any]]:
    """N request records from ``start_ms`` on, in event-time order, Zipf over the services,
    with one availability incident and one latency incident to make alerts fire and
    resolve."""
    rng = random.Random(seed)
    names, weights = zipf_services(services)
    for i, service in enumerate(rng.choices(names, weights, k=n)):
        phase = i / n
        failing = service == FAILING and 0.25 <= phase < 0.5
        slow = service == SLOW and 0.5 <= phase < 0.75
        yield request_record(
            f"fault-{seed}-{i:09d}",
            service,
            start_ms + i * 1000 // EVENTS_PER_S,
            rng.random() < (0.25 if failing else 0.0005),
            round(rng.lognormvariate(6.5 if slow else 4.0, 0.5), 2),
        )


def consumed(addr: str) -> int:
    return int(scrape(addr).get(CONSUMED, 0))


@dataclass
class Worker:
    """One worker process of the test's group: started, killed, restarted at will."""

    settings: Settings
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def addr(self) -> str:
        return self.settings.metrics_addr

    @contextmanager
    def running(self) -> Iterator[subprocess.Popen[bytes]]:
        self.starts += 1
        with worker_process(self.settings, self.log, loglevel="info") as proc:
            self.proc = proc
            try:
                yield proc
            finally:
                self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def offset_jumps(self) -> int:
        """Source messages that arrived past their partition's next offset, over all of this
        worker's lives (each logs one line)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count(" arrived after ")

    def checkpoint_restores(self) -> tuple[int, int, int]:
        """Partitions restored from a local checkpoint over all of this worker's lives, the
        entries those checkpoints held, and the changelog entries read after them."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        found = re.findall(r"restored from its checkpoint at changelog offset -?\d+ \((\d+) "
                           r"entries\) and (\d+) changelog entries after it", text)  # fmt: skip
        return len(found), sum(int(a) for a, _ in found), sum(int(b) for _, b in found)

    def offset_rewinds(self) -> int:
        """Source partitions whose committed offset a recovery found beyond the restored
        state and set back, over all of this worker's lives (each logs one line)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count(" is beyond the restored state ")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def worker_settings(settings: Settings, catalogue: Path, instance: str = "w1") -> Settings:
    """A worker in the test's namespace under static membership: a restarted worker takes
    its partitions back at once, as a StatefulSet pod does, instead of waiting out the
    session of the member it replaces."""
    return settings.replace(catalogue=str(catalogue), metrics_addr=f"127.0.0.1:{free_port()}",
                            instance_id=f"{settings.namespace}-{instance}")  # fmt: skip


def wait_for(
    check: Callable[[], bool], timeout_s: float, what: str, worker: Worker | None = None
) -> float:
    """Poll ``check``; seconds it took. A worker that died meanwhile fails at once."""
    started = time.monotonic()
    while not check():
        if worker is not None and worker.proc is not None and worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.proc.returncode}) while waiting "
                                 f"for {what}:\n{worker.log_tail()}")  # fmt: skip
        if time.monotonic() - started > timeout_s:
            tail = worker.log_tail() if worker is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")
        time.sleep(0.1)
    return time.monotonic() - started


def drained(settings: Settings) -> Callable[[], bool]:
    """True once the worker's group has committed every source message."""
    group = settings.consumer_group or conventions.consumer_group(settings.namespace)
    topics = [conventions.topic_name(settings.namespace, t) for t in conventions.SOURCE_TOPICS]

    def check() -> bool:
        try:
            return all(group_lag(settings.kafka_bootstrap, group, t) == 0 for t in topics)
        except KafkaError:  # a broker just restarted is still loading its groups
            return False

    return check


@dataclass(frozen=True)
class Reckoning:
    comparison: Comparison
    transitions_expected: int
    transitions_missing: list[tuple[str, str]]
    transitions_unexpected: list[tuple[str, str]]
    transitions_duplicated: int  # the same alert record published more than once

    @property
    def alerts_identical(self) -> bool:
        return not (self.transitions_missing or self.transitions_unexpected)


def reckon(settings: Settings) -> Reckoning:
    """The worker's final state and alerts against the truth from the source topics."""
    ns, bootstrap = settings.namespace, settings.kafka_bootstrap
    catalogue = load_catalogue(settings.catalogue)
    requests = read_records(bootstrap, conventions.topic_name(ns, conventions.REQUESTS_TOPIC))
    deploys = read_records(bootstrap, conventions.topic_name(ns, conventions.DEPLOYS_TOPIC))
    truth = reference_run(catalogue, requests, deploys)
    group = settings.consumer_group or conventions.consumer_group(ns)
    comparison = compare_buckets(truth.table, changelog_table(bootstrap, group))
    published = published_transitions(bootstrap, ns)
    seen = set(published)
    return Reckoning(
        comparison,
        len(truth.transitions),
        sorted(truth.transitions - seen)[:20],
        sorted(seen - truth.transitions)[:20],
        len(published) - len(seen),
    )


def record(test: str, **figures: object) -> None:
    """Append one test's figures to the fault report (JSON lines) and print them."""
    import json

    line = json.dumps({"test": test, "full": FULL, **figures}, default=str)
    with REPORT.open("a") as out:
        out.write(line + "\n")
    print(line)


def random_moments(rng: random.Random, total: int, count: int) -> list[int]:
    """``count`` points spread over ``total`` (sorted): where kills land in a replay."""
    step = total / (count + 1)
    return [int(step * (i + rng.uniform(0.5, 1.5))) for i in range(count)]


@dataclass
class KillLoop:
    """What a kill -9 loop measured."""

    restart_to_first_message_s: list[float]
    final_drain_s: float


def kill_loop(worker: Worker, messages: int, kills: int, rng: random.Random) -> KillLoop:
    """Run ``worker`` and SIGKILL it ``kills`` times at random points of its progress (in
    messages consumed by the life being killed, so each life progresses), restarting it
    each time; then let a last life drain the group."""
    settings = worker.settings
    per_life = random_moments(rng, messages, kills)
    lives = [b - a for a, b in zip([0, *per_life], per_life, strict=False)]
    restarts: list[float] = []
    for target in lives:
        with worker.running():
            t0 = time.monotonic()
            wait_for(lambda: consumed(worker.addr) > 0, 120, "the first message", worker)
            restarts.append(time.monotonic() - t0)
            want = max(target, 1)

            def reached(want: int = want) -> bool:
                return consumed(worker.addr) >= want or drained(settings)()

            wait_for(reached, 300, f"{want} messages consumed", worker)
            worker.kill9()
    with worker.running():
        t0 = time.monotonic()
        wait_for(drained(settings), 600, "the group to commit every message", worker)
        last = time.monotonic() - t0
    return KillLoop([round(s, 2) for s in restarts], round(last, 1))


SLO_SERIES = "slipstream_slo_objective_ratio"


class MetricsWatch:
    """Scrapes a worker's /metrics every 50 ms from a thread, through its restarts, as
        Prometheus would: counts error responses by status, and checks that once the worker
        says every partition it owns is restored (``slipstream_partitions_ready`` equal to
        ``_assigned``), no SLO it showed before is missing: a restart must never show a
        partial set. A refused connection (the worker is down) and a response cut off by a kill
    are only counted."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.scrapes = self.ready_scrapes = self.refused = self.cut = 0
        self.errors: dict[int, int] = {}
        self.partial: list[int] = []  # SLOs missing, per scrape that showed fewer than before
        self.seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-watch", daemon=True)

    def __enter__(self) -> MetricsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                with urllib.request.urlopen(f"http://{self.addr}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except urllib.error.HTTPError as exc:
                self.errors[exc.code] = self.errors.get(exc.code, 0) + 1
                continue
            except OSError:
                self.refused += 1
                continue
            except http.client.HTTPException:  # the worker was killed mid-response
                self.cut += 1
                continue
            self.scrapes += 1
            self._check(text)

    def _check(self, text: str) -> None:
        slos: set[tuple[str, str]] = set()
        assigned = ready = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == SLO_SERIES:
                    slos.add((s.labels["service"], s.labels["slo"]))
                elif s.name == "slipstream_partitions_assigned":
                    assigned = s.value
                elif s.name == "slipstream_partitions_ready":
                    ready = s.value
        if not assigned or ready != assigned:
            return
        self.ready_scrapes += 1
        missing = self.seen - slos
        if missing:
            self.partial.append(len(missing))
        self.seen |= slos

    def figures(self) -> dict[str, object]:
        return {"metrics_scrapes": self.scrapes, "metrics_scrapes_ready": self.ready_scrapes,
                "metrics_refused": self.refused, "metrics_cut": self.cut,
                "metrics_http_errors": self.errors,
                "metrics_partial_sets": len(self.partial)}  # fmt: skip
