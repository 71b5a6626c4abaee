"""Redis, Prometheus and Alertmanager from Debian packages, on loopback ports of our choosing."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from slipstream.settings import Settings
from slipstream.stack.process import ManagedProcess, port_accepts, require_binary
from slipstream.stack.tls import ensure_tls, tls_files

# Prometheus scrapes often on the local stack so the demo and tests see data quickly.
SCRAPE_INTERVAL = "2s"


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class RedisServer:
    name = "redis"

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self.settings = settings
        self.home = run_dir / "redis"
        self.conf = self.home / "redis.conf"
        host, port = settings.redis_host_port
        # A config file, when there is one, must come first.
        argv = ["redis-server", *([str(self.conf)] if self.secured else [])]
        argv += [
            "--bind", host, "--dir", str(self.home),
            "--daemonize", "no", "--protected-mode", "yes", "--save", "",
            "--appendonly", "yes", "--logfile", "",
        ]  # fmt: skip
        if self.tls:
            files = tls_files(self.home / "tls")
            argv += [
                "--port", "0", "--tls-port", str(port),
                "--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key),
                "--tls-ca-cert-file", str(files.ca), "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            argv += ["--port", str(port)]
        self.process = ManagedProcess(self.name, argv, run_dir)

    @property
    def tls(self) -> bool:
        return urlsplit(self.settings.redis_url).scheme == "rediss"

    @property
    def secured(self) -> bool:
        """An ACL user of the settings: the config file names it, the default user is off."""
        return bool(self.settings.redis_username)

    @property
    def address(self) -> str:
        host, port = self.settings.redis_host_port
        return f"redis://{host}:{port}"

    def ports(self) -> list[int]:
        return [self.settings.redis_host_port[1]]

    def prepare(self) -> None:
        require_binary("redis-server", "redis-server")
        self.home.mkdir(parents=True, exist_ok=True)
        if self.tls:
            ensure_tls(self.home / "tls")
        if self.secured:
            self.conf.touch(mode=0o600)
            self.conf.write_text(acl_config(self.settings))

    def is_ready(self) -> bool:
        import redis

        from slipstream.connect import redis_client

        host, port = self.settings.redis_host_port
        if not port_accepts(host, port):
            return False
        try:
            client = redis_client(self.settings, socket_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False


def acl_config(settings: Settings) -> str:
    """Redis users: no default user; the settings' user may touch only ``slipstream:*`` keys
    and channels, and no admin command (INFO aside: the sink reads the server's run_id
    from it to notice a restart). The password is stored as its SHA-256 only."""
    digest = hashlib.sha256(settings.redis_password.encode()).hexdigest()
    return (
        "user default off\n"
        f"user {settings.redis_username} on #{digest} ~slipstream:* &slipstream:* "
        "+@all -@dangerous +info\n"
    )


# Each SLO lives in exactly one worker at a time (the owner of its partition), but moves
# when partitions do: the per-SLO series get one fixed instance label, so a move between
# workers continues the same series instead of starting another (one series per SLO).
ONE_SERIES_PER_SLO = [
    {
        "source_labels": ["__name__"],
        "regex": "slo:.+|sloth_slo_info|slipstream_slo_.+|slipstream_deploy_.+",
        "target_label": "instance",
        "replacement": "slipstream",
    }
]


def prometheus_config(settings: Settings, targets_dir: Path) -> dict[str, object]:
    am_host, am_port = settings.alertmanager_host_port
    m_host, m_port = settings.metrics_host_port
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"{am_host}:{am_port}"]}]}]
        },
        "rule_files": [str(rules_file())],
        "scrape_configs": [
            {
                "job_name": "slipstream",
                "static_configs": [{"targets": [f"{m_host}:{m_port}"]}],
                "metric_relabel_configs": ONE_SERIES_PER_SLO,
            },
            {
                # Extra workers, test exporters: drop a JSON file in targets_dir.
                "job_name": "slipstream-targets",
                "file_sd_configs": [
                    {"files": [str(targets_dir / "*.json")], "refresh_interval": "5s"}
                ],
                "metric_relabel_configs": ONE_SERIES_PER_SLO,
            },
        ],
    }


def rules_file() -> Path:
    """The Prometheus rules shipped with slipstream (also deploy/prometheus/rules/)."""
    return Path(str(resources.files("slipstream.rules") / "slipstream.rules.yml"))


class PrometheusServer:
    name = "prometheus"

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self.settings = settings
        self.home = run_dir / "prometheus"
        self.config = self.home / "prometheus.yml"
        self.targets_dir = self.home / "targets"
        host, port = settings.prometheus_host_port
        argv = [
            "prometheus", f"--config.file={self.config}",
            f"--storage.tsdb.path={self.home / 'data'}", "--storage.tsdb.retention.time=15d",
            f"--web.listen-address={host}:{port}", "--web.enable-lifecycle",
            "--web.enable-remote-write-receiver",
        ]  # fmt: skip
        self.process = ManagedProcess(self.name, argv, run_dir)

    @property
    def address(self) -> str:
        host, port = self.settings.prometheus_host_port
        return f"http://{host}:{port}"

    def ports(self) -> list[int]:
        return [self.settings.prometheus_host_port[1]]

    def prepare(self) -> None:
        require_binary("prometheus", "prometheus")
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        # JSON is valid YAML: no YAML writer needed for a generated file.
        self.config.write_text(
            json.dumps(prometheus_config(self.settings, self.targets_dir), indent=2)
        )

    def is_ready(self) -> bool:
        return http_ok(self.address + "/-/ready")


ALERTMANAGER_CONFIG = {
    "route": {
        "receiver": "default",
        "group_by": ["alertname", "service", "slo"],
        "group_wait": "5s",
        "group_interval": "30s",
        "repeat_interval": "4h",
    },
    # No notification channel on a developer machine: alerts are visible in the UI and API.
    "receivers": [{"name": "default"}],
}


class AlertmanagerServer:
    name = "alertmanager"

    def __init__(
        self, settings: Settings, run_dir: Path, config: dict[str, object] | None = None
    ) -> None:
        self.settings = settings
        self.config_data = config or ALERTMANAGER_CONFIG
        self.home = run_dir / "alertmanager"
        self.config = self.home / "alertmanager.yml"
        host, port = settings.alertmanager_host_port
        argv = [
            "prometheus-alertmanager", f"--config.file={self.config}",
            f"--storage.path={self.home / 'data'}", f"--web.listen-address={host}:{port}",
            # One instance, no gossip: nothing listens on the cluster port.
            "--cluster.listen-address=",
        ]  # fmt: skip
        self.process = ManagedProcess(self.name, argv, run_dir)

    @property
    def address(self) -> str:
        host, port = self.settings.alertmanager_host_port
        return f"http://{host}:{port}"

    def ports(self) -> list[int]:
        return [self.settings.alertmanager_host_port[1]]

    def prepare(self) -> None:
        require_binary("prometheus-alertmanager", "prometheus-alertmanager")
        self.home.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(self.config_data, indent=2))

    def is_ready(self) -> bool:
        return http_ok(self.address + "/-/ready")
