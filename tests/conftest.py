"""Shared fixtures: the real infrastructure once per session, a fresh namespace per test.

Where the services come from, in order:
1. ``SLIPSTREAM_KAFKA_BOOTSTRAP`` / ``SLIPSTREAM_REDIS_URL`` / ``SLIPSTREAM_PROMETHEUS_URL``;
2. testcontainers, when a Docker engine answers;
3. the project's own local stack (``slipstream stack up``), started if needed and
   stopped afterwards only if this session started it.

Under ``CI=true`` a service that cannot be had fails the run; elsewhere the
tests that need it are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from slipstream import conventions
from slipstream.settings import Settings, load_settings
from slipstream.stack.manager import StackManager
from slipstream.streams.topics import delete_namespace_topics

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    redis_url: str
    prometheus_url: str
    # Where a JSON file registers a scrape target with that Prometheus (file_sd), if known.
    prometheus_targets_dir: Path | None
    source: str


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def _from_testcontainers(tmp: Path) -> Iterator[Infra]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    from slipstream.stack.process import free_port
    from slipstream.stack.servers import prometheus_config, rules_file

    targets = tmp / "targets"
    targets.mkdir(parents=True)
    prom_port = free_port()
    config = prometheus_config(load_settings(environ={}), targets)
    # The container sees only tmp: the rules file goes there too.
    shutil.copy(rules_file(), tmp / rules_file().name)
    config["rule_files"] = [str(tmp / rules_file().name)]
    (tmp / "prometheus.yml").write_text(__import__("json").dumps(config))
    # Host networking lets the container scrape exporters the tests serve on 127.0.0.1.
    prometheus = (
        DockerContainer("prom/prometheus:v2.53.0")
        .with_kwargs(network_mode="host")
        .with_volume_mapping(str(tmp), str(tmp), "rw")
        .with_command(
            f"--config.file={tmp}/prometheus.yml --web.listen-address=127.0.0.1:{prom_port}"
        )
    )
    with (
        KafkaContainer("confluentinc/cp-kafka:8.0.0").with_kraft() as kafka,
        RedisContainer("redis:7") as rds,
        prometheus,
    ):
        host, port = rds.get_container_host_ip(), rds.get_exposed_port(6379)
        yield Infra(
            kafka.get_bootstrap_server(),
            f"redis://{host}:{port}/0",
            f"http://127.0.0.1:{prom_port}",
            targets,
            "testcontainers",
        )


def _env_infra(local: Infra | None) -> Infra:
    env = os.environ
    targets = env.get("SLIPSTREAM_PROMETHEUS_TARGETS_DIR")
    return Infra(
        env.get("SLIPSTREAM_KAFKA_BOOTSTRAP") or (local.kafka_bootstrap if local else ""),
        env.get("SLIPSTREAM_REDIS_URL") or (local.redis_url if local else ""),
        env.get("SLIPSTREAM_PROMETHEUS_URL") or (local.prometheus_url if local else ""),
        Path(targets) if targets else (local.prometheus_targets_dir if local else None),
        "environment" if local is None else f"environment + {local.source}",
    )


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    names = ("SLIPSTREAM_KAFKA_BOOTSTRAP", "SLIPSTREAM_REDIS_URL", "SLIPSTREAM_PROMETHEUS_URL")
    if all(os.environ.get(n) for n in names):
        yield _env_infra(None)
        return
    if _docker_engine_answers():
        with _from_testcontainers(tmp_path_factory.mktemp("containers")) as found:
            yield _env_infra(found)
        return
    manager = StackManager(load_settings())
    try:
        started = manager.up(report=lambda line: None)
    except Exception as exc:
        message = f"the local stack could not start: {exc}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    prometheus = manager.component("prometheus")
    local = Infra(
        manager.settings.kafka_bootstrap,
        manager.settings.redis_url,
        manager.settings.prometheus_url,
        Path(manager.run_dir / "prometheus" / "targets"),
        "local stack",
    )
    assert prometheus.is_ready()
    try:
        yield _env_infra(local)
    finally:
        for comp in reversed(manager.components):
            if comp.name in started:
                comp.process.stop()


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings(infra: Infra, namespace: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings pointing at the session's services, inside this test's own namespace."""
    s = load_settings(
        {
            "kafka_bootstrap": infra.kafka_bootstrap,
            "redis_url": infra.redis_url,
            "prometheus_url": infra.prometheus_url,
            "namespace": namespace,
            "stack_dir": str(tmp_path / "state"),
        },
        environ={},
    )
    yield s
    with contextlib.suppress(Exception):
        delete_namespace_topics(s)
    client = redis.Redis.from_url(s.redis_url)
    try:
        keys = list(client.scan_iter(match=conventions.redis_key(namespace, "*"), count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
