"""``slipstream bench hotpath``: µs per event of each stage of the worker's message path, offline.

No broker, no faust: ``RequestBatch`` messages are built as the perf benchmark loads them
(``load.py``: Zipf-skewed services, SDK batches of up to 100 events or 200 ms), then timed
stage by stage in this process:

- ``decode``: the codec alone (fastavro: B2's work per message);
- ``ingest``: ``Ingestor.ingest`` (decode, validate, stream time, dedup; the ``tally``
  path reads with the compiled reader of ``schemas/request_rows.py`` when built);
- ``engine``: counting what ingest accepted (``begin`` + absorb per message, ``end`` per
  micro-batch), the engine's share;
- ``worker``: the whole path ``SloWorker`` runs per message (metrics, ingest, counting)
  and per micro-batch (``end``, table writes into a dict, the state sink), minus faust.

The last three run both ways: ``request`` (a ``Request`` per event, ``absorb_many``) and
``tally`` (the batch counted as it is checked, ``absorb_tallied``: what the worker runs).

Stages run in turns (A/B/A/B) so that a noisy neighbour slows all alike; the median of
each is reported. Every run starts from fresh state (dedup would refuse a second pass).
"""

from __future__ import annotations

import functools
import statistics
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from slipstream import conventions
from slipstream.bench.load import SDK_LINGER_MS, bench_catalogue, events, sdk_batches
from slipstream.schemas.codec import AvroCodec
from slipstream.sinks.metrics import InputCounts, WorkerMetrics
from slipstream.sinks.state import InMemoryStateSink
from slipstream.slo.catalogue import Catalogue, parse_catalogue
from slipstream.slo.engine import PartitionEngine
from slipstream.streams.ingest import REQUEST_SCHEMAS, Ingested, Ingestor

TOPIC = conventions.REQUESTS_TOPIC
MICRO_BATCH = 100  # messages per engine end(): what a 0.2 s take_events holds under load


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True)
class Workload:
    catalogue: Catalogue
    messages: list[Message]
    events: int
    now_ms: int


def workload(
    n: int, services: int, partitions: int = 4, seed: int = 1, linger_ms: int | None = SDK_LINGER_MS
) -> Workload:
    """``n`` events as the perf benchmark's batched topic holds them, keyed by service
    (``linger_ms`` None: every batch full, 100 events)."""
    codec = AvroCodec()
    now = int(time.time() * 1000)
    offsets = [0] * partitions
    messages = []
    for service, batch in sdk_batches(events(n, services, seed, now), linger_ms=linger_ms):
        partition = zlib.crc32(service.encode()) % partitions
        value = codec.encode("RequestBatch", {"events": batch, "sdk": "bench"})
        messages.append(Message(partition, offsets[partition], value))
        offsets[partition] += 1
    catalogue = parse_catalogue(bench_catalogue(services), "bench")
    return Workload(catalogue, messages, n, now)


def time_decode(w: Workload) -> float:
    codec = AvroCodec()
    started = time.perf_counter()
    for m in w.messages:
        codec.decode(m.value, REQUEST_SCHEMAS)
    return time.perf_counter() - started


PATHS = ("request", "tally")


def ingestor(w: Workload, path: str) -> Ingestor:
    return Ingestor(catalogue=w.catalogue if path == "tally" else None)


def time_ingest(w: Workload, path: str) -> float:
    ingest = ingestor(w, path).ingest
    started = time.perf_counter()
    for m in w.messages:
        ingest(TOPIC, m.partition, m.value, w.now_ms)
    return time.perf_counter() - started


def ingested(w: Workload, path: str) -> list[Ingested]:
    ingest = ingestor(w, path).ingest
    return [ingest(TOPIC, m.partition, m.value, w.now_ms) for m in w.messages]


def time_engine(w: Workload, results: list[Ingested]) -> float:
    engines: dict[int, PartitionEngine] = {}
    started = time.perf_counter()
    for i, (m, result) in enumerate(zip(w.messages, results, strict=True)):
        engine = engines.get(m.partition)
        if engine is None:
            engine = engines[m.partition] = PartitionEngine(m.partition, w.catalogue)
        result.absorb_into(engine, m.offset)
        if i % MICRO_BATCH == MICRO_BATCH - 1:
            for e in engines.values():
                e.end()
    for e in engines.values():
        e.end()
    return time.perf_counter() - started


