"""The faust worker: consumes the source topics as raw bytes and serves /metrics.

At this stage it counts what it consumes; decoding, classification and the
SLO engine hang off the same agent in later modules.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server

from slipstream import conventions
from slipstream.settings import Settings
from slipstream.sinks.metrics import WorkerMetrics
from slipstream.stack.process import StackError
from slipstream.streams.topics import ensure_topics

log = logging.getLogger(__name__)


def create_app(settings: Settings, metrics: WorkerMetrics) -> faust.App:
    ns = settings.namespace
    datadir = Path(settings.stack_dir) / "worker" / (ns or "default")
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        conventions.consumer_group(ns),
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        # Tables come with the SLO engine; their state lives in changelog topics.
        store="memory://",
        datadir=str(datadir),
        # faust's web server exposes table contents: off. Metrics have their own endpoint.
        web_enabled=False,
        topic_partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
    )
    base_of = {conventions.topic_name(ns, t): t for t in conventions.SOURCE_TOPICS}
    sources = app.topic(
        *base_of,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
    )

    # concurrency=1: a counting agent must never commit past an unfinished event (faust #606).
    @app.agent(sources, concurrency=1)
    async def consume_sources(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            topic = base_of.get(event.message.topic, "other")
            metrics.input_messages.labels(topic).inc()
            metrics.input_bytes.labels(topic).inc(len(event.value or b""))
            yield None

    return app


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> None:
    host, port = settings.metrics_host_port
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise StackError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}); "
            "choose another address with --metrics-addr / SLIPSTREAM_METRICS_ADDR"
        ) from exc


def run_worker(settings: Settings, loglevel: str = "warning") -> int:
    created = ensure_topics(settings)
    if created:
        print(f"created topics: {', '.join(created)}", flush=True)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise on counters
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, settings.namespace)
    serve_metrics(settings, registry)
    app = create_app(settings, metrics)
    print(
        f"worker: group {conventions.consumer_group(settings.namespace)} on "
        f"{settings.kafka_bootstrap}; metrics on http://{settings.metrics_addr}/metrics",
        flush=True,
    )
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    if not sys.stdout.isatty():
        worker.spinner = None  # its escape codes only clutter a log file
    worker.execute_from_commandline()  # returns only through SystemExit
    return 0
