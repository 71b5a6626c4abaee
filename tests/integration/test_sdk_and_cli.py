"""The producer SDK and the producing CLI verbs against the real broker."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slipstream import conventions
from slipstream.client import DeliveryError, SlipstreamProducer
from slipstream.client.trace import parse_line
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings, settings_env
from slipstream.slo.events import Deploy, Request, deploy_from_record, request_from_record
from slipstream.stack.process import free_port
from slipstream.streams.topics import ensure_topics

from helpers import read_topic

CODEC = AvroCodec()


def _cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "slipstream.streams.cli", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip


def _events_on_topics(
    settings: Settings,
) -> tuple[list[Request], list[Deploy], collections.Counter[str]]:
    ns = settings.namespace
    requests: list[Request] = []
    shapes: collections.Counter[str] = collections.Counter()
    for rec in read_topic(settings.kafka_bootstrap, conventions.topic_name(ns, "slo.requests")):
        decoded = CODEC.decode(rec.value)
        shapes[decoded.schema] += 1
        batch = decoded.record["events"] if decoded.schema == "RequestBatch" else [decoded.record]
        for event in batch:
            assert rec.key == event["service"].encode()  # keyed by service: co-partitioned
            requests.append(request_from_record(event))
    deploys = [
        deploy_from_record(CODEC.decode(rec.value).record)
        for rec in read_topic(settings.kafka_bootstrap, conventions.topic_name(ns, "slo.deploys"))
    ]
    return requests, deploys, shapes


def test_sdk_batches_by_service_and_flushes_on_close(settings: Settings) -> None:
    ensure_topics(settings)
    with SlipstreamProducer(
        settings.kafka_bootstrap, namespace=settings.namespace, max_batch_events=100,
        linger_ms=50, register_atexit=False,
    ) as sdk:  # fmt: skip
        for i in range(1234):
            sdk.record_request("checkout" if i % 3 else "payments", "GET /", 200 if i % 50 else 503,
                               12.5, timestamp_ms=1_795_700_000_000 + i, version="v1",
                               event_id=f"e{i}")  # fmt: skip
        receipt = sdk.announce_deploy("checkout", "v2", previous_version="v1", actor="test")
    assert sdk.stats.events_sent == 1234 and sdk.stats.events_failed == 0
    requests, deploys, shapes = _events_on_topics(settings)
    assert sorted(r.event_id for r in requests) == sorted(f"e{i}" for i in range(1234))
    assert set(shapes) == {"RequestBatch"} and shapes["RequestBatch"] < 40
    assert [d.deploy_id for d in deploys] == [receipt.deploy_id]
    assert deploys[0].previous_version == "v1"


def test_sdk_surfaces_delivery_failures_with_the_events(settings: Settings) -> None:
    # No topics in this namespace and the broker refuses to create them: nothing can land.
    sdk = SlipstreamProducer(settings.kafka_bootstrap, namespace=settings.namespace,
                             connect_timeout_s=3, delivery_timeout_s=3,
                             register_atexit=False)  # fmt: skip
    for i in range(10):
        sdk.record_request("checkout", "GET /", 200, 1.0, event_id=f"lost{i}")
    with pytest.raises(DeliveryError) as info:
        sdk.flush(timeout_s=20)
    assert sorted(e.event_id for e in info.value.events) == sorted(f"lost{i}" for i in range(10))
    assert sdk.stats.events_failed == 10
    sdk.close()


TRACE = (Path(__file__).parents[1] / "fixtures" / "trace_sample.jsonl").read_text()


def test_replay_sends_the_trace_with_its_event_times(settings: Settings, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(TRACE)
    result = _cli(settings, "replay", str(trace))
    assert result.returncode == 0, result.stderr
    assert "sent 3 requests and 1 deploys" in result.stdout
    requests, deploys, _ = _events_on_topics(settings)
    expected = [parse_line(line, n) for n, line in enumerate(TRACE.splitlines(), 1) if line]
    assert sorted(requests, key=lambda r: r.event_id) == sorted(
        (e for e in expected if isinstance(e, Request)), key=lambda r: r.event_id
    )
    assert deploys == [e for e in expected if isinstance(e, Deploy)]
    assert {r.timestamp_ms for r in requests} == {1795700000123, 1795730400500, 1795699000000}


def test_replay_stops_at_a_bad_line_and_names_it(settings: Settings, tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text(TRACE.splitlines()[0] + "\n" + '{"type": "request", "service": 5}\n')
    result = _cli(settings, "replay", str(trace))
    assert result.returncode == 2
    assert "line 2: service must be a string" in result.stderr
    skipped = _cli(settings, "replay", str(trace), "--skip-invalid")
    assert skipped.returncode == 0 and "skipped 1 invalid lines" in skipped.stdout


def test_simulate_out_then_replay_equals_simulate(settings: Settings, tmp_path: Path) -> None:
    args = ["--scenario", "bad-deploy", "--duration", "13m", "--start", "2026-11-26T20:00:00Z"]
    direct = settings
    replayed = settings.replace(namespace=settings.namespace + "r")
    try:
        assert _cli(direct, "simulate", *args, "--max").returncode == 0
        out = tmp_path / "trace.jsonl"
        written = _cli(replayed, "simulate", *args, "--out", str(out))
        assert written.returncode == 0, written.stderr
        result = _cli(replayed, "replay", str(out))
        assert result.returncode == 0, result.stderr
        a_req, a_dep, _ = _events_on_topics(direct)
        b_req, b_dep, _ = _events_on_topics(replayed)
    finally:
        from slipstream.streams.topics import delete_namespace_topics

        delete_namespace_topics(replayed)
    assert len(a_req) > 20_000 and len(a_dep) == 3  # checkout started + progress, payments config
    assert sorted(a_req, key=lambda r: r.event_id) == sorted(b_req, key=lambda r: r.event_id)
    assert sorted(a_dep, key=lambda d: (d.timestamp_ms, d.deploy_id)) == sorted(
        b_dep, key=lambda d: (d.timestamp_ms, d.deploy_id)
    )
    lines = out.read_text().splitlines()
    assert len(lines) == len(a_req) + len(a_dep)
    assert json.loads(lines[0])["timestamp"] >= 1795723200000


def test_deploy_is_acknowledged(settings: Settings) -> None:
    result = _cli(settings, "deploy", "--service", "checkout", "--version", "v43",
                  "--commit", "abc123", "--deploy-id", "d-7", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    receipt = json.loads(result.stdout)
    assert receipt["deploy_id"] == "d-7" and receipt["offset"] == 0
    _, deploys, _ = _events_on_topics(settings)
    assert [(d.deploy_id, d.commit, d.actor) for d in deploys] == [("d-7", "abc123", "ci")]


def test_deploy_against_a_stopped_broker_fails_clearly(settings: Settings) -> None:
    dead = settings.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    # The subprocess timeout is the bound: a hang fails the test.
    result = _cli(dead, "deploy", "--service", "checkout", "--version", "v43",
                  "--timeout", "5", timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "not announced: cannot reach Kafka at" in result.stderr
    assert "Traceback" not in result.stderr