class _Worker:
    """``SloWorker.absorb`` and the part of ``handle_batch`` after it, without faust."""

    def __init__(self, w: Workload, path: str) -> None:
        self.metrics = WorkerMetrics(CollectorRegistry(), "")
        self.ingestor = ingestor(w, path)
        self.catalogue = w.catalogue
        self.engines: dict[int, PartitionEngine] = {}
        self.state = InMemoryStateSink()
        self.table: dict[str, Any] = {}
        self.dead = 0
        self.counts = InputCounts()

    def absorb(self, m: Message, received: int) -> PartitionEngine | None:
        metrics = self.metrics
        result = self.ingestor.ingest(TOPIC, m.partition, m.value, received)
        for dead in result.dead:
            dead.headers(TOPIC, m.partition, m.offset, received)
            metrics.dead_letters.labels(TOPIC, dead.reason).inc()
            self.dead += 1
        accepted = result.accepted
        self.counts.add(TOPIC, len(m.value), accepted, result.duplicates)
        if not accepted:
            return None
        engine = self.engines.get(m.partition)
        if engine is None:
            engine = self.engines[m.partition] = PartitionEngine(m.partition, self.catalogue)
        result.absorb_into(engine, m.offset)
        return engine

    def close(self, engine: PartitionEngine) -> None:
        self.counts.flush_into(self.metrics)
        result = engine.end()
        for key in result.deletes:
            self.table.pop(key, None)
        self.table.update(result.writes)
        for transition, snapshot in result.transitions:
            self.state.add_transition(transition, snapshot)
        for snapshot in result.latest.values():
            self.state.add_snapshot(snapshot)
        self.metrics.late_events.inc(result.late_events)


def time_worker(w: Workload, path: str) -> float:
    worker = _Worker(w, path)
    started = time.perf_counter()
    for start in range(0, len(w.messages), MICRO_BATCH):
        touched: dict[int, PartitionEngine] = {}
        for m in w.messages[start : start + MICRO_BATCH]:
            engine = worker.absorb(m, w.now_ms)
            if engine is not None:
                touched[m.partition] = engine
        for engine in touched.values():
            worker.close(engine)
    return time.perf_counter() - started


def stages(w: Workload) -> dict[str, Callable[[], float]]:
    out: dict[str, Callable[[], float]] = {"decode": lambda: time_decode(w)}
    for stage, timer in (("ingest", time_ingest), ("worker", time_worker)):
        for path in PATHS:
            out[f"{stage} [{path}]"] = functools.partial(timer, w, path)
    for path in PATHS:
        out[f"engine [{path}]"] = functools.partial(time_engine, w, ingested(w, path))
    return out


def run(w: Workload, repeats: int, only: list[str] | None = None) -> dict[str, list[float]]:
    """µs per event of each stage, ``repeats`` times in turns."""
    chosen = {k: fn for k, fn in stages(w).items() if not only or k.split()[0] in only}
    runs: dict[str, list[float]] = {k: [] for k in chosen}
    for _ in range(repeats):
        for name, fn in chosen.items():
            runs[name].append(fn() / w.events * 1e6)
    return runs


def report(w: Workload, runs: dict[str, list[float]]) -> str:
    lines = [
        f"{w.events:,} events in {len(w.messages):,} RequestBatch messages "
        f"({w.events / len(w.messages):.1f} events per message), "
        f"{len(w.catalogue.all_slos())} SLOs; µs per event, median (min to max) "
        f"of {len(next(iter(runs.values())))} runs",
        "",
        "| stage | µs/event |",
        "|---|---|",
    ]
    for name, values in runs.items():
        lines.append(
            f"| {name} | {statistics.median(values):.2f} ({min(values):.2f} to {max(values):.2f}) |"
        )
    return "\n".join(lines)


def main(events_n: int, services: int, repeats: int, only: list[str] | None = None) -> int:
    w = workload(events_n, services)
    print(report(w, run(w, repeats, only)))
    return 0
