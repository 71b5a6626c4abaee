"""Settings, read once at the edge into a frozen object.

Precedence: explicit overrides (CLI flags), then ``SLIPSTREAM_<NAME>``
environment variables, then defaults. Nothing reads the environment at import
time; callers pass the environment in.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ENV_PREFIX = "SLIPSTREAM_"

# A namespace becomes part of topic names, the consumer group and Redis keys,
# so it is restricted to characters that are safe in all three (no dots: they
# separate the namespace from the topic name).
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
GROUP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


def _default_state_dir() -> str:
    return str(Path.home() / ".local" / "state" / "slipstream" / "stack")


def _default_cache_dir() -> str:
    return str(Path.home() / ".cache" / "slipstream")


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_controller_port: int = 9095
    redis_url: str = "redis://127.0.0.1:6379/0"
    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9093"
    metrics_addr: str = "127.0.0.1:9464"
    namespace: str = ""
    # The worker's consumer group (also faust's app id, which names its changelog topic);
    # empty: derived from the namespace. Benchmarks run each repetition in a fresh group.
    consumer_group: str = ""
    # Static group membership (Kafka's group.instance.id): a worker restarted under the same
    # id takes its partitions back at once instead of after the session timeout of the
    # member it replaces. Unique per worker process; empty: dynamic membership.
    instance_id: str = ""
    catalogue: str = ""
    partitions: int = 4
    stack_dir: str = dataclasses.field(default_factory=_default_state_dir)
    cache_dir: str = dataclasses.field(default_factory=_default_cache_dir)
    kafka_version: str = "4.1.1"
    mvn: str = "mvn"

    def __post_init__(self) -> None:
        if self.namespace and not NAMESPACE_PATTERN.match(self.namespace):
            raise SettingsError(
                f"namespace {self.namespace!r} is invalid: use letters, digits, '_' or '-' "
                "(at most 48, starting with a letter or digit)"
            )
        if self.consumer_group and not GROUP_PATTERN.match(self.consumer_group):
            raise SettingsError(
                f"consumer_group {self.consumer_group!r} is invalid: use letters, digits, "
                "'.', '_' or '-' (at most 100, starting with a letter or digit)"
            )
        if self.instance_id and not GROUP_PATTERN.match(self.instance_id):
            raise SettingsError(
                f"instance_id {self.instance_id!r} is invalid: use letters, digits, "
                "'.', '_' or '-' (at most 100, starting with a letter or digit)"
            )
        if self.partitions < 1:
            raise SettingsError(f"partitions must be >= 1, got {self.partitions}")
        for name in ("kafka_bootstrap", "metrics_addr"):
            split_host_port(getattr(self, name), setting=name)
        for name in ("redis_url", "prometheus_url", "alertmanager_url"):
            url_host_port(getattr(self, name), setting=name)

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        # The first server of the bootstrap list is the one the local stack binds.
        return split_host_port(self.kafka_bootstrap.split(",")[0], setting="kafka_bootstrap")

    @property
    def redis_host_port(self) -> tuple[str, int]:
        return url_host_port(self.redis_url, setting="redis_url")

    @property
    def prometheus_host_port(self) -> tuple[str, int]:
        return url_host_port(self.prometheus_url, setting="prometheus_url")

    @property
    def alertmanager_host_port(self) -> tuple[str, int]:
        return url_host_port(self.alertmanager_url, setting="alertmanager_url")

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        return split_host_port(self.metrics_addr, setting="metrics_addr")

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def split_host_port(value: str, *, setting: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{setting}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def url_host_port(url: str, *, setting: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default_ports = {"redis": 6379, "rediss": 6379, "http": 80, "https": 443}
    if parts.scheme not in default_ports or not parts.hostname:
        raise SettingsError(f"{setting}: expected a redis:// or http:// URL, got {url!r}")
    try:
        port = parts.port or default_ports[parts.scheme]
    except ValueError as exc:
        raise SettingsError(f"{setting}: bad port in {url!r}") from exc
    return parts.hostname, port


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, raw: str) -> object:
    if name in ("partitions", "kafka_controller_port"):
        try:
            return int(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: expected an integer, got {raw!r}") from exc
    return raw


def load_settings(
    overrides: Mapping[str, object | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from overrides (flags), then the environment, then defaults.

    ``overrides`` entries whose value is None are ignored, so an argparse
    namespace can be passed through as it is.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name in _FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in _FIELDS:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = _coerce(name, value) if isinstance(value, str) else value
    return Settings(**values)  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load the same settings."""
    return {
        ENV_PREFIX + f.name.upper(): str(getattr(settings, f.name))
        for f in dataclasses.fields(Settings)
    }
