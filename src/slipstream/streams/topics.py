"""Creates the project's topics with the admin client (the broker never auto-creates them)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from slipstream import conventions
from slipstream.connect import explained_kafka_access, kafka_options
from slipstream.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def topic_specs(settings: Settings) -> list[TopicSpec]:
    ns, n = settings.namespace, settings.partitions
    specs = [TopicSpec(conventions.topic_name(ns, t), n) for t in conventions.SOURCE_TOPICS]
    specs += [
        TopicSpec(conventions.topic_name(ns, t), n, t in conventions.COMPACTED_TOPICS)
        for t in conventions.OUTPUT_TOPICS
    ]
    specs += [TopicSpec(conventions.dlq_topic_name(ns, t), 1) for t in conventions.SOURCE_TOPICS]
    return specs


def admin_client(settings: Settings, client_id: str = "slipstream-admin") -> KafkaAdminClient:
    return KafkaAdminClient(
        **kafka_options(settings),
        client_id=client_id,
        request_timeout_ms=15000,
        bootstrap_timeout_ms=10000,  # an unreachable broker: fail in seconds, not half a minute
    )


class TopicAdminError(RuntimeError):
    """The broker refused to create a topic; the message carries its reason."""


TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


def worker_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The project's topics and the worker's state changelog. faust would create the
    changelog itself at start, but a topic created after the group's metadata snapshot
    has 0 partitions in it, and the first table write then failed faust's partition
    check ("has 0 partitions"), ending a brand-new worker at its first batch."""
    group = settings.consumer_group or conventions.consumer_group(settings.namespace)
    changelog = TopicSpec(conventions.changelog_topic(group), settings.partitions, True)
    return [*topic_specs(settings), changelog]


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the missing topics (``topic_specs`` unless given); return the names created.
    Existing ones are left as they are.

    Returns once the new topics are in the broker's metadata with a leader for
    every partition, so a producer or consumer can use them straight away.
    """
    with explained_kafka_access(settings):
        admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        wanted = {
            s.name: {
                "num_partitions": s.partitions,
                # -1: the broker's default.replication.factor (1 on the local stack).
                "replication_factor": -1,
                "configs": {"cleanup.policy": "compact"} if s.compacted else {},
            }
            for s in (topic_specs(settings) if specs is None else specs)
            if s.name not in existing
        }
        if not wanted:
            return []
        response = admin.create_topics(
            wanted, timeout_ms=15000, raise_errors=False, wait_for_metadata=True
        )
        created, failed = [], []
        for result in response["topics"]:
            code = result["error_code"]
            if code == 0:
                created.append(result["name"])
            elif code != TOPIC_ALREADY_EXISTS:  # another worker created it at the same moment
                failed.append(f"{result['name']}: {result['error_message']} (code {code})")
        if failed:
            raise TopicAdminError("could not create topics: " + "; ".join(failed))
        return created
    finally:
        admin.close()


def delete_namespace_topics(settings: Settings) -> list[str]:
    """Delete every topic of the settings' namespace (tests clean up after themselves)."""
    if not settings.namespace:
        raise ValueError("refusing to delete topics outside a namespace")
    admin = admin_client(settings)
    try:
        prefix = settings.namespace + "."
        doomed = [t for t in admin.list_topics() if t.startswith(prefix)]
        if doomed:
            # Best effort: a namespace's topics are invisible to other namespaces anyway.
            with contextlib.suppress(KafkaError):
                admin.delete_topics(doomed, timeout_ms=15000)
        return doomed
    finally:
        admin.close()
