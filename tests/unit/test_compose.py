"""docker-compose.yml cannot be run here (no Docker engine), so check what can be checked."""

from __future__ import annotations

from pathlib import Path

import yaml

from slipstream.settings import load_settings
from slipstream.stack.servers import ALERTMANAGER_CONFIG

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, object]] = COMPOSE["services"]


def _published(service: str) -> list[tuple[str, int, int]]:
    out = []
    for spec in SERVICES[service].get("ports", []):  # type: ignore[attr-defined]
        host_ip, host_port, container_port = str(spec).split(":")
        out.append((host_ip, int(host_port), int(container_port)))
    return out


def test_every_mounted_file_exists() -> None:
    mounts = [
        str(v).split(":")[0]
        for svc in SERVICES.values()
        for v in svc.get("volumes", [])  # type: ignore[attr-defined]
    ]
    assert mounts, "expected configuration mounts"
    for host_path in mounts:
        assert host_path.startswith("./"), f"{host_path}: mounts must be repository files"
        assert (ROOT / host_path).exists(), f"{host_path} is mounted but missing"


def test_built_services_have_their_dockerfile() -> None:
    for name, svc in SERVICES.items():
        if "build" in svc:
            assert (ROOT / str(svc["build"]) / "Dockerfile").is_file(), name


def test_published_ports_agree_with_the_default_settings() -> None:
    s = load_settings(environ={})
    expected = {
        "kafka": s.kafka_host_port[1],
        "redis": s.redis_host_port[1],
        "prometheus": s.prometheus_host_port[1],
        "alertmanager": s.alertmanager_host_port[1],
        "worker": s.metrics_host_port[1],
    }
    for service, port in expected.items():
        published = _published(service)
        assert ("127.0.0.1", port, port) in published, f"{service}: {published} != {port}"
    assert all(ip == "127.0.0.1" for svc in SERVICES for ip, _, _ in _published(svc))


def test_prometheus_scrapes_the_worker_at_its_port() -> None:
    cfg = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    port = load_settings(environ={}).metrics_host_port[1]
    assert f"worker:{port}" in targets
    worker_env = SERVICES["worker"]["environment"]
    assert worker_env["SLIPSTREAM_METRICS_ADDR"].endswith(f":{port}")  # type: ignore[index]


def test_alertmanager_config_matches_the_local_stack() -> None:
    cfg = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    assert cfg == ALERTMANAGER_CONFIG


def test_grafana_datasource_points_at_compose_prometheus() -> None:
    ds = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_every_slipstream_container_runs_a_real_verb_against_the_compose_servers() -> None:
    from slipstream.streams.cli import build_parser

    built = {name: svc for name, svc in SERVICES.items() if "build" in svc}
    assert {"worker", "alertmanager-forwarder", "demo"} <= set(built)
    for name, svc in built.items():
        command = list(svc["command"])  # type: ignore[call-overload]
        assert command[0] == "slipstream", name
        build_parser().parse_args(command[1:])  # exits on an unknown verb or flag
        env = svc["environment"]
        assert env["SLIPSTREAM_KAFKA_BOOTSTRAP"] == "kafka:19092", name  # type: ignore[index]
        assert env["SLIPSTREAM_REDIS_URL"] == "redis://redis:6379/0", name  # type: ignore[index]


def test_the_demo_feeds_the_compose_worker_and_reads_its_metrics() -> None:
    demo = SERVICES["demo"]
    assert "--worker-running" in demo["command"] and "--no-stack" in demo["command"]  # type: ignore[operator]
    port = SERVICES["worker"]["environment"]["SLIPSTREAM_METRICS_ADDR"].rsplit(":", 1)[1]  # type: ignore[index]
    assert demo["environment"]["SLIPSTREAM_METRICS_ADDR"] == f"worker:{port}"  # type: ignore[index]
    assert "worker" in demo["depends_on"]  # type: ignore[operator]
