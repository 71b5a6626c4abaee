"""Helpers for integration tests: polling with a bound, querying and feeding Prometheus."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def poll(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout_s: float, what: str) -> T:
    """Call ``fetch`` until ``done`` holds for its result; fail with the last value at the bound."""
    deadline = time.monotonic() + timeout_s
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}; last: {value!r}"
            )
        time.sleep(0.25)
        value = fetch()
    return value


def prometheus_query(url: str, query: str) -> list[dict[str, object]]:
    full = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(full, timeout=5) as resp:
            body = json.load(resp)
    except OSError:
        return []
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def register_scrape_target(targets_dir: Path, name: str, addr: str) -> Path:
    """Point the stack's Prometheus at ``addr`` through its file_sd folder."""
    path = targets_dir / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [addr], "labels": {"instance_name": name}}]))
    tmp.replace(path)  # Prometheus must never read a half-written file
    return path


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end, in partition order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic}")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Messages of ``topic`` the consumer group has not committed yet. A worker commits only
    what it has finished (state written, outputs sent), unlike its consumed-events metrics."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
        partitions = consumer.partitions_for_topic(topic) or set()
        end = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(
            offset - (committed[tp].offset if tp in committed else 0) for tp, offset in end.items()
        )
    finally:
        consumer.close()
        admin.close()


def one_tier_catalogue(path: Path, service: str, runbook: str | None = None) -> Path:
    """A catalogue of one availability SLO with only the fast page tier (1 h / 5 min): an
    incident opens within minutes of event time and resolves after five clean minutes
    (the slower tiers' short windows are 30 min to 6 h)."""
    import yaml

    slo: dict[str, Any] = {"name": "availability", "objective": 99.9, "period": "30d",
                           "sli": {"kind": "availability"},
                           "alerting": {"tiers": {"page-6h": False, "ticket-1d": False,
                                                  "ticket-3d": False}}}  # fmt: skip
    if runbook:
        slo["runbook_url"] = runbook
    path.write_text(yaml.safe_dump({"services": {service: {
        "labels": {"team": "storefront"}, "slos": [slo]}}}))  # fmt: skip
    return path


def incident_traffic(service: str, start_ms: int, minutes: int, error_every: int,
                     tag: str) -> list[dict[str, Any]]:  # fmt: skip
    """20 requests/s of event time; one in ``error_every`` fails (0: none)."""
    from slipstream.bench.load import request_record

    n = minutes * 60 * 20
    return [request_record(f"{tag}-{i}", service, start_ms + i * 50,
                           bool(error_every) and i % error_every == 0, 30.0)
            for i in range(n)]  # fmt: skip
