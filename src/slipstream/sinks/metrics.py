"""Every Prometheus metric of the worker, declared in one place against a passed-in registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Info

from slipstream import __version__, conventions


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.registry = registry
        self.input_messages = Counter(
            conventions.METRIC_INPUT_MESSAGES,
            "Messages consumed from the source topics.",
            ["topic"],
            registry=registry,
        )
        self.input_bytes = Counter(
            conventions.METRIC_INPUT_BYTES,
            "Bytes of message values consumed from the source topics.",
            ["topic"],
            registry=registry,
        )
        self.input_events = Counter(
            conventions.METRIC_INPUT_EVENTS,
            "Valid events accepted from the source topics (after dedup).",
            ["topic"],
            registry=registry,
        )
        self.dead_letters = Counter(
            conventions.METRIC_DEAD_LETTERS,
            "Messages or events sent to the dead-letter topic, by reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.duplicate_events = Counter(
            conventions.METRIC_DUPLICATE_EVENTS,
            "Events dropped because their event_id was seen within the dedup horizon.",
            ["topic"],
            registry=registry,
        )
        self.late_events = Counter(
            "slipstream_late_events",
            "Events behind their SLO's evaluation clock: counted, but past evaluations stand.",
            registry=registry,
        )
        self.replayed_skipped = Counter(
            "slipstream_replayed_events_skipped",
            "Events of a replayed offset already in the state (the offset guard).",
            registry=registry,
        )
        self.unknown_service_events = Counter(
            "slipstream_unknown_service_events",
            "Valid events of services that have no SLO in the catalogue.",
            registry=registry,
        )
        self.alert_transitions = Counter(
            "slipstream_alert_transitions",
            "Alert transitions published to slo.alerts.",
            ["state", "severity"],
            registry=registry,
        )
        self.redis_flush_failures = Counter(
            "slipstream_redis_flush_failures",
            "Redis flushes that failed (the state is kept and written by the next one).",
            registry=registry,
        )
        info = Info(conventions.METRIC_WORKER_INFO, "The worker's version.", registry=registry)
        info.info({"version": __version__, "namespace": namespace})
