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
        info = Info(conventions.METRIC_WORKER_INFO, "The worker's version.", registry=registry)
        info.info({"version": __version__, "namespace": namespace})
