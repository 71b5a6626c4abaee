"""The producer SDK services import: record requests, announce deploys. Never imports faust.

``record_request`` is cheap and never blocks on the network: events are
buffered per service and sent as one ``RequestBatch`` message when the
buffer holds ``max_batch_events`` or its oldest event is ``linger_ms`` old.
Delivery failures are never silent: they are kept, counted and raised by the
next ``record_request``, ``flush`` or ``close`` as a ``DeliveryError`` that
carries the events that were not delivered.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from slipstream import __version__, conventions
from slipstream.connect import kafka_options
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings
from slipstream.slo.events import (
    Deploy,
    Request,
    deploy_from_record,
    deploy_to_record,
    request_from_record,
    request_to_record,
)

SDK_NAME = f"slipstream-python/{__version__}"


class DeliveryError(RuntimeError):
    """Events the broker did not acknowledge; ``events`` holds them for the caller to keep."""

    def __init__(self, message: str, events: list[Request] | None = None) -> None:
        super().__init__(message)
        self.events = events or []


class BufferFullError(RuntimeError):
    """More events are waiting than ``max_buffered_events``: the broker is not keeping up."""


@dataclass(frozen=True)
class DeployReceipt:
    deploy_id: str
    topic: str
    partition: int
    offset: int


@dataclass
class _Stats:
    events_recorded: int = 0
    events_sent: int = 0
    events_failed: int = 0
    batches_sent: int = 0


@dataclass
class _Buffer:
    events: list[Request] = field(default_factory=list)
    oldest_monotonic: float = 0.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SlipstreamProducer:
    def __init__(
        self,
        bootstrap_servers: str = "127.0.0.1:9092",
        *,
        namespace: str = "",
        max_batch_events: int = 500,
        linger_ms: int = 200,
        max_buffered_events: int = 100_000,
        connect_timeout_s: float = 15.0,
        delivery_timeout_s: float = 30.0,
        register_atexit: bool = True,
        **kafka_config: Any,
    ) -> None:
        """``kafka_config`` goes to kafka-python's KafkaProducer unchanged: that is where
        ``security_protocol``, ``sasl_mechanism``, ``sasl_plain_username``,
        ``ssl_cafile`` and the other SASL/TLS options go."""
        self.namespace = namespace
        self.max_batch_events = max_batch_events
        self.linger_s = linger_ms / 1000
        self.max_buffered_events = max_buffered_events
        self.delivery_timeout_s = delivery_timeout_s
        self.requests_topic = conventions.topic_name(namespace, conventions.REQUESTS_TOPIC)
        self.deploys_topic = conventions.topic_name(namespace, conventions.DEPLOYS_TOPIC)
        self.codec = AvroCodec()
        timeout_ms = int(connect_timeout_s * 1000)
        request_timeout_ms = min(timeout_ms, 30_000)
        linger = 5
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers.split(","),
            "acks": "all",
            "linger_ms": linger,
            "bootstrap_timeout_ms": timeout_ms,
            "max_block_ms": timeout_ms,
            "request_timeout_ms": request_timeout_ms,
            # Kafka requires delivery timeout > linger + request timeout.
            "delivery_timeout_ms": max(
                int(delivery_timeout_s * 1000), request_timeout_ms + linger + 1000
            ),
            "client_id": SDK_NAME,
            **kafka_config,
        }
        self._producer = KafkaProducer(**config)
        self._lock = threading.Lock()
        self._buffers: dict[str, _Buffer] = {}
        self._buffered = 0
        self._in_flight = 0
        self._failed: list[Request] = []
        self._first_error: BaseException | None = None
        self.stats = _Stats()
        self._closed = False
        self._stop = threading.Event()
        # Time-bounded batching: a daemon thread sends buffers that waited linger_ms.
        self._flusher = threading.Thread(
            target=self._linger_loop, name="slipstream-sdk", daemon=True
        )
        self._flusher.start()
        if register_atexit:
            atexit.register(self._close_at_exit)

    # -- requests ---------------------------------------------------------------------

    def record_request(
        self,
        service: str,
        operation: str,
        status_code: int,
        latency_ms: float,
        *,
        timestamp_ms: int | None = None,
        version: str | None = None,
        region: str | None = None,
        callee: str | None = None,
        event_id: str | None = None,
    ) -> None:
        """Buffer one request event. Raises ``InvalidEventError`` for an event the
        worker would refuse, and ``DeliveryError`` if earlier events failed."""
        record = {
            "event_id": event_id or uuid.uuid4().hex, "service": service,
            "operation": operation, "status_code": int(status_code),
            "latency_ms": float(latency_ms),
            "timestamp": now_ms() if timestamp_ms is None else int(timestamp_ms),
            "version": version, "region": region, "callee": callee,
        }  # fmt: skip
        self.record(request_from_record(record))

    def record(self, request: Request) -> None:
        """Buffer an already-built ``Request`` (replay and simulate use this)."""
        batch: list[Request] | None = None
        with self._lock:
            self._raise_if_unusable()
            if self._buffered >= self.max_buffered_events:
                raise BufferFullError(
                    f"{self._buffered} events wait to be sent (max_buffered_events)"
                )
            buf = self._buffers.get(request.service)
            if buf is None:
                buf = self._buffers[request.service] = _Buffer(oldest_monotonic=time.monotonic())
            buf.events.append(request)
            self._buffered += 1
            self.stats.events_recorded += 1
            if len(buf.events) >= self.max_batch_events:
                batch = self._take(request.service)
        if batch:
            self._send_batch(batch)

    def _take(self, service: str) -> list[Request]:
        buf = self._buffers.pop(service)
        self._buffered -= len(buf.events)
        self._in_flight += len(buf.events)
        return buf.events

    def _send_batch(self, events: list[Request]) -> None:
        value = self.codec.encode(
            "RequestBatch", {"events": [request_to_record(e) for e in events], "sdk": SDK_NAME}
        )
        try:
            future = self._producer.send(
                self.requests_topic, key=events[0].service.encode(), value=value
            )
        except KafkaError as exc:
            self._on_failure(events, exc)
            return
        future.add_callback(lambda _meta: self._on_success(events))
        future.add_errback(lambda exc: self._on_failure(events, exc))

    def _on_success(self, events: list[Request]) -> None:
        with self._lock:
            self._in_flight -= len(events)
            self.stats.events_sent += len(events)
            self.stats.batches_sent += 1

    def _on_failure(self, events: list[Request], exc: BaseException) -> None:
        with self._lock:
            self._in_flight -= len(events)
            self.stats.events_failed += len(events)
            self._failed.extend(events)
            if self._first_error is None:
                self._first_error = exc

    def _raise_if_unusable(self) -> None:
        if self._closed:
            raise RuntimeError("the producer is closed")
        if self._failed:
            failed, self._failed = self._failed, []
            error, self._first_error = self._first_error, None
            raise DeliveryError(
                f"{len(failed)} request events were not delivered to {self.requests_topic}: "
                f"{error!r}",
                failed,
            )

    def _linger_loop(self) -> None:
        while not self._stop.wait(max(self.linger_s / 2, 0.005)):
            due: list[list[Request]] = []
            with self._lock:
                now = time.monotonic()
                for service in [
                    s for s, b in self._buffers.items() if now - b.oldest_monotonic >= self.linger_s
                ]:
                    due.append(self._take(service))
            for batch in due:
                self._send_batch(batch)

    def flush(self, timeout_s: float | None = None) -> None:
        """Send everything buffered and wait for the broker; raise ``DeliveryError`` on loss."""
        with self._lock:
            batches = [self._take(s) for s in list(self._buffers)]
        for batch in batches:
            self._send_batch(batch)
        try:
            self._producer.flush(timeout=timeout_s or self.delivery_timeout_s)
        except KafkaError as exc:
            with self._lock:
                stuck = self._in_flight
            raise DeliveryError(f"{stuck} events still unacknowledged: {exc!r}") from exc
        with self._lock:
            self._raise_if_unusable()

    # -- deploys ----------------------------------------------------------------------

    def announce_deploy(
        self,
        service: str,
        version: str,
        *,
        previous_version: str | None = None,
        change_type: str = "code",
        phase: str = "started",
        rollout_fraction: float = 1.0,
        actor: str = "ci",
        commit: str | None = None,
        description: str | None = None,
        deploy_id: str | None = None,
        timestamp_ms: int | None = None,
        timeout_s: float | None = None,
    ) -> DeployReceipt:
        """Send one deploy event and wait until the broker has it (acks=all)."""
        ts = now_ms() if timestamp_ms is None else int(timestamp_ms)
        record = {
            "deploy_id": deploy_id or f"{service}-{version}-{ts}", "service": service,
            "version": version, "previous_version": previous_version,
            "change_type": change_type, "phase": phase,
            "rollout_fraction": float(rollout_fraction), "timestamp": ts, "actor": actor,
            "commit": commit, "description": description,
        }  # fmt: skip
        return self.send_deploy(deploy_from_record(record), timeout_s)

    def send_deploy(self, deploy: Deploy, timeout_s: float | None = None) -> DeployReceipt:
        value = self.codec.encode("DeployEvent", deploy_to_record(deploy))
        try:
            future = self._producer.send(
                self.deploys_topic, key=deploy.service.encode(), value=value
            )
            meta = future.get(timeout=timeout_s or self.delivery_timeout_s)
        except KafkaError as exc:
            raise DeliveryError(
                f"deploy {deploy.deploy_id} was not acknowledged by {self.deploys_topic}: {exc!r}"
            ) from exc
        return DeployReceipt(deploy.deploy_id, meta.topic, meta.partition, meta.offset)

    # -- lifecycle --------------------------------------------------------------------

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then close. Raises ``DeliveryError`` if anything was not delivered."""
        if self._closed:
            return
        self._stop.set()
        self._flusher.join(timeout=5)
        try:
            self.flush(timeout_s)
        finally:
            self._closed = True
            self._producer.close(timeout=5)
            atexit.unregister(self._close_at_exit)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except DeliveryError as exc:
            # At interpreter exit there is no caller left to raise to: say it loudly.
            print(f"slipstream SDK: {exc}", file=sys.stderr)

    def __enter__(self) -> SlipstreamProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def producer_from_settings(settings: Settings, **options: Any) -> SlipstreamProducer:
    """A producer configured like the rest of slipstream (a ``Settings`` object)."""
    security = kafka_options(settings)
    bootstrap = ",".join(security.pop("bootstrap_servers"))
    return SlipstreamProducer(bootstrap, namespace=settings.namespace, **security, **options)
