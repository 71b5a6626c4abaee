"""Real Redis and the real Prometheus HTTP API, reached through the session's infrastructure."""

from __future__ import annotations

import sys
from pathlib import Path

import redis
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from slipstream import conventions
from slipstream.settings import Settings
from slipstream.sinks.redis_sink import RedisStateSink
from slipstream.stack.process import free_port

from helpers import poll, prometheus_query, register_scrape_target

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from test_state_sink import firing_at, snapshot_at


def test_redis_budget_hash_round_trip_inside_the_namespace(settings: Settings) -> None:
    key = conventions.redis_budget_key(settings.namespace, "checkout", "availability")
    assert key == f"slipstream:{settings.namespace}:budget:checkout:availability"
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"objective": "99.9", "good": 998, "total": 1000})
            pipe.hset(key, mapping={"budget_remaining_ratio": "-1.0"})
            pipe.execute()
        assert client.hgetall(key) == {
            "objective": "99.9",
            "good": "998",
            "total": "1000",
            "budget_remaining_ratio": "-1.0",
        }
        # Nothing of ours lands outside the namespace's prefix.
        ours = set(client.scan_iter(match=conventions.redis_key(settings.namespace, "*")))
        assert ours == {key}
    finally:
        client.close()


def test_redis_keeps_the_newest_state_whatever_order_it_is_handed_over(
    settings: Settings,
) -> None:
    # A micro-batch's transition carries the state of its own, earlier, instant.
    sink = RedisStateSink.from_url(settings.redis_url, settings.namespace)
    sink.add_snapshot(snapshot_at(50_000, 99))
    sink.add_transition(firing_at(2_000), snapshot_at(2_000, 11))
    assert sink.flush()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        budget = client.hgetall(conventions.redis_budget_key(settings.namespace, "api",
                                                             "availability"))  # fmt: skip
        assert (budget["total"], budget["updated_at_ms"]) == ("99", "50000")
        alert = client.hgetall(conventions.redis_key(settings.namespace, "alert", "api",
                                                     "availability"))  # fmt: skip
        assert alert["event_time_ms"] == "2000"
    finally:
        client.close()


def test_prometheus_scrapes_a_series_the_test_exports(settings: Settings, infra: object) -> None:
    targets = getattr(infra, "prometheus_targets_dir", None)
    assert targets is not None, (
        "set SLIPSTREAM_PROMETHEUS_TARGETS_DIR to a file_sd folder your Prometheus reads"
    )
    registry = CollectorRegistry()
    gauge = Gauge("slipstream_test_probe", "A value a test exported.", ["namespace"],
                  registry=registry)  # fmt: skip
    gauge.labels(settings.namespace).set(42.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    target = register_scrape_target(targets, settings.namespace, f"127.0.0.1:{port}")
    try:
        query = f'slipstream_test_probe{{namespace="{settings.namespace}"}}'
        result = poll(
            lambda: prometheus_query(settings.prometheus_url, query),
            lambda r: len(r) == 1,
            timeout_s=60,
            what=f"Prometheus at {settings.prometheus_url} to scrape 127.0.0.1:{port}",
        )
        assert float(result[0]["value"][1]) == 42.5  # type: ignore[index]
    finally:
        target.unlink()
        server.shutdown()
        thread.join()
