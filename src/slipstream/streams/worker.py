"""The faust worker: consumes the source topics as raw bytes and serves /metrics.

Each message is decoded and validated by the input side (``ingest``); what
fails goes to ``<topic>.dlq`` with its reason. Classification and the SLO
engine hang off the same agent in later modules.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server

from slipstream import conventions
from slipstream.settings import Settings
from slipstream.sinks.metrics import WorkerMetrics
from slipstream.stack.process import StackError
from slipstream.streams.ingest import DeadLetter, Ingested, Ingestor
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
    dlq = {
        base: app.topic(conventions.dlq_topic_name(ns, base), key_type=bytes, value_type=bytes)
        for base in conventions.SOURCE_TOPICS
    }
    ingestor = Ingestor()

    # concurrency=1: a counting agent must never commit past an unfinished event (faust #606).
    @app.agent(sources, concurrency=1)
    async def consume_sources(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            msg = event.message
            topic = base_of.get(msg.topic, "other")
            value: bytes = event.value or b""
            metrics.input_messages.labels(topic).inc()
            metrics.input_bytes.labels(topic).inc(len(value))
            now_ms = int(time.time() * 1000)
            try:
                result = ingestor.ingest(topic, msg.partition, value, now_ms)
            except Exception as exc:
                # A bug of ours must neither stop the stream nor skip the event unseen
                # (an exception escaping the agent acknowledges the event: faust #315).
                log.exception("ingest failed at %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                result = Ingested(
                    dead=[DeadLetter(value, type(exc).__name__, "internal-error", str(exc))]
                )
            for dead in result.dead:
                headers = dead.headers(msg.topic, msg.partition, msg.offset, now_ms)
                # Sent before the source offset is committed (faust publishes attached
                # messages first), so a dead letter is never lost.
                await dlq[topic].send(key=msg.key, value=dead.value, headers=headers)
                metrics.dead_letters.labels(topic, dead.reason).inc()
            accepted = len(result.requests) + len(result.deploys)
            if accepted:
                metrics.input_events.labels(topic).inc(accepted)
            if result.duplicates:
                metrics.duplicate_events.labels(topic).inc(result.duplicates)
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
