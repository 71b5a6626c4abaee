"""The worker's input side: raw message bytes in, valid domain events or dead letters out.

No Kafka here: the agent hands over (topic, partition, offset, value) and
sends what comes back, so every rule is testable without a broker. Nothing
in this module raises for bad input; it turns it into a ``DeadLetter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slipstream import conventions
from slipstream.schemas.codec import AvroCodec, CodecError
from slipstream.slo.dedup import RecentIds
from slipstream.slo.events import (
    Deploy,
    InvalidEventError,
    Request,
    TimePolicy,
    check_event_time,
    deploy_from_record,
    request_from_record,
)

REQUEST_SCHEMAS = frozenset({"RequestEvent", "RequestBatch"})
DEPLOY_SCHEMAS = frozenset({"DeployEvent"})

HEADER_PREFIX = "slipstream."


@dataclass(frozen=True)
class DeadLetter:
    """One record for ``<topic>.dlq``: the bytes to keep and why."""

    value: bytes
    error_class: str
    reason: str
    message: str
    batch_index: int | None = None  # which event of a RequestBatch, if only that one was bad

    def headers(
        self, topic: str, partition: int, offset: int, now_ms: int
    ) -> list[tuple[str, bytes]]:
        out = [
            ("error.class", self.error_class),
            ("error.reason", self.reason),
            ("error.message", self.message[:1000]),
            ("source.topic", topic),
            ("source.partition", str(partition)),
            ("source.offset", str(offset)),
            ("dlq.time_ms", str(now_ms)),
        ]
        if self.batch_index is not None:
            out.append(("source.batch_index", str(self.batch_index)))
        return [(HEADER_PREFIX + k, v.encode()) for k, v in out]


@dataclass
class Ingested:
    requests: list[Request] = field(default_factory=list)
    deploys: list[Deploy] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0


class Ingestor:
    """Decodes and validates; keeps per-partition stream time and a bounded dedup window."""

    def __init__(
        self,
        codec: AvroCodec | None = None,
        time_policy: TimePolicy | None = None,
        dedup_horizon_ms: int = 600_000,
        dedup_max_ids: int = 500_000,
    ) -> None:
        self.codec = codec or AvroCodec()
        self.time_policy = time_policy or TimePolicy()
        self._dedup_horizon_ms = dedup_horizon_ms
        self._dedup_max_ids = dedup_max_ids
        self._stream_time: dict[tuple[str, int], int] = {}
        self._recent: dict[tuple[str, int], RecentIds] = {}

    def stream_time_ms(self, topic: str, partition: int) -> int | None:
        return self._stream_time.get((topic, partition))

    def ingest(self, topic: str, partition: int, value: bytes | None, now_ms: int) -> Ingested:
        """``topic`` is the base name (``slo.requests`` / ``slo.deploys``)."""
        out = Ingested()
        data = value or b""
        expected = REQUEST_SCHEMAS if topic == conventions.REQUESTS_TOPIC else DEPLOY_SCHEMAS
        try:
            decoded = self.codec.decode(data, expected)
        except CodecError as exc:
            out.dead.append(DeadLetter(data, type(exc).__name__, exc.reason, str(exc)))
            return out
        key = (topic, partition)
        if decoded.schema == "RequestBatch":
            records = decoded.record["events"]
            if not records:
                out.dead.append(DeadLetter(data, "InvalidEventError", "empty-batch", "no events"))
            for index, record in enumerate(records):
                self._accept_request(key, record, now_ms, out, data, index)
        elif decoded.schema == "RequestEvent":
            self._accept_request(key, decoded.record, now_ms, out, data, None)
        else:
            try:
                deploy = deploy_from_record(decoded.record)
                self._check_time(key, deploy.timestamp_ms, now_ms)
            except InvalidEventError as exc:
                out.dead.append(DeadLetter(data, type(exc).__name__, exc.reason, str(exc)))
            else:
                out.deploys.append(deploy)
        return out

    def _check_time(self, key: tuple[str, int], timestamp_ms: int, now_ms: int) -> None:
        check_event_time(
            timestamp_ms,
            now_ms=now_ms,
            stream_time_ms=self._stream_time.get(key),
            policy=self.time_policy,
        )
        if timestamp_ms > self._stream_time.get(key, 0):
            self._stream_time[key] = timestamp_ms

    def _accept_request(
        self,
        key: tuple[str, int],
        record: dict[str, object],
        now_ms: int,
        out: Ingested,
        data: bytes,
        index: int | None,
    ) -> None:
        try:
            request = request_from_record(record)
            self._check_time(key, request.timestamp_ms, now_ms)
        except InvalidEventError as exc:
            # A bad event inside a batch is kept alone, so the DLQ never holds good events.
            value = data if index is None else self.codec.encode("RequestEvent", record)
            out.dead.append(DeadLetter(value, type(exc).__name__, exc.reason, str(exc), index))
            return
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = RecentIds(self._dedup_horizon_ms, self._dedup_max_ids)
        if recent.seen_before(request.event_id, request.timestamp_ms):
            out.duplicates += 1
            return
        out.requests.append(request)
