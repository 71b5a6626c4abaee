"""Domain events and the rules that make them valid. Standard library only.

The worker turns decoded Avro records into these; the SDK checks the same
rules before it buffers anything, so a service learns of a bad event at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

SERVICE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CHANGE_TYPES: Final = frozenset({"code", "config", "flag", "infra", "rollback"})
DEPLOY_PHASES: Final = frozenset({"started", "progress", "finished", "rolled_back"})
MAX_ID_LEN: Final = 200
MAX_TEXT_LEN: Final = 1000

# Event times before this are not plausible epoch milliseconds (seconds sent by mistake).
EARLIEST_EVENT_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z


class InvalidEventError(ValueError):
    """An event breaks a rule; ``reason`` is a short stable code for metrics and DLQ headers."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Request:
    event_id: str
    service: str
    operation: str
    status_code: int
    latency_ms: float
    timestamp_ms: int
    version: str | None = None
    region: str | None = None
    callee: str | None = None


@dataclass(frozen=True, slots=True)
class Deploy:
    deploy_id: str
    service: str
    version: str
    previous_version: str | None
    change_type: str
    phase: str
    rollout_fraction: float
    timestamp_ms: int
    actor: str
    commit: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class TimePolicy:
    """How far an event time may stray before the event is refused as absurd.

    ``max_ahead_of_clock_ms``: later than the wall clock by more than this is a
    broken clock or a unit error. ``max_behind_stream_ms``: older than the
    stream's time (the newest valid event time seen on its partition) by more
    than this can no longer fall inside any SLO window (the longest period is
    30 days).
    """

    max_ahead_of_clock_ms: int = 3_600_000
    max_behind_stream_ms: int = 35 * 86_400_000


def check_service(service: str) -> None:
    if not SERVICE_NAME.match(service):
        raise InvalidEventError(
            "bad-service-name",
            f"service {service[:80]!r} does not match {SERVICE_NAME.pattern}",
        )


def _check_id(field: str, value: str) -> None:
    if not value or len(value) > MAX_ID_LEN:
        reason = f"bad-{field.replace('_', '-')}"
        raise InvalidEventError(reason, f"{field} must be 1..{MAX_ID_LEN} chars")


def check_event_time(
    timestamp_ms: int, *, now_ms: int, stream_time_ms: int | None, policy: TimePolicy
) -> None:
    if timestamp_ms < EARLIEST_EVENT_MS:
        raise InvalidEventError(
            "timestamp-out-of-range", f"timestamp {timestamp_ms} is before 2000"
        )
    if timestamp_ms > now_ms + policy.max_ahead_of_clock_ms:
        raise InvalidEventError(
            "timestamp-future",
            f"timestamp {timestamp_ms} is {(timestamp_ms - now_ms) / 1000:.0f}s ahead of the clock",
        )
    if stream_time_ms is not None and timestamp_ms < stream_time_ms - policy.max_behind_stream_ms:
        raise InvalidEventError(
            "timestamp-too-old",
            f"timestamp {timestamp_ms} is {(stream_time_ms - timestamp_ms) / 86_400_000:.1f} days "
            "behind the stream",
        )


def request_from_record(record: dict[str, Any]) -> Request:
    """Validate a decoded RequestEvent record (field types are the schema's already)."""
    _check_id("event_id", record["event_id"])
    check_service(record["service"])
    status = record["status_code"]
    if not 100 <= status <= 599:
        raise InvalidEventError("bad-status-code", f"status_code {status} is outside 100..599")
    latency = record["latency_ms"]
    if not (math.isfinite(latency) and latency >= 0):
        raise InvalidEventError("bad-latency", f"latency_ms {latency} is negative or not finite")
    if len(record["operation"]) > MAX_TEXT_LEN:
        raise InvalidEventError("bad-operation", f"operation longer than {MAX_TEXT_LEN} chars")
    callee = record.get("callee")
    if callee is not None:
        check_service(callee)
    return Request(
        record["event_id"],
        record["service"],
        record["operation"],
        status,
        latency,
        record["timestamp"],
        record.get("version"),
        record.get("region"),
        callee,
    )


def deploy_from_record(record: dict[str, Any]) -> Deploy:
    _check_id("deploy_id", record["deploy_id"])
    check_service(record["service"])
    if not record["version"]:
        raise InvalidEventError("bad-version", "version must not be empty")
    if record["change_type"] not in CHANGE_TYPES:
        raise InvalidEventError("bad-change-type", f"change_type {record['change_type']!r}")
    if record["phase"] not in DEPLOY_PHASES:
        raise InvalidEventError("bad-phase", f"phase {record['phase']!r}")
    fraction = record["rollout_fraction"]
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise InvalidEventError(
            "bad-rollout-fraction", f"rollout_fraction {fraction} is outside 0..1"
        )
    return Deploy(
        record["deploy_id"],
        record["service"],
        record["version"],
        record.get("previous_version"),
        record["change_type"],
        record["phase"],
        fraction,
        record["timestamp"],
        record["actor"],
        record.get("commit"),
        record.get("description"),
    )


def request_to_record(r: Request) -> dict[str, Any]:
    return {
        "event_id": r.event_id, "service": r.service, "operation": r.operation,
        "status_code": r.status_code, "latency_ms": r.latency_ms, "timestamp": r.timestamp_ms,
        "version": r.version, "region": r.region, "callee": r.callee,
    }  # fmt: skip


def deploy_to_record(d: Deploy) -> dict[str, Any]:
    return {
        "deploy_id": d.deploy_id, "service": d.service, "version": d.version,
        "previous_version": d.previous_version, "change_type": d.change_type, "phase": d.phase,
        "rollout_fraction": d.rollout_fraction, "timestamp": d.timestamp_ms, "actor": d.actor,
        "commit": d.commit, "description": d.description,
    }  # fmt: skip
