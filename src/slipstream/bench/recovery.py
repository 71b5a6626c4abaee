"""Recovery: a worker killed with SIGKILL restarts on a changelog of N records; seconds from
exec to its first processed event, against the time the raw client (B1) takes to read the
same changelog.

The changelog is written in the table's own format (JSON keys and values, each SLO in
its service's partition): every bucket of every resolution of enough SLOs to reach N
records, as a worker that has run for 30 days leaves it. A worker is started on it (it
recovers, processes an event and checkpoints its state locally), killed with SIGKILL
once its offsets are committed and its checkpoints written, and the same worker (same
group and instance id) is started again: that restart is the one measured, with the
worker's resident memory once it has recovered. It reads its checkpoints and the
changelog after them. It is killed again, its checkpoints are deleted (a worker that
moved to a new machine), and a third start, which reads the whole changelog, is
measured too. New events trickle in throughout, as in production.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.partitioner.default import murmur2

from slipstream import conventions
from slipstream.bench import ladder
from slipstream.bench.load import (
    Load,
    bench_catalogue,
    request_record,
    write_catalogue,
    zipf_services,
)
from slipstream.bench.memory import full_changelog
from slipstream.bench.pipeline import consumed, worker_settings
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings
from slipstream.slo.catalogue import parse_catalogue
from slipstream.streams.supervise import scrape, status_kib, worker_process
from slipstream.streams.topics import ensure_topics

_RESTORED = (f"{conventions.METRIC_CHANGELOG_RESTORED}_total", ())
_FROM_CHECKPOINTS = (f"{conventions.METRIC_CHECKPOINT_RESTORED}_total", ())
_CHECKPOINTS_WRITTEN = (f"{conventions.METRIC_CHECKPOINTS_WRITTEN}_total", ())
_NAMES = (_RESTORED[0], _FROM_CHECKPOINTS[0], _CHECKPOINTS_WRITTEN[0])  # not every SLO's series
TRICKLE_S = 0.05  # one new event this often while the worker starts and restarts
COMMIT_WAIT_S = 4.0  # longer than faust's commit interval (2.8 s)
# How often /metrics is read while waiting for the first event: the figure's resolution
# (it was 0.5 s, a quarter of a 2 s restart; each read is one small HTTP request).
POLL_S = 0.05


@dataclass(frozen=True)
class RecoveryRun:
    records: int
    slos: int
    restart_to_first_event_s: float  # from its local checkpoints and the changelog after
    b1_read_s: float
    rss_mib: float  # the restarted worker's resident memory once it has processed an event
    restored_entries: int  # changelog entries the restarted worker read into its engines
    checkpoint_entries: int  # table entries it restored from its checkpoints
    cold_restart_s: float  # with no checkpoint: the whole changelog read
    cold_restored_entries: int
    namespace: str
    group: str

    @property
    def ratio(self) -> float:
        return self.restart_to_first_event_s / self.b1_read_s

    @property
    def cold_ratio(self) -> float:
        return self.cold_restart_s / self.b1_read_s


def partition_of(service: str, partitions: int) -> int:
    """The partition the SDK's producer sends ``service``'s events to (Kafka's default
    partitioner): its SLOs' state lives in the same partition of the changelog."""
    return int(murmur2(service.encode()) & 0x7FFFFFFF) % partitions


def changelog_entries(slos: list[Any], partitions: int) -> Iterator[tuple[int, str, Any]]:
    """(partition, key, value): full windows for every SLO, in its service's partition."""
    now = int(time.time() * 1000)
    for slo in slos:
        partition = partition_of(slo.service, partitions)
        for key, value in full_changelog([slo], now, partition=partition):
            yield partition, key, value


def write_changelog(bootstrap: str, topic: str, partitions: int, slos: list[Any]) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={
            "cleanup.policy": "compact"})])  # fmt: skip
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=512 * 1024)  # fmt: skip
    count = 0
    try:
        for partition, key, value in changelog_entries(slos, partitions):
            producer.send(topic, key=json.dumps(key).encode(),
                          value=json.dumps(value, separators=(",", ":")).encode(),
                          partition=partition)  # fmt: skip
            count += 1
        producer.flush()
    finally:
        producer.close()
    return count


def records_per_slo() -> int:
    probe = parse_catalogue(bench_catalogue(1), "probe").all_slos()
    return sum(1 for _ in full_changelog(probe[:1], 0))


