"""Subscribing to slipstream's outputs: typed burn-rate alerts, deploy verdicts and
policy events, from their topics, in a consumer group of your own.

    from slipstream.client.subscribe import Subscriber

    with Subscriber("127.0.0.1:9092", group="pager-bridge") as sub:
        for item in sub:                      # blocks; Ctrl-C or sub.stop() ends it
            if isinstance(item, BurnRateAlert) and item.severity == "page":
                page_someone(item)

Records are decoded against the schema they were written with and resolved to the one
this SDK knows: a record written by an older slipstream gets the defaults of the fields
it lacks, one written by a newer slipstream is read without the fields this one does not
know. A record that is not one of the three types is skipped. Offsets are committed after
the caller has taken each polled batch (at least once: a crash replays the last one).
Importable without faust.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer

from slipstream import conventions
from slipstream.schemas.codec import AvroCodec, CodecError

ALERTS, VERDICTS, POLICY = "alerts", "verdicts", "policy"
_TOPICS = {ALERTS: conventions.ALERTS_TOPIC, VERDICTS: conventions.DEPLOY_IMPACT_TOPIC,
           POLICY: conventions.POLICY_TOPIC}  # fmt: skip


@dataclass(frozen=True)
class BurnRateAlert:
    """One transition of an SLO's alert: firing, escalated or resolved."""

    alert_id: str
    service: str
    slo: str
    severity: str  # page | ticket
    long_window_s: int
    short_window_s: int
    factor: float
    state: str  # firing | escalated | resolved
    event_time_ms: int
    processed_at_ms: int
    burn_rate_long: float
    burn_rate_short: float
    budget_remaining_ratio: float
    suspected_deploy_id: str | None
    cause: str  # deploy | external | unknown


@dataclass(frozen=True)
class DeployVerdict:
    """A deploy's verdict for one SLO (or the deploy as a whole when ``slo`` is None)."""

    deploy_id: str
    service: str
    version: str
    slo: str | None
    verdict: str  # ATTRIBUTED | SUSPECTED | AMBIGUOUS | EXTERNAL | INCONCLUSIVE | CLEARED
    confidence: float
    budget_consumed_ratio: float
    onset_ms: int | None
    decided_at_ms: int
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyEvent:
    """A release freeze, unfreeze or recorded override."""

    event_id: str
    service: str
    slo: str | None
    action: str  # freeze | unfreeze | override
    reason: str
    actor: str
    timestamp: int
    budget_remaining_ratio: float | None
    expires_at_ms: int | None


Item = BurnRateAlert | DeployVerdict | PolicyEvent


def _fields(cls: type, record: dict[str, Any]) -> dict[str, Any]:
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    return {k: v for k, v in record.items() if k in names}


def typed(schema: str, record: dict[str, Any]) -> Item | None:
    """The typed form of a decoded record, or None for another type."""
    if schema == "BurnRateAlert":
        return BurnRateAlert(**_fields(BurnRateAlert, record))
    if schema == "DeployImpact":
        evidence = json.loads(record.get("evidence_json") or "{}")
        return DeployVerdict(**_fields(DeployVerdict, record), evidence=evidence)
    if schema == "PolicyEvent":
        return PolicyEvent(**_fields(PolicyEvent, record))
    return None


class Subscriber:
    def __init__(
        self,
        bootstrap_servers: str = "127.0.0.1:9092",
        *,
        group: str,
        namespace: str = "",
        streams: Sequence[str] = (ALERTS, VERDICTS, POLICY),
        from_beginning: bool = False,
        poll_timeout_ms: int = 500,
        **kafka_config: Any,
    ) -> None:
        """``group``: your consumer group (several processes in it share the records).
        ``streams``: any of ``alerts``, ``verdicts``, ``policy``. ``from_beginning``: a new
        group starts at the oldest record instead of the next one. ``kafka_config`` goes
        to kafka-python's KafkaConsumer (SASL/TLS options, as for the producer)."""
        unknown = set(streams) - set(_TOPICS)
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}; choose from {sorted(_TOPICS)}")
        self.topics = [conventions.topic_name(namespace, _TOPICS[s]) for s in streams]
        self.codec = AvroCodec()
        self.poll_timeout_ms = poll_timeout_ms
        self.closed = self.stopping = False
        self._consumer = KafkaConsumer(
            *self.topics,
            bootstrap_servers=bootstrap_servers.split(","),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            client_id="slipstream-subscriber",
            **kafka_config,
        )

    def poll(self, timeout_ms: int | None = None) -> list[Item]:
        """The typed records that arrived, in partition order (may be empty); the previous
        poll's offsets are committed first."""
        if self.closed:
            return []
        self._consumer.commit()
        batches = self._consumer.poll(timeout_ms=timeout_ms or self.poll_timeout_ms)
        items: list[Item] = []
        for _, records in sorted(batches.items(), key=lambda kv: (kv[0].topic, kv[0].partition)):
            for rec in records:
                try:
                    decoded = self.codec.decode(rec.value)
                except CodecError:
                    continue
                item = typed(decoded.schema, decoded.record)
                if item is not None:
                    items.append(item)
        return items

    def __iter__(self) -> Iterator[Item]:
        while not (self.closed or self.stopping):
            yield from self.poll()

    def stop(self) -> None:
        """End the iteration after the current poll; safe from another thread (the Kafka
        consumer itself is not: close it from the thread that iterates, or after)."""
        self.stopping = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._consumer.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
