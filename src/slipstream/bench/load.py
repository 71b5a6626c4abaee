"""The performance benchmark's input: a catalogue and N request events pre-loaded on the broker.

The same events are loaded twice, into two namespaces: one Avro ``RequestEvent`` per
message (what a service without the SDK sends) and ``RequestBatch`` messages of up to
``BATCH_EVENTS`` events of one service, sent when full or ``SDK_LINGER_MS`` old
(what the SDK sends). Traffic is skewed over
the services like real fleets (a few services carry most requests), event times
are in order at ``EVENT_RATE`` events per second, 0.5 % of requests fail and
latencies are log-normal.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaProducer

from slipstream import conventions
from slipstream.connect import kafka_options
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings
from slipstream.streams.topics import ensure_topics

BATCH_EVENTS = 100
SDK_LINGER_MS = 200  # the SDK sends a service's batch when full or this old (its default)
# Event times as if the fleet produced this many events per second: SLOs are evaluated
# per 10 s of event time, so a backlog that packs hours into a few seconds of reading
# would cost evaluations no real backlog at this rate has.
EVENT_RATE = 5000
SHAPES = ("single", "batched")


@dataclass(frozen=True)
class Load:
    """One pre-loaded topic."""

    shape: str  # single | batched
    namespace: str
    topic: str
    partitions: int
    messages: int
    events: int
    bytes: int
    seconds: float  # time the load took (not a benchmark figure)


def bench_catalogue(services: int) -> dict[str, Any]:
    """``services`` services with an availability and a latency SLO each, 30-day periods."""
    return {
        "services": {
            f"svc{i:03d}": {
                "slos": [
                    {"name": "availability", "objective": 99.9, "period": "30d",
                     "sli": {"kind": "availability"}},
                    {"name": "latency", "objective": 99.0, "period": "30d",
                     "sli": {"kind": "latency", "threshold_ms": 300}},
                ]
            }
            for i in range(services)
        }
    }  # fmt: skip


def write_catalogue(path: Path, services: int, extra: dict[str, Any] | None = None) -> Path:
    """The bench catalogue, with ``extra`` services (the latency targets) added."""
    catalogue = bench_catalogue(services)
    catalogue["services"].update(extra or {})
    path.write_text(yaml.safe_dump(catalogue, sort_keys=False))
    return path


def zipf_services(services: int) -> tuple[list[str], list[float]]:
    """The bench catalogue's service names and Zipf weights (a few carry most traffic)."""
    return [f"svc{i:03d}" for i in range(services)], [1.0 / (r + 1) for r in range(services)]


def request_record(
    event_id: str, service: str, ts_ms: int, failed: bool, latency_ms: float
) -> dict[str, Any]:
    """A ``RequestEvent`` record as the SDK writes it."""
    return {"event_id": event_id, "service": service, "operation": "GET /items",
            "status_code": 503 if failed else 200, "latency_ms": latency_ms,
            "timestamp": ts_ms, "version": "v1", "region": "local", "callee": None}  # fmt: skip


def events(n: int, services: int, seed: int, end_ms: int) -> Iterator[dict[str, Any]]:
    """N request records in event-time order, Zipf-like over the services."""
    rng = random.Random(seed)
    names, weights = zipf_services(services)
    start = end_ms - n * 1000 // EVENT_RATE
    for i, service in enumerate(rng.choices(names, weights, k=n)):
        failed = rng.random() < 0.005
        latency = round(rng.lognormvariate(4.0, 0.8), 2)
        yield request_record(f"bench-{seed}-{i:012d}", service, start + i * 1000 // EVENT_RATE,
                             failed, latency)  # fmt: skip


def sdk_batches(
    records: Iterable[dict[str, Any]],
    batch_events: int = BATCH_EVENTS,
    linger_ms: int | None = SDK_LINGER_MS,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The ``RequestBatch`` contents the SDK forms from ``records`` (in event-time order): per
    service, sent when ``batch_events`` full or ``linger_ms`` of event time old (None: no
    limit); what is left goes out at the end."""
    pending: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        service = record["service"]
        batch = pending.setdefault(service, [])
        batch.append(record)
        full = len(batch) == batch_events
        age = record["timestamp"] - batch[0]["timestamp"]
        if full or (linger_ms is not None and age >= linger_ms):
            del pending[service]
            yield service, batch
    yield from pending.items()


def now_ms() -> int:
    return int(time.time() * 1000)


def preload(
    settings: Settings,
    shape: str,
    n: int,
    services: int,
    seed: int,
    progress: Any = None,
    records: Iterable[dict[str, Any]] | None = None,
    batch_events: int = BATCH_EVENTS,
    linger_ms: int | None = SDK_LINGER_MS,
) -> Load:
    """Create the namespace's topics and fill its request topic with ``n`` events (or with
    ``records``, ``n`` of them, in event-time order). Batches hold up to ``batch_events``
    events and ``linger_ms`` of event time (None: no limit)."""
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: expected one of {SHAPES}")
    namespace = settings.namespace
    ensure_topics(settings)
    topic = conventions.topic_name(namespace, conventions.REQUESTS_TOPIC)
    codec = AvroCodec()
    producer = KafkaProducer(
        **kafka_options(settings),
        acks=1,
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    started = time.monotonic()
    messages = size = sent = 0

    def send(service: str, value: bytes) -> None:
        nonlocal messages, size
        producer.send(topic, key=service.encode(), value=value)
        messages += 1
        size += len(value)

    def counted(source: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal sent
        for i, record in enumerate(source):
            sent += 1
            if progress is not None and i % 50_000 == 0:
                progress(i / n)
            yield record

    try:
        source = counted(records if records is not None else events(n, services, seed, now_ms()))
        if shape == "single":
            for record in source:
                send(record["service"], codec.encode("RequestEvent", record))
        else:
            for service, batch in sdk_batches(source, batch_events, linger_ms):
                send(service, codec.encode("RequestBatch", {"events": batch, "sdk": "bench"}))
        producer.flush()
    finally:
        producer.close()
    return Load(
        shape,
        namespace,
        topic,
        settings.partitions,
        messages,
        sent,
        size,
        time.monotonic() - started,
    )