def run_recovery(
    settings: Settings, records: int, workdir: Path, port: int, timeout_s: float = 900
) -> RecoveryRun:
    """Kill -9 and restart a worker whose changelog holds at least ``records`` records."""
    services = max(-(-records // records_per_slo() // 2), 1)  # two SLOs per service
    catalogue_path = write_catalogue(workdir / "recovery-catalogue.yaml", services)
    slos = parse_catalogue(bench_catalogue(services), "recovery").all_slos()
    tag = uuid.uuid4().hex[:8]
    group = f"bench-r-{tag}"
    child = worker_settings(settings, f"bench-{tag}-recovery", catalogue_path, group, port)
    child = child.replace(instance_id=f"{group}-0")  # static membership: see Settings
    changelog_topic = conventions.changelog_topic(group)
    written = write_changelog(settings.kafka_bootstrap, changelog_topic, settings.partitions, slos)
    changelog = Load("changelog", child.namespace, changelog_topic,
                     settings.partitions, written, written, 0, 0.0)  # fmt: skip
    b1_s = written / ladder.b1_aiokafka(settings.kafka_bootstrap, changelog)
    log = workdir / "worker-recovery.log"
    ensure_topics(child)
    requests = conventions.topic_name(child.namespace, conventions.REQUESTS_TOPIC)
    # Events keep arriving, one every TRICKLE_S, as they would in production: faust drops
    # what it fetches while it recovers (and a new group has no offsets to seek back
    # to), so "first processed event" means the first one sent after recovery, or before.
    checkpoints = Path(child.stack_dir) / "worker" / child.namespace / "checkpoints"
    with Trickle(settings.kafka_bootstrap, requests, services):
        with worker_process(child, log, loglevel="warning") as proc:
            wait_consumed(child.metrics_addr, 1, proc, timeout_s, log)
            _wait_checkpoints(child.metrics_addr, settings.partitions, proc, timeout_s, log)
            time.sleep(COMMIT_WAIT_S)  # offsets committed: the restart resumes from them
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        started = time.perf_counter()
        with worker_process(child, log, loglevel="warning") as proc:
            wait_consumed(child.metrics_addr, 1, proc, timeout_s, log)
            elapsed = time.perf_counter() - started
            rss = status_kib("VmRSS", proc.pid) / 1024
            metrics = scrape(child.metrics_addr, names=_NAMES)
            restored = int(metrics.get(_RESTORED, 0))
            from_checkpoints = int(metrics.get(_FROM_CHECKPOINTS, 0))
            time.sleep(COMMIT_WAIT_S)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(checkpoints)  # a new machine
        started = time.perf_counter()
        with worker_process(child, log, loglevel="warning") as proc:
            wait_consumed(child.metrics_addr, 1, proc, timeout_s, log)
            cold_elapsed = time.perf_counter() - started
            cold_restored = int(scrape(child.metrics_addr, names=_NAMES).get(_RESTORED, 0))
    # A restart that skipped its state would look fast: the restored entries are checked
    # (the bench's changelog fits in one segment, so the log cleaner compacts none of it;
    # a checkpoint holds the buckets still within the windows: all but a few expired).
    if from_checkpoints == 0 or from_checkpoints + restored < 0.99 * written:
        raise RuntimeError(f"the restarted worker restored {from_checkpoints} entries from "
                           f"checkpoints and {restored} from the changelog of {written}; "
                           f"see {log}")  # fmt: skip
    if cold_restored < written:
        raise RuntimeError(f"the cold restart restored {cold_restored} of the {written} "
                           f"changelog entries; see {log}")  # fmt: skip
    return RecoveryRun(written, len(slos), elapsed, b1_s, rss, restored, from_checkpoints,
                       cold_elapsed, cold_restored, child.namespace, group)  # fmt: skip


class Trickle:
    """Sends a request event every ``TRICKLE_S`` from a thread, services in turn."""

    def __init__(self, bootstrap: str, topic: str, services: int) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
        self.topic, self.services = topic, zipf_services(services)[0]
        self.codec = AvroCodec()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trickle", daemon=True)

    def __enter__(self) -> Trickle:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.producer.close()

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(TRICKLE_S):
            service = self.services[i % len(self.services)]
            record = request_record(uuid.uuid4().hex, service, int(time.time() * 1000), False, 20.0)
            self.producer.send(self.topic, key=service.encode(),
                               value=self.codec.encode("RequestEvent", record))  # fmt: skip
            self.producer.flush()
            i += 1


def _wait_checkpoints(
    addr: str, partitions: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path
) -> None:
    """Until the worker has written a checkpoint of each partition."""
    deadline = time.monotonic() + timeout_s
    while int(scrape(addr, names=_NAMES).get(_CHECKPOINTS_WRITTEN, 0)) < partitions:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}); see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker wrote no checkpoints in {timeout_s:.0f} s; see {log}")
        time.sleep(POLL_S)


def wait_consumed(
    addr: str, messages: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while (consumed(addr) or 0) < messages:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}); see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker processed nothing in {timeout_s:.0f} s; see {log}")
        time.sleep(POLL_S)
