"""A whole worker's memory with N SLOs holding full 30-day windows: the real worker process
(faust, its client, the sinks, /metrics with every SLO's series), not the engine alone.

Building that state by processing 30 days of events, or by reading a changelog of
N x ~1 750 records (17 M at 10 000 SLOs), would take the bench many minutes. The worker's
own local checkpoints are written instead, one per partition, with every bucket of every
resolution holding counts (the rings of one SLO loaded from a full changelog, copied for
each SLO) and each SLO's clock; the worker starts on them with an empty changelog, as a
worker restarted on its machine does, processes trickling events, and its resident set
is read. The same worker with the same catalogue and no state is the baseline.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from slipstream import conventions
from slipstream.bench.load import bench_catalogue, write_catalogue
from slipstream.bench.memory import full_changelog
from slipstream.bench.pipeline import worker_settings
from slipstream.bench.recovery import Trickle, partition_of, wait_consumed
from slipstream.settings import Settings
from slipstream.slo.catalogue import Catalogue, Slo, parse_catalogue
from slipstream.slo.engine import BucketImage, PartitionEngine
from slipstream.slo.windows import SeriesImage
from slipstream.streams.checkpoints import Checkpoint, CheckpointDir
from slipstream.streams.supervise import scrape, status_kib, worker_process
from slipstream.streams.topics import ensure_topics

_FROM_CHECKPOINTS = (f"{conventions.METRIC_CHECKPOINT_RESTORED}_total", ())
SETTLE_S = 2.0  # after the first event: the restored state published, sinks flushed


@dataclass(frozen=True)
class WorkerMemory:
    slos: int
    entries: int  # table entries the worker restored from the checkpoints
    rss_mib: float  # the worker holding the SLOs' full windows
    bare_rss_mib: float  # the same worker and catalogue, no state
    namespaces: tuple[str, ...]
    groups: tuple[str, ...]

    @property
    def kib_per_slo(self) -> float:
        return (self.rss_mib - self.bare_rss_mib) * 1024 / self.slos


def _template_rings(catalogue: Catalogue, slo: Slo, now_ms: int) -> list[SeriesImage]:
    """The rings of one SLO restored from a changelog whose every bucket holds counts."""
    engine = PartitionEngine(0, catalogue)
    entries = list(full_changelog([slo], now_ms))
    engine.load_entries([k for k, _ in entries], [v for _, v in entries])
    return engine.bucket_image().slos[(slo.service, slo.name)]


def write_checkpoints(
    directory: CheckpointDir, catalogue: Catalogue, partitions: int, now_ms: int
) -> int:
    """A checkpoint per partition holding every SLO of its services with full windows;
    the table entries written."""
    slos = catalogue.all_slos()
    names = frozenset((slo.service, slo.name) for slo in slos)
    templates: dict[str, list[SeriesImage]] = {}
    clock = now_ms // 10_000 * 10_000
    state = f'{{"clock_ms":{clock},"first_clock_ms":{clock - 30 * 86_400_000}}}'
    written = 0
    for partition in range(partitions):
        images: dict[tuple[str, str], list[SeriesImage]] = {}
        entries: dict[str, str] = {}
        for slo in slos:
            if partition_of(slo.service, partitions) != partition:
                continue
            rings = templates.get(slo.name)
            if rings is None:
                rings = templates[slo.name] = _template_rings(catalogue, slo, now_ms)
            images[(slo.service, slo.name)] = rings  # the same arrays: written, not kept
            entries[f"{partition}|s|{slo.service}|{slo.name}"] = state
        checkpoint = Checkpoint(directory.topic, partition, -1, BucketImage(-1, images),
                                entries, names, now_ms)  # fmt: skip
        directory.write(checkpoint)
        written += checkpoint.held
    return written


def _resident_mib(child: Settings, log: Path, timeout_s: float, services: int) -> tuple[float, int]:
    requests = conventions.topic_name(child.namespace, conventions.REQUESTS_TOPIC)
    with (
        Trickle(child.kafka_bootstrap, requests, services),
        worker_process(child, log, loglevel="warning") as proc,
    ):
        wait_consumed(child.metrics_addr, 1, proc, timeout_s, log)
        time.sleep(SETTLE_S)
        rss = status_kib("VmRSS", proc.pid) / 1024
        # Only this counter: at 10 000 SLOs a full scrape takes longer than its timeout.
        samples = scrape(child.metrics_addr, names=(_FROM_CHECKPOINTS[0],))
        restored = int(samples.get(_FROM_CHECKPOINTS, 0))
    return rss, restored


def measure_worker(
    settings: Settings, slos: int, workdir: Path, port: int, timeout_s: float = 900
) -> WorkerMemory:
    """RSS of a worker holding ``slos`` SLOs with full windows, and of a bare one."""
    services = -(-slos // 2)  # two SLOs per service
    catalogue_path = write_catalogue(workdir / f"worker-memory-{slos}.yaml", services)
    catalogue = parse_catalogue(bench_catalogue(services), "worker memory")
    tag = uuid.uuid4().hex[:8]
    runs = []
    for kind in ("bare", "full"):
        group = f"bench-m-{tag}-{kind}"
        child = worker_settings(settings, f"bench-{tag}-wmem-{kind}", catalogue_path, group,
                                port)  # fmt: skip
        ensure_topics(child)
        written = 0
        if kind == "full":
            topic = conventions.changelog_topic(group)
            root = Path(child.stack_dir) / "worker" / child.namespace / "checkpoints"
            written = write_checkpoints(CheckpointDir(root, topic), catalogue,
                                        settings.partitions, int(time.time() * 1000))  # fmt: skip
        log = workdir / f"worker-memory-{slos}-{kind}.log"
        rss, restored = _resident_mib(child, log, timeout_s, services)
        if restored < written:
            raise RuntimeError(f"the worker restored {restored} of the {written} entries of "
                               f"its checkpoints; see {log}")  # fmt: skip
        runs.append((child.namespace, group, rss, restored))
    (bare_ns, bare_group, bare_rss, _), (ns, group, rss, restored) = runs
    return WorkerMemory(len(catalogue.all_slos()), restored, rss, bare_rss, (bare_ns, ns),
                        (bare_group, group))  # fmt: skip
