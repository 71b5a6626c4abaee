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
        info = Info(conventions.METRIC_WORKER_INFO, "The worker's version.", registry=registry)
        info.info({"version": __version__, "namespace": namespace})
