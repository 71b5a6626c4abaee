"""The worker's own changelog read (``changelog_read``): every record of the assigned
partitions up to their end, in order, keys and values decoded, tombstones as None."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import TP
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from slipstream.settings import Settings
from slipstream.streams import changelog_read


class Recorder:
    def __init__(self) -> None:
        self.entries: dict[int, list[tuple[Any, Any]]] = {}

    def load_entries(self, partition: int, keys: Sequence[Any], values: Sequence[Any]) -> None:
        self.entries.setdefault(partition, []).extend(zip(keys, values, strict=True))


def _write(settings: Settings, topic: str, records: list[tuple[int, Any, Any]]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 3, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        for partition, key, value in records:
            raw = None if value is None else json.dumps(value).encode()
            producer.send(topic, key=json.dumps(key).encode(), value=raw, partition=partition)
        producer.flush()
    finally:
        producer.close()


def test_reads_every_partition_to_its_end_in_order(settings: Settings) -> None:
    topic = f"{settings.namespace}.state-changelog"
    records: list[tuple[int, Any, Any]] = [
        (p, f"{p}|b|svc|slo|m|{i}", [i, 2 * i, i + 7]) for p in (0, 1) for i in range(3000)
    ]
    records += [(0, "0|b|svc|slo|m|5", None), (1, "1|p", {"watermark_ms": 12, "x": "a,b"})]
    _write(settings, topic, records)
    app = faust.App("changelog-read-test", broker=f"kafka://{settings.kafka_bootstrap}")
    tps = {TP(topic, p) for p in (0, 1, 2)}
    for _ in range(3):  # each read starts from the beginning (aiokafka's reset race, once)
        sink = Recorder()
        ends = asyncio.run(changelog_read.read_partitions(app, tps, sink))
        assert ends == {TP(topic, 0): 3001, TP(topic, 1): 3001, TP(topic, 2): 0}
        for p in (0, 1):
            assert sink.entries[p] == [(k, v) for q, k, v in records if q == p]
        assert 2 not in sink.entries


def test_a_read_resumes_after_a_checkpoint_and_refuses_an_offset_beyond_the_end(
    settings: Settings,
) -> None:
    """From a checkpoint's offset + 1: only what follows. An offset the changelog does not
    reach (a topic recreated since the checkpoint) is refused: that partition is read
    from its start."""
    topic = f"{settings.namespace}.state-changelog"
    records: list[tuple[int, Any, Any]] = [
        (p, f"{p}|b|svc|slo|m|{i}", [i, 1, i]) for p in (0, 1) for i in range(500)
    ]
    _write(settings, topic, records)
    app = faust.App("changelog-resume-test", broker=f"kafka://{settings.kafka_bootstrap}")
    tps = {TP(topic, p) for p in (0, 1, 2)}
    refused: list[TP] = []
    sink = Recorder()
    resume = {TP(topic, 0): 400, TP(topic, 1): 501, TP(topic, 2): 0}
    ends = asyncio.run(changelog_read.read_partitions(app, tps, sink, resume, refused.append))
    assert ends == {TP(topic, 0): 500, TP(topic, 1): 500, TP(topic, 2): 0}
    assert refused == [TP(topic, 1)]
    assert sink.entries[0] == [(k, v) for q, k, v in records if q == 0][400:]
    assert sink.entries[1] == [(k, v) for q, k, v in records if q == 1]
    assert 2 not in sink.entries
