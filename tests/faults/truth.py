"""Ground truth for the fault tests, recomputed from the source topics alone.

The worker's durable state is its changelog: the last value of every key, tombstones
deleting. The truth is what a fault-free worker would have written: the same pure
engine fed with every source message once, in partition order, with no Kafka client,
no faust and no restarts in between. Comparing the two tables bucket by bucket says how
many events a fault lost or counted twice; comparing the alert topic with the
engine's transitions says whether alerts survived it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from slipstream import conventions
from slipstream.schemas.codec import AvroCodec
from slipstream.slo.catalogue import Catalogue
from slipstream.slo.engine import PartitionEngine
from slipstream.slo.windows import COARSE_MS, RES_CODE
from slipstream.streams.ingest import Ingestor

from helpers import read_topic

# The reference engine closes a "micro-batch" every this many messages: batch boundaries
# do not change the state (the engine's contract), only how often it is written.
REFERENCE_BATCH = 500


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_records(bootstrap: str, topic: str, timeout_s: float = 120) -> list[Record]:
    """Every record of ``topic`` up to its end as of now, partition by partition."""
    return sorted(
        (Record(r.partition, r.offset, r.key, r.value)
         for r in read_topic(bootstrap, topic, timeout_s)),
        key=lambda r: (r.partition, r.offset),
    )  # fmt: skip


def changelog_table(bootstrap: str, group: str) -> dict[str, Any]:
    """The worker's table as a restore reads its changelog: last value per key, tombstones
    delete; but a bucket (or offset mark) keeps the value with the highest source offset,
    as the engine's restore does (a stale write of a paused worker can come last)."""
    topic = f"{group}-{conventions.STATE_TABLE}-changelog"
    table: dict[str, Any] = {}
    for record in read_records(bootstrap, topic):
        key = json.loads(record.key) if record.key is not None else None
        if not isinstance(key, str):
            continue
        if record.value is None:
            table.pop(key, None)
            continue
        value = json.loads(record.value)
        old = table.get(key)
        if old is not None and "|b|" in key and old[2] > value[2]:
            continue
        if old is not None and "|o|" in key and old > value:
            continue
        table[key] = value
    return table


@dataclass
class Reference:
    """What a fault-free worker would hold and have published."""

    table: dict[str, Any] = field(default_factory=dict)
    transitions: set[tuple[str, str]] = field(default_factory=set)  # (alert_id, state)
    requests: int = 0
    dead_letters: int = 0


def reference_run(
    catalogue: Catalogue,
    requests: Iterable[Record],
    deploys: Iterable[Record] = (),
    now_ms: int | None = None,
) -> Reference:
    """Feed the source records to one engine per partition, as the worker's agent does."""
    ref = Reference()
    ingestor = Ingestor()
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    engines: dict[int, PartitionEngine] = {}
    pending: dict[int, int] = defaultdict(int)
    topics = [(conventions.REQUESTS_TOPIC, r) for r in requests]
    topics += [(conventions.DEPLOYS_TOPIC, r) for r in deploys]
    # Deploys before the requests of the same partition: the worker's order across two
    # topics is not fixed, and the fault tests that use deploys send them first.
    topics.sort(key=lambda tr: (tr[1].partition, tr[0] != conventions.DEPLOYS_TOPIC))

    def close(engine: PartitionEngine) -> None:
        result = engine.end()
        for key in result.deletes:
            ref.table.pop(key, None)
        ref.table.update(json.loads(json.dumps(result.writes)))
        ref.transitions |= {(t.alert_id, t.state) for t, _ in result.transitions}

    for base, record in topics:
        result = ingestor.ingest(base, record.partition, record.value, now)
        ref.dead_letters += len(result.dead)
        ref.requests += len(result.requests)
        if not (result.requests or result.deploys):
            continue
        engine = engines.get(record.partition)
        if engine is None:
            engine = engines[record.partition] = PartitionEngine(record.partition, catalogue)
        engine.begin(record.offset)
        engine.absorb_many(result.requests)
        for deploy in result.deploys:
            engine.absorb_deploy(deploy)
        pending[record.partition] += 1
        if pending[record.partition] >= REFERENCE_BATCH:
            close(engine)
            pending[record.partition] = 0
    for engine in engines.values():
        close(engine)
    return ref


def published_transitions(bootstrap: str, namespace: str) -> list[tuple[str, str]]:
    """(alert_id, state) of every record on the alert topic, duplicates kept."""
    codec = AvroCodec()
    topic = conventions.topic_name(namespace, conventions.ALERTS_TOPIC)
    out = []
    for record in read_records(bootstrap, topic):
        alert = codec.decode(record.value or b"", {"BurnRateAlert"}).record
        out.append((str(alert["alert_id"]), str(alert["state"])))
    return out


@dataclass(frozen=True)
class Comparison:
    """How the worker's buckets differ from the truth, in events."""

    buckets: int  # buckets in the truth
    events: int  # events in the truth's coarsest buckets, once per SLO that counts them
    lost: int  # events the worker's buckets lack
    doubled: int  # events the worker's buckets hold more than once
    wrong_bad: int  # bad counts off, where totals agree
    missing_keys: list[str]
    extra_keys: list[str]
    lost_by_partition: dict[str, int] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.doubled or self.wrong_bad or self.missing_keys
                    or self.extra_keys)  # fmt: skip


def compare_buckets(truth: dict[str, Any], actual: dict[str, Any]) -> Comparison:
    """Compare the count buckets (``<p>|b|service|slo|res|index`` -> [bad, total, offset]);
    offsets may differ (a replay re-absorbs under a later batch), counts may not. Events
    are counted once per resolution, so lost and doubled are summed at the coarsest one."""
    want = {k: v for k, v in truth.items() if "|b|" in k}
    have = {k: v for k, v in actual.items() if "|b|" in k}
    coarsest = RES_CODE[COARSE_MS]
    lost = doubled = wrong_bad = events = 0
    by_partition: dict[str, int] = {}
    for key, value in want.items():
        got = have.get(key, [0, 0, -1])
        if key.split("|")[4] == coarsest:
            events += value[1]
            lost += max(0, value[1] - got[1])
            if got[1] < value[1]:
                part = key.split("|")[0]
                by_partition[part] = by_partition.get(part, 0) + value[1] - got[1]
            doubled += max(0, got[1] - value[1])
        if got[1] == value[1] and got[0] != value[0]:
            wrong_bad += 1
    return Comparison(
        buckets=len(want),
        events=events,
        lost=lost,
        doubled=doubled,
        wrong_bad=wrong_bad,
        missing_keys=sorted(want.keys() - have.keys())[:20],
        extra_keys=sorted(have.keys() - want.keys())[:20],
        lost_by_partition=by_partition,
    )
