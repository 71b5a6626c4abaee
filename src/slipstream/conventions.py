"""Every name that crosses a process boundary: topics, consumer group, Redis keys, metrics.

One module, so that the producer SDK, the worker, the CLI and the tests can
never disagree on a name (Sloth keeps the same in ``pkg/common/conventions``).
"""

from __future__ import annotations

from typing import Final

# Source and output topics of DESIGN.md, before the namespace prefix.
REQUESTS_TOPIC: Final = "slo.requests"
DEPLOYS_TOPIC: Final = "slo.deploys"
ALERTS_TOPIC: Final = "slo.alerts"
BUDGET_TOPIC: Final = "slo.budget"
DEPLOY_IMPACT_TOPIC: Final = "slo.deploy-impact"
POLICY_TOPIC: Final = "slo.policy"
DLQ_SUFFIX: Final = ".dlq"

SOURCE_TOPICS: Final = (REQUESTS_TOPIC, DEPLOYS_TOPIC)
OUTPUT_TOPICS: Final = (ALERTS_TOPIC, BUDGET_TOPIC, DEPLOY_IMPACT_TOPIC, POLICY_TOPIC)
# Topics whose latest record per key is the state: Kafka keeps only that.
COMPACTED_TOPICS: Final = frozenset({BUDGET_TOPIC})

CONSUMER_GROUP: Final = "slipstream"
# The worker's state table; faust names its changelog "<consumer group>-slo-state-changelog".
STATE_TABLE: Final = "slo-state"
REDIS_PREFIX: Final = "slipstream"

# Metric names (units in names, _total on counters).
METRIC_INPUT_MESSAGES: Final = "slipstream_input_messages"  # counter: prometheus adds _total
METRIC_INPUT_BYTES: Final = "slipstream_input_bytes"
METRIC_INPUT_EVENTS: Final = "slipstream_input_events"
METRIC_DEAD_LETTERS: Final = "slipstream_dead_letters"
METRIC_DUPLICATE_EVENTS: Final = "slipstream_duplicate_events"
METRIC_WORKER_INFO: Final = "slipstream_worker"  # info: prometheus adds _info
# counter: changelog entries read into the engines when partitions were assigned
METRIC_CHANGELOG_RESTORED: Final = "slipstream_changelog_entries_restored"
# counter: table entries restored from local checkpoints (streams/checkpoints.py)
METRIC_CHECKPOINT_RESTORED: Final = "slipstream_checkpoint_entries_restored"
METRIC_CHECKPOINTS_WRITTEN: Final = "slipstream_checkpoints_written"  # counter


def topic_name(namespace: str, base: str) -> str:
    """``slo.requests`` becomes ``ns.slo.requests`` inside namespace ``ns``."""
    return f"{namespace}.{base}" if namespace else base


def dlq_topic_name(namespace: str, base: str) -> str:
    return topic_name(namespace, base) + DLQ_SUFFIX


def all_topic_names(namespace: str) -> list[str]:
    bases = [*SOURCE_TOPICS, *OUTPUT_TOPICS]
    return [topic_name(namespace, b) for b in bases] + [
        dlq_topic_name(namespace, b) for b in SOURCE_TOPICS
    ]


def consumer_group(namespace: str) -> str:
    return topic_name(namespace, CONSUMER_GROUP)


def changelog_topic(group: str) -> str:
    """The worker's state changelog, as faust names it after the group (its app id)."""
    return f"{group}-{STATE_TABLE}-changelog"


def redis_key(namespace: str, *parts: str) -> str:
    """``slipstream:[{namespace}:]part:part…`` as DESIGN.md lays it out."""
    head = [REDIS_PREFIX, namespace] if namespace else [REDIS_PREFIX]
    return ":".join([*head, *parts])


def redis_budget_key(namespace: str, service: str, slo: str) -> str:
    return redis_key(namespace, "budget", service, slo)
