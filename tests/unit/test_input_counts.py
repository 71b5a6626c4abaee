"""A batch's input counters reach the metrics summed per topic, and only once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from slipstream import conventions
from slipstream.sinks.metrics import InputCounts, WorkerMetrics


def test_counts_are_added_per_topic_and_cleared_when_flushed() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, "")
    counts = InputCounts()
    counts.add("slo.requests", 70, accepted=1, duplicates=0)
    counts.add("slo.requests", 80, accepted=0, duplicates=1)
    counts.add("slo.deploys", 50, accepted=1, duplicates=0)
    counts.flush_into(metrics)
    counts.flush_into(metrics)  # nothing new: nothing added twice

    def value(name: str, topic: str) -> float | None:
        return registry.get_sample_value(f"{name}_total", {"topic": topic})

    assert value(conventions.METRIC_INPUT_MESSAGES, "slo.requests") == 2
    assert value(conventions.METRIC_INPUT_BYTES, "slo.requests") == 150
    assert value(conventions.METRIC_INPUT_EVENTS, "slo.requests") == 1
    assert value(conventions.METRIC_DUPLICATE_EVENTS, "slo.requests") == 1
    assert value(conventions.METRIC_INPUT_MESSAGES, "slo.deploys") == 1
