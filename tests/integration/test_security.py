"""The security options against real servers: a Kafka broker that accepts only
SASL/SCRAM-SHA-512 over TLS, a Redis that accepts only TLS and an ACL user limited to
``slipstream:*``, and /metrics over HTTPS. The whole pipeline runs against them; wrong
credentials or an untrusted certificate end the worker at once with the reason, and no
secret reaches its log."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from slipstream import conventions
from slipstream.bench.load import now_ms, preload, request_record, write_catalogue
from slipstream.connect import redis_client
from slipstream.settings import Settings, settings_env
from slipstream.stack.kafka import KafkaServer
from slipstream.stack.process import free_port
from slipstream.stack.servers import RedisServer
from slipstream.stack.tls import tls_files
from slipstream.streams.read_cli import read_records
from slipstream.streams.supervise import worker_process

pytestmark = pytest.mark.integration

KAFKA_PASSWORD = "kafka-" + uuid.uuid4().hex
REDIS_PASSWORD = "redis-" + uuid.uuid4().hex
WRONG = "wrong-" + uuid.uuid4().hex
EVENTS = 6_000
SERVICES = 3


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for a secured Kafka and Redis of this module's own (own ports, own CAs)."""
    home = tmp_path_factory.mktemp("secure-stack")
    password_file = home / "kafka-password"
    password_file.write_text(KAFKA_PASSWORD + "\n")
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_username="slipstream-worker", kafka_password_file=str(password_file),
        kafka_ca_file=str(tls_files(home / "kafka" / "tls").ca),
        redis_url=f"rediss://127.0.0.1:{free_port()}/0", redis_username="slipstream",
        redis_password=REDIS_PASSWORD, redis_ca_file=str(tls_files(home / "redis" / "tls").ca),
        metrics_tls_cert=str(tls_files(home / "kafka" / "tls").cert),
        metrics_tls_key=str(tls_files(home / "kafka" / "tls").key),
        namespace=f"sec{uuid.uuid4().hex[:8]}", stack_dir=str(home), partitions=2,
    )  # fmt: skip
    servers: list[KafkaServer | RedisServer] = [
        KafkaServer(settings, home),
        RedisServer(settings, home),
    ]
    for server in servers:
        server.prepare()
        server.process.start()
    try:
        for server in servers:
            _wait(server.is_ready, 120, f"the secured {server.name}")
        yield settings
    finally:
        for server in servers:
            server.process.stop()


def _scrape_https(settings: Settings) -> dict[str, float]:
    context = ssl.create_default_context(cafile=settings.kafka_ca_file)  # same CA as the cert
    url = f"https://{settings.metrics_addr}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def test_the_pipeline_runs_against_scram_tls_kafka_and_acl_tls_redis(
    secure: Settings, tmp_path: Path
) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    settings = secure.replace(catalogue=str(catalogue), metrics_addr=f"127.0.0.1:{free_port()}")
    start = now_ms() - EVENTS * 100  # ten minutes of traffic, one event every 100 ms
    records = (
        request_record(f"sec-{i}", f"svc{i % SERVICES:03d}", start + i * 100, i % 50 == 0, 40.0)
        for i in range(EVENTS)
    )
    load = preload(settings, "batched", EVENTS, SERVICES, 3, records=records)  # over SASL_SSL
    log = tmp_path / "worker.log"
    with worker_process(settings, log) as proc:

        def counted() -> bool:
            assert proc.poll() is None, log.read_text()
            return _scrape_https(settings).get("slipstream_input_events_total") == EVENTS

        _wait(counted, 120, "the worker to count every event over SASL_SSL")
        client = redis_client(settings, decode_responses=True)
        prefix = conventions.redis_key(settings.namespace, "budget") + ":"

        def budgets() -> list[str]:
            return sorted(client.scan_iter(match=prefix + "*", count=1000))

        _wait(lambda: len(budgets()) == 2 * SERVICES, 30, f"budget state in Redis: {budgets()}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("elsewhere:key", "x")  # the user is held to slipstream:*
        # /metrics speaks only TLS.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://{settings.metrics_addr}/metrics", timeout=2)
    budget_records = read_records(settings, conventions.BUDGET_TOPIC, "BudgetState")
    assert {(r["service"], r["slo"]) for r in budget_records} == {
        tuple(key[len(prefix) :].split(":")) for key in budgets()
    }
    assert load.events == EVENTS
    text = log.read_text()
    assert KAFKA_PASSWORD not in text and REDIS_PASSWORD not in text
    assert "https://" in text  # the worker says where its metrics are


def _run_worker(settings: Settings, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "slipstream.streams.cli", "worker"],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kafka_password_file": "", "kafka_password": WRONG},
         "authentication failed for user 'slipstream-worker' (SCRAM-SHA-512)"),
        ({"kafka_username": "nobody"}, "authentication failed for user 'nobody'"),
        ({"kafka_ca_file": "REDIS_CA"}, "TLS certificate is not trusted"),
        ({"redis_password": WRONG}, "authentication failed for user 'slipstream'"),
        ({"redis_ca_file": "KAFKA_CA"}, "TLS certificate is not trusted: set redis_ca_file"),
    ],
)  # fmt: skip
def test_wrong_credentials_end_the_worker_with_the_reason(
    secure: Settings, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    cas = {"REDIS_CA": secure.redis_ca_file, "KAFKA_CA": secure.kafka_ca_file}
    change = {k: cas.get(v, v) for k, v in change.items()}
    settings = secure.replace(metrics_addr=f"127.0.0.1:{free_port()}", **change)
    result = _run_worker(settings, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("slipstream: error: ") and message in last, result.stderr[-3000:]
    for secret in (KAFKA_PASSWORD, REDIS_PASSWORD, WRONG):
        assert secret not in result.stdout + last
