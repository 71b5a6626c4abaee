"""The SLO engine on the real broker: a two-day trace replayed at full speed.

The pipeline's outputs, read back from slo.alerts, Redis and /metrics (and
through the real Prometheus), equal a brute-force oracle fed with exactly the
messages the worker consumed; a second replay into fresh topics gives the
same transitions and state; replaying consumed offsets again changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import NoError
from kafka.structs import OffsetAndMetadata

from slipstream import conventions
from slipstream.catalogue_file import load_catalogue
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings, load_settings, settings_env
from slipstream.slo.events import request_from_record
from slipstream.stack.process import free_port
from slipstream.streams.read_cli import read_alerts, read_status
from slipstream.streams.supervise import scrape, worker_process
from slipstream.streams.topics import delete_namespace_topics

from helpers import group_lag, poll, prometheus_query, read_topic, register_scrape_target

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from slo_oracle import oracle, oracle_budget

CATALOGUE = """
services:
  api:
    slos:
      - {name: availability, objective: 99.5, period: 7d, sli: {kind: availability},
         alerting: {min_events: 50}}
      - {name: latency, objective: 99, period: 7d, sli: {kind: latency, threshold_ms: 200}}
  db:
    slos:
      - {name: availability, objective: 99.9, period: 30d, sli: {kind: availability}}
"""
SCENARIO = """
name: two-days
seed: 3
duration: 2d
services:
  api: {rate_per_s: 0.5, error_ratio: 0.001, latency_ms: {median: 40, p99: 180}, version: v1}
  db: {rate_per_s: 0.2, error_ratio: 0.0005, latency_ms: {median: 5, p99: 30}, version: v7}
deploys:
  - {service: api, version: v2, at: 26h, effect: {error_ratio: 0.12, latency_factor: 3},
     rollback_after: 90m}
