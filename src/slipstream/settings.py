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

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
# Never shown: settings dumps and logs print "***" for them (and for a URL's password).
SECRET_FIELDS = ("kafka_password", "redis_password")
MASK = "***"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


def _default_state_dir() -> str:
    return str(Path.home() / ".local" / "state" / "slipstream" / "stack")


def _default_cache_dir() -> str:
    return str(Path.home() / ".cache" / "slipstream")


@dataclass(frozen=True, repr=False)
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
    # The group session timeout (Kafka's session.timeout.ms): a worker silent this long
    # loses its partitions. A worker paused for half of it exits when it runs again
    # rather than write stale state (streams/stall_guard.py).
    session_timeout_s: float = 60.0
    # Local checkpoints of the worker's state (streams/checkpoints.py): a partition's at most
    # this often, while its state changes; a restart reads only the changelog after it.
    # 0: none (every restart reads the whole changelog).
    checkpoint_interval_s: float = 30.0
    catalogue: str = ""
    partitions: int = 4
    stack_dir: str = dataclasses.field(default_factory=_default_state_dir)
    cache_dir: str = dataclasses.field(default_factory=_default_cache_dir)
    kafka_version: str = "4.1.1"
    mvn: str = "mvn"
    # Kafka security (README "Security"): SASL_SSL with SCRAM-SHA-512 in production. The
    # password comes from SLIPSTREAM_KAFKA_PASSWORD or the file SLIPSTREAM_KAFKA_PASSWORD_FILE
    # names (a mounted secret); a CA file verifies the broker's certificate.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = ""
    kafka_password_file: str = ""
    kafka_ca_file: str = ""
    # Redis ACL user (its keys limited to slipstream:*) and TLS: a rediss:// URL.
    redis_username: str = ""
    redis_password: str = ""
    redis_password_file: str = ""
    redis_ca_file: str = ""
    # /metrics over HTTPS when both are set.
    metrics_tls_cert: str = ""
    metrics_tls_key: str = ""

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
        if not 6.0 <= self.session_timeout_s <= 1800.0:
            raise SettingsError(
                f"session_timeout_s must be within 6..1800 (the broker's default bounds), "
                f"got {self.session_timeout_s}"
            )
        if self.checkpoint_interval_s < 0:
            raise SettingsError(
                f"checkpoint_interval_s must be >= 0 (0: no checkpoints), "
                f"got {self.checkpoint_interval_s}"
            )
        if self.partitions < 1:
            raise SettingsError(f"partitions must be >= 1, got {self.partitions}")
        for name in ("kafka_bootstrap", "metrics_addr"):
            split_host_port(getattr(self, name), setting=name)
        for name in ("redis_url", "prometheus_url", "alertmanager_url"):
            url_host_port(getattr(self, name), setting=name)
        self._check_security()

    def _check_security(self) -> None:
        if self.kafka_security_protocol not in KAFKA_PROTOCOLS:
            raise SettingsError(
                f"kafka_security_protocol {self.kafka_security_protocol!r} is not one of "
                + ", ".join(KAFKA_PROTOCOLS)
            )
        if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise SettingsError(
                f"kafka_sasl_mechanism {self.kafka_sasl_mechanism!r} is not one of "
                + ", ".join(SASL_MECHANISMS)
            )
        for secret in SECRET_FIELDS:
            path = getattr(self, f"{secret}_file")
            if path and not getattr(self, secret):
                object.__setattr__(self, secret, read_secret_file(path, f"{secret}_file"))
        if self.kafka_sasl and not (self.kafka_username and self.kafka_password):
            raise SettingsError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs kafka_username "
                "and a password (SLIPSTREAM_KAFKA_PASSWORD or SLIPSTREAM_KAFKA_PASSWORD_FILE)"
            )
        if bool(self.metrics_tls_cert) != bool(self.metrics_tls_key):
            raise SettingsError("metrics_tls_cert and metrics_tls_key go together")

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self.shown().items())})"

    def shown(self) -> dict[str, object]:
        """Every setting, secrets masked: what may go to a log or a terminal."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = MASK
            elif isinstance(value, str) and "://" in value:
                value = mask_url(value)
            out[f.name] = value
        return out

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


def read_secret_file(path: str, setting: str) -> str:
    """A secret from a file (a mounted Kubernetes or Docker secret): its first line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {path!r} ({exc.strerror})") from exc
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise SettingsError(f"{setting}: {path!r} is empty")
    return lines[0]


def mask_url(url: str) -> str:
    """The URL with its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


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
    if name in ("session_timeout_s", "checkpoint_interval_s"):
        try:
            return float(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: expected a number of seconds, got {raw!r}") from exc
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
    env = {
        ENV_PREFIX + f.name.upper(): str(getattr(settings, f.name))
        for f in dataclasses.fields(Settings)
    }
    for secret in SECRET_FIELDS:
        if getattr(settings, f"{secret}_file"):
            # The child reads the file itself: the secret stays out of its environment.
            env[ENV_PREFIX + secret.upper()] = ""
    return env
