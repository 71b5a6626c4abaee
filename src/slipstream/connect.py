"""Kafka and Redis clients built from settings: the one place that knows their security
options (SASL/SCRAM over TLS for Kafka, an ACL user over TLS for Redis)."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis

from slipstream.settings import Settings, mask_url

if TYPE_CHECKING:  # the SDK imports this module and must not need faust
    from faust.types.auth import CredentialsT


class AccessError(RuntimeError):
    """Kafka or Redis refused the credentials or certificate of the settings: a
    configuration error to fix, not an outage to wait out."""


def tls_context(ca_file: str) -> ssl.SSLContext:
    """Verifies the server's certificate and host name against ``ca_file`` (the system's
    trust store when empty)."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise AccessError(f"kafka_ca_file: cannot load {ca_file!r}: {exc}") from exc


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's clients: servers and security."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap.split(",")}
    if settings.kafka_security_protocol == "PLAINTEXT":
        return options
    options["security_protocol"] = settings.kafka_security_protocol
    if settings.kafka_tls:
        options["ssl_context"] = tls_context(settings.kafka_ca_file)
    if settings.kafka_sasl:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_username
        options["sasl_plain_password"] = settings.kafka_password
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """faust's ``broker_credentials`` (it hands them on to aiokafka)."""
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    context = tls_context(settings.kafka_ca_file) if settings.kafka_tls else None
    if settings.kafka_sasl:
        return SASLCredentials(username=settings.kafka_username,
                               password=settings.kafka_password,
                               ssl_context=context,
                               mechanism=settings.kafka_sasl_mechanism)  # fmt: skip
    if protocol == "SSL" and context is not None:
        return SSLCredentials(context)
    return None


def redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A client for ``redis_url`` with the ACL user and password of the settings (a user
    and password in the URL itself win), verifying a rediss:// server against the CA."""
    extra: dict[str, Any] = {}
    parts = urlsplit(settings.redis_url)
    if settings.redis_username and not parts.username:
        extra["username"] = settings.redis_username
    if settings.redis_password and not parts.password:
        extra["password"] = settings.redis_password
    if parts.scheme == "rediss":
        extra["ssl_cert_reqs"] = "required"
        if settings.redis_ca_file:
            extra["ssl_ca_certs"] = settings.redis_ca_file
    return redis.Redis.from_url(settings.redis_url, **extra, **options)


# What kafka-python logs (and then only times out) for each access failure, and what to do.
_KAFKA_CAUSES = (
    ("SaslAuthenticationFailed", "authentication failed for user {user!r} ({mechanism}): "
     "check kafka_username and the password (SLIPSTREAM_KAFKA_PASSWORD or _FILE)"),
    ("UnsupportedSaslMechanism", "the broker does not offer {mechanism}: set "
     "kafka_sasl_mechanism to one it does"),
    ("CERTIFICATE_VERIFY_FAILED", "the broker's TLS certificate is not trusted: set "
     "kafka_ca_file to the CA that signed it"),
    ("WRONG_VERSION_NUMBER", "the broker's listener does not speak TLS: check "
     "kafka_security_protocol"),
)  # fmt: skip


class _ErrorRecorder(logging.Handler):
    def __init__(self, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 200:
            self.messages.append(record.getMessage())


# The broker answers a refused SASL login and closes the connection ~100 ms later; over
# TLS kafka-python sometimes handles the close before the answer ("socket disconnected",
# the answer's bytes "received by closed connection") and never logs the refusal. A
# connection lost right after a SaslAuthenticate request is then the refused login.
_SASL_SENT = "SaslAuthenticateRequest"
_LOST = "socket disconnected"
_SASL_LOST_CAUSE = ("authentication failed for user {user!r} ({mechanism}): the broker closed "
                    "the connection at the SASL login; check kafka_username and the password "
                    "(SLIPSTREAM_KAFKA_PASSWORD or _FILE)")  # fmt: skip


@contextmanager
def explained_kafka_access(settings: Settings) -> Iterator[None]:
    """Turn a Kafka client's failure to connect into an ``AccessError`` that says why, when
    the client's log shows a refused login or an untrusted certificate (kafka-python only
    says it could not bootstrap)."""
    recorder = _ErrorRecorder()
    logger = logging.getLogger("kafka")
    logger.addHandler(recorder)
    # The connection's requests, at debug level, kept here only: not passed on to the
    # application's handlers (they would print them), nor anywhere else.
    requests = _ErrorRecorder(logging.DEBUG)
    connection = logging.getLogger("kafka.net.connection")
    saved = connection.level, connection.propagate
    if settings.kafka_sasl:
        connection.addHandler(requests)
        connection.setLevel(logging.DEBUG)
        connection.propagate = False
    try:
        yield
    except Exception as exc:
        seen = "\n".join(recorder.messages + requests.messages)
        causes = list(_KAFKA_CAUSES)
        if _sasl_login_lost(requests.messages):
            causes.append((_SASL_SENT, _SASL_LOST_CAUSE))
        for marker, explanation in causes:
            if marker in seen:
                why = explanation.format(user=settings.kafka_username,
                                         mechanism=settings.kafka_sasl_mechanism)  # fmt: skip
                raise AccessError(f"Kafka at {settings.kafka_bootstrap}: {why}") from exc
        raise
    finally:
        logger.removeHandler(recorder)
        connection.removeHandler(requests)
        connection.setLevel(saved[0])
        connection.propagate = saved[1]


def _sasl_login_lost(messages: Sequence[str]) -> bool:
    """A connection was lost while a SaslAuthenticate request of it awaited its answer
    (see _SASL_SENT), in the connection's debug messages, in order."""
    pending: str | None = None
    for message in messages:
        sent = _REQUEST.search(message)
        if sent is not None:
            pending = sent.group(1) if sent.group(2) == _SASL_SENT else None
        elif pending is not None and f": Response {pending} (" in message:
            pending = None
        elif pending is not None and _LOST in message:
            return True
    return False


_REQUEST = re.compile(r" Request (\d+): (\w+)\(")


def check_redis_access(settings: Settings) -> None:
    """Raise ``AccessError`` when Redis refuses the settings' user or its keys; an
    unreachable Redis is an outage the worker rides out, so that passes."""
    client = redis_client(settings, socket_timeout=5, socket_connect_timeout=5)
    probe = "slipstream:access-check"
    try:
        client.ping()
        client.set(probe, "1", px=1000)
    except redis.AuthenticationError as exc:
        user = settings.redis_username or "default"
        raise AccessError(f"Redis at {mask_url(settings.redis_url)}: authentication failed for "
                          f"user {user!r}: {exc}") from exc  # fmt: skip
    except redis.exceptions.NoPermissionError as exc:
        raise AccessError(f"Redis at {mask_url(settings.redis_url)}: the user may not write "
                          f"slipstream:* keys: {exc}") from exc  # fmt: skip
    except redis.exceptions.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise AccessError(f"Redis at {mask_url(settings.redis_url)}: {exc}") from exc
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if "certificate verify failed" in str(exc):
            raise AccessError(f"Redis at {mask_url(settings.redis_url)}: its TLS certificate "
                              "is not trusted: set redis_ca_file") from exc  # fmt: skip
    finally:
        client.close()