"""
CODEC = AvroCodec()


@dataclass
class Run:
    settings: Settings
    events: int
    samples: dict[Any, float]
    prometheus: dict[str, list[dict[str, Any]]]


def _cli(settings: Settings, *args: str) -> str:
    env = {**os.environ, **settings_env(settings)}
    cmd = [sys.executable, "-m", "slipstream.streams.cli", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _settled(settings: Settings, events: int, log: Path) -> None:
    def processed() -> float:
        s = scrape(settings.metrics_addr)
        return s.get(("slipstream_input_events_total", (("topic", "slo.requests"),)), 0.0)

    try:
        poll(processed, lambda v: v == events, timeout_s=240, what="the trace to be consumed")
        # Consumed is not finished: the last batch's state and outputs come after.
        group, topic = (
            conventions.consumer_group(settings.namespace),
            conventions.topic_name(settings.namespace, "slo.requests"),
        )
        poll(
            lambda: group_lag(settings.kafka_bootstrap, group, topic),
            lambda lag: lag == 0,
            timeout_s=120,
            what="the worker to commit the whole trace",
        )
        # Then until Redis holds the final state: two reads a flush interval apart agree.
        last: list[list[dict[str, Any]]] = [[]]

        def stable() -> bool:
            now = read_status(settings)
            same = len(now) == 3 and now == last[0]
            last[0] = now
            time.sleep(1.5)
            return same

        poll(stable, bool, timeout_s=120, what="the state in Redis to settle")
    except AssertionError:
        print(log.read_text()[-4000:])
        raise


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    tmp = tmp_path_factory.mktemp("engine")
    (tmp / "catalogue.yaml").write_text(CATALOGUE)
    (tmp / "scenario.yaml").write_text(SCENARIO)
    start = (int(time.time()) - 2 * 86_400 - 3600) * 1000
    out = _cli(load_settings(environ={}), "simulate", "--scenario", str(tmp / "scenario.yaml"),
               "--out", str(tmp / "trace.jsonl"), "--start", str(start))  # fmt: skip
    events = sum(1 for line in (tmp / "trace.jsonl").open() if '"request"' in line)
    assert "wrote" in out
    return tmp / "catalogue.yaml", tmp / "trace.jsonl", events


def _run(infra: Any, trace: tuple[Path, Path, int], tmp: Path, name: str) -> Iterator[Run]:
    catalogue, trace_file, events = trace
    settings = load_settings(
        {"kafka_bootstrap": infra.kafka_bootstrap, "redis_url": infra.redis_url,
         "prometheus_url": infra.prometheus_url, "namespace": f"eng{name}{os.getpid()}",
         "stack_dir": str(tmp / name), "catalogue": str(catalogue),
         "metrics_addr": f"127.0.0.1:{free_port()}"},
        environ={},
    )  # fmt: skip
    log = tmp / f"worker-{name}.log"
    try:
        with worker_process(settings, log):
            _cli(settings, "replay", str(trace_file), "--max")
            _settled(settings, events, log)
            samples = scrape(settings.metrics_addr)
            seen = _prometheus(infra, settings) if name == "a" else {}
        yield Run(settings, events, samples, seen)
    finally:
        delete_namespace_topics(settings)


PROM_QUERIES = {
    "remaining": 'slo:period_error_budget_remaining:ratio{sloth_id="api-availability"}',
    "info": 'sloth_slo_info{sloth_service="api"}',
    "db_1h": 'slo:sli_error:ratio_rate1h{sloth_id="db-availability"}',
}


def _prometheus(infra: Any, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """What the real Prometheus returns once it has scraped the worker."""
    targets = getattr(infra, "prometheus_targets_dir", None)
    assert targets is not None
    target = register_scrape_target(targets, settings.namespace, settings.metrics_addr)
    try:
        poll(
            lambda: prometheus_query(settings.prometheus_url, PROM_QUERIES["remaining"]),
            lambda r: len(r) == 1,
            timeout_s=60,
            what="Prometheus to scrape the worker",
        )
        return {k: prometheus_query(settings.prometheus_url, q) for k, q in PROM_QUERIES.items()}
    finally:
        target.unlink()


@pytest.fixture(scope="module")
def first(
    infra: Any, trace: tuple[Path, Path, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    yield from _run(infra, trace, tmp_path_factory.mktemp("first"), "a")


def _consumed_messages(settings: Settings) -> dict[int, list[list[Any]]]:
    """The requests topic as the worker saw it: per partition, messages in offset order."""
    topic = conventions.topic_name(settings.namespace, "slo.requests")
    by_partition: dict[int, list[tuple[int, list[Any]]]] = defaultdict(list)
    for rec in read_topic(settings.kafka_bootstrap, topic):
        decoded = CODEC.decode(rec.value)
        records = decoded.record["events"] if decoded.schema == "RequestBatch" else [decoded.record]
        by_partition[rec.partition].append((rec.offset, [request_from_record(r) for r in records]))
    return {p: [m for _, m in sorted(ms, key=lambda x: x[0])] for p, ms in by_partition.items()}


def _alert_rows(settings: Settings) -> list[tuple[Any, ...]]:
    return sorted(
        (a["event_time_ms"], a["service"], a["slo"], a["state"], a["severity"], a["alert_id"],
         a["long_window_s"], round(a["burn_rate_long"], 9), round(a["burn_rate_short"], 9))
        for a in read_alerts(settings)
    )  # fmt: skip


def test_outputs_match_the_oracle(first: Run) -> None:
    settings = first.settings
    catalogue = load_catalogue(settings.catalogue)
    expected, finals = [], {}
    for messages in _consumed_messages(settings).values():
        transitions, state = oracle(catalogue.all_slos(), messages)
        expected += transitions
        finals.update({k: o for k, o in state.items() if o.clock is not None})
    want = sorted(
        (t.event_time_ms, t.service, t.slo, t.state, t.severity, t.alert_id,
         t.tier.long_window_ms // 1000, round(t.burn_rate_long, 9), round(t.burn_rate_short, 9))
        for t in expected
    )  # fmt: skip
    got = _alert_rows(settings)
    assert got == want
    assert [r[3] for r in got if r[1:3] == ("api", "availability")][:1] == ["firing"]
    assert any(r[3] == "resolved" for r in got)

    status = {(r["service"], r["slo"]): r for r in read_status(settings)}
    assert set(status) == set(finals)
    for key, o in finals.items():
        good, total, remaining = oracle_budget(o)
        row = status[key]
        assert (row["good"], row["total"]) == (good, total), key
        assert row["budget_remaining_ratio"] == pytest.approx(remaining, abs=1e-12)

    # /metrics, and the real Prometheus scraping it, carry the same numbers under Sloth's names.
    for (service, slo), row in status.items():
        value = next(v for (n, labels), v in first.samples.items()
                     if n == "slo:period_error_budget_remaining:ratio"
                     and ("sloth_id", f"{service}-{slo}") in labels)  # fmt: skip
        assert value == pytest.approx(row["budget_remaining_ratio"], abs=1e-9)
    prom = first.prometheus
    assert float(prom["remaining"][0]["value"][1]) == pytest.approx(
        status[("api", "availability")]["budget_remaining_ratio"], abs=1e-9
    )
    assert {r["metric"]["sloth_slo"] for r in prom["info"]} == {"availability", "latency"}
    assert [r["metric"]["sloth_window"] for r in prom["db_1h"]] == ["1h"]


def test_a_second_replay_gives_the_same_transitions_and_state(
    first: Run, infra: Any, trace: tuple[Path, Path, int], tmp_path: Path
) -> None:
    for second in _run(infra, trace, tmp_path, "b"):
        assert _alert_rows(second.settings) == _alert_rows(first.settings)
        assert read_status(second.settings) == read_status(first.settings)


def test_replaying_consumed_offsets_changes_nothing(first: Run, tmp_path: Path) -> None:
    settings = first.settings
    before_status, before_alerts = read_status(settings), _alert_rows(settings)
    group = conventions.consumer_group(settings.namespace)
    # The first run's worker has stopped; rewind its group to the start and run it again.
    topic = conventions.topic_name(settings.namespace, "slo.requests")
    log = tmp_path / "worker-restart.log"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = admin.describe_topics([topic])[0]["partitions"]
        reset = {
            TopicPartition(topic, p["partition_index"]): OffsetAndMetadata(0, "", -1)
            for p in partitions
        }
        errors = admin.alter_group_offsets(group, reset)
        assert all(e is NoError for e in errors.values()), errors
    finally:
        admin.close()
    with worker_process(settings, log):
        _settled(settings, first.events, log)
        # Restored from the changelog: /metrics shows the state again, unchanged.
        samples = scrape(settings.metrics_addr)
        remaining = [v for (n, _), v in samples.items()
                     if n == "slipstream_slo_error_budget_remaining_ratio"]  # fmt: skip
        assert len(remaining) == 3
        skipped = scrape(settings.metrics_addr).get(
            ("slipstream_replayed_events_skipped_total", ())
        )
        assert skipped and skipped >= first.events * 0.9, log.read_text()[-3000:]
        assert read_status(settings) == before_status
        assert _alert_rows(settings) == before_alerts
