"""The faust worker consumes the source topics from the real broker; Prometheus scrapes it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer

from slipstream import conventions
from slipstream.settings import Settings
from slipstream.stack.process import free_port
from slipstream.streams.supervise import scrape, worker_process

from helpers import poll, prometheus_query, register_scrape_target

REQUESTS, DEPLOYS = 400, 25


def _produce(settings: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    ns = settings.namespace
    for i in range(REQUESTS):
        producer.send(conventions.topic_name(ns, "slo.requests"), key=b"checkout", value=b"r%d" % i)
    for i in range(DEPLOYS):
        producer.send(conventions.topic_name(ns, "slo.deploys"), key=b"checkout", value=b"d%d" % i)
    producer.flush(timeout=30)
    producer.close()


def test_worker_consumes_commits_and_is_scraped(
    settings: Settings, tmp_path: Path, infra: object
) -> None:
    metrics_addr = f"127.0.0.1:{free_port()}"
    settings = settings.replace(metrics_addr=metrics_addr)
    with worker_process(settings, tmp_path / "worker.log") as proc:
        # The worker creates its topics; produce once they exist.
        poll(lambda: scrape(metrics_addr), bool, timeout_s=60, what="worker metrics endpoint")
        _produce(settings)

        def counts() -> tuple[float, float]:
            samples = scrape(metrics_addr)
            name = "slipstream_input_messages_total"
            return (
                samples.get((name, (("topic", "slo.requests"),)), 0.0),
                samples.get((name, (("topic", "slo.deploys"),)), 0.0),
            )

        log = tmp_path / "worker.log"
        try:
            poll(counts, lambda c: c == (REQUESTS, DEPLOYS), timeout_s=90, what="all messages")
        except AssertionError:
            print(log.read_text())
            raise
        assert proc.poll() is None, log.read_text()

        targets = getattr(infra, "prometheus_targets_dir", None)
        if targets is not None:
            register_scrape_target(targets, settings.namespace, metrics_addr)
            query = f'slipstream_worker_info{{namespace="{settings.namespace}"}}'
            series = poll(
                lambda: prometheus_query(settings.prometheus_url, query),
                lambda r: len(r) == 1,
                timeout_s=60,
                what="Prometheus to scrape the worker",
            )
            assert series[0]["value"][1] == "1"  # type: ignore[index]
            (targets / f"{settings.namespace}.json").unlink()

    # After a clean stop the group's committed offsets cover every message.
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        group = conventions.consumer_group(settings.namespace)
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    by_topic: dict[str, int] = {}
    for tp, meta in offsets.items():
        by_topic[tp.topic] = by_topic.get(tp.topic, 0) + meta.offset
    ns = settings.namespace
    assert by_topic.get(conventions.topic_name(ns, "slo.requests")) == REQUESTS
    assert by_topic.get(conventions.topic_name(ns, "slo.deploys")) == DEPLOYS
    assert proc.returncode is not None


def test_worker_refuses_a_taken_metrics_port(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "slipstream.streams.cli", "worker",
             "--metrics-addr", f"127.0.0.1:{port}", "--namespace", settings.namespace,
             "--kafka-bootstrap", settings.kafka_bootstrap, "--stack-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr
    assert "SLIPSTREAM_METRICS_ADDR" in result.stderr


def test_an_unreachable_broker_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "slipstream.streams.cli", "worker", "--kafka-bootstrap", dead,
         "--namespace", settings.namespace, "--stack-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"slipstream: error: Kafka at {dead}" in result.stderr
    assert "Traceback" not in result.stderr
