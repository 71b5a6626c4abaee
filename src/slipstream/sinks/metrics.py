"""Every Prometheus metric of the worker, declared in one place against a passed-in registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

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
        # Readiness: ready == assigned once every owned partition's state is restored and
        # shown (a probe, or a test, waits for it before reading /metrics as complete).
        self.partitions_assigned = Gauge(
            "slipstream_partitions_assigned",
            "Source partitions assigned to this worker.",
            registry=registry,
        )
        self.partitions_ready = Gauge(
            "slipstream_partitions_ready",
            "Assigned source partitions whose state is restored and shown in /metrics.",
            registry=registry,
        )
        self.offset_jumps = Counter(
            "slipstream_input_offset_jumps",
            "Source messages that arrived more than one offset beyond the highest of their "
            "partition: the client skipped some, which are read again.",
            ["topic"],
            registry=registry,
        )
        self.offset_rewinds = Counter(
            "slipstream_input_offset_rewinds",
            "Source partitions whose committed offset was found beyond the restored state "
            "after recovery, and set back to where the state ends.",
            ["topic"],
            registry=registry,
        )
        self.held_messages = Counter(
            "slipstream_input_held_messages",
            "Source messages of a partition still being restored, left unacknowledged to be "
            "read again once it is.",
            ["topic"],
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
        self.restored_entries = Counter(
            conventions.METRIC_CHANGELOG_RESTORED,
            "Table changelog entries read into the partition engines when partitions were "
            "assigned (the state a restart resumes from).",
            registry=registry,
        )
        self.checkpoint_entries = Counter(
            conventions.METRIC_CHECKPOINT_RESTORED,
            "Table entries restored from local checkpoints when partitions were assigned "
            "(the changelog is then read only after each checkpoint).",
            registry=registry,
        )
        self.checkpoints_written = Counter(
            conventions.METRIC_CHECKPOINTS_WRITTEN,
            "Local checkpoints of a partition's state written.",
            registry=registry,
        )
        self.checkpoint_bytes = Counter(
            "slipstream_checkpoint_written_bytes",
            "Bytes of local checkpoints written.",
            registry=registry,
        )
        info = Info(conventions.METRIC_WORKER_INFO, "The worker's version.", registry=registry)
        info.info({"version": __version__, "namespace": namespace})

    def count_input(self, topic: str, accepted: int, duplicates: int) -> None:
        """A message's events: ``accepted`` counted, ``duplicates`` dropped by dedup."""
        if accepted:
            self.input_events.labels(topic).inc(accepted)
        if duplicates:
            self.duplicate_events.labels(topic).inc(duplicates)


class InputCounts:
    """Input counters of the messages handled since the last ``flush_into``, per source
    topic: added to the metrics a few times per batch, not once per message (three
    labelled increments per single-event message were ~15 % of its time)."""

    def __init__(self) -> None:
        # topic -> [messages, bytes, accepted events, duplicate events]
        self.by_topic: dict[str, list[int]] = {}

    def add(self, topic: str, size: int, accepted: int, duplicates: int) -> None:
        counts = self.by_topic.get(topic)
        if counts is None:
            counts = self.by_topic[topic] = [0, 0, 0, 0]
        counts[0] += 1
        counts[1] += size
        counts[2] += accepted
        counts[3] += duplicates

    def flush_into(self, metrics: WorkerMetrics) -> None:
        for topic, (messages, size, accepted, duplicates) in self.by_topic.items():
            metrics.input_messages.labels(topic).inc(messages)
            metrics.input_bytes.labels(topic).inc(size)
            metrics.count_input(topic, accepted, duplicates)
        self.by_topic.clear()
