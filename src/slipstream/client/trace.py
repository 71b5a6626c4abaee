"""The JSON Lines trace format of DESIGN.md: one request or deploy event per line.

Reading turns each line into a domain event (``Request`` or ``Deploy``) with
the same rules the worker applies; a line it cannot use is a ``TraceError``
naming the line. Writing is the exact inverse, so ``simulate --out`` followed
by ``replay`` sends the same events as ``simulate`` alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from slipstream.slo.events import (
    Deploy,
    InvalidEventError,
    Request,
    deploy_from_record,
    deploy_to_record,
    request_from_record,
    request_to_record,
)

TraceEvent = Request | Deploy

# Derived ids are stable for the same line content, so a replayed trace gets the same ids.
_ID_NAMESPACE = uuid.UUID("6f1d2c54-3b0e-4d55-9a53-5f0c2b1e7a10")


class TraceError(ValueError):
    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


def parse_timestamp(value: Any) -> int:
    """Epoch milliseconds from an integer or an ISO-8601 string with a time zone."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be epoch milliseconds or an ISO-8601 string")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no time zone (add Z or +00:00)")
        return int(parsed.timestamp() * 1000)
    raise ValueError("timestamp must be epoch milliseconds or an ISO-8601 string")


def _derived_id(line: str) -> str:
    return uuid.uuid5(_ID_NAMESPACE, line.strip()).hex


_REQUEST_FIELDS = {"type", "event_id", "service", "operation", "status_code", "latency_ms",
                   "timestamp", "version", "region", "callee"}  # fmt: skip
_DEPLOY_FIELDS = {"type", "deploy_id", "service", "version", "previous_version", "change_type",
                  "phase", "rollout_fraction", "timestamp", "actor", "commit",
                  "description"}  # fmt: skip


def parse_line(line: str, lineno: int) -> TraceEvent:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceError(lineno, f"not JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise TraceError(lineno, "expected a JSON object")
    kind = obj.get("type")
    try:
        if kind == "request":
            _no_unknown(obj, _REQUEST_FIELDS)
            record = {
                "event_id": str(obj.get("event_id") or _derived_id(line)),
                "service": _str(obj, "service"), "operation": str(obj.get("operation", "")),
                "status_code": _int(obj, "status_code"), "latency_ms": _num(obj, "latency_ms"),
                "timestamp": parse_timestamp(obj.get("timestamp")),
                "version": obj.get("version"), "region": obj.get("region"),
                "callee": obj.get("callee"),
            }  # fmt: skip
            return request_from_record(record)
        if kind == "deploy":
            _no_unknown(obj, _DEPLOY_FIELDS)
            record = {
                "deploy_id": str(obj.get("deploy_id") or _derived_id(line)),
                "service": _str(obj, "service"), "version": _str(obj, "version"),
                "previous_version": obj.get("previous_version"),
                "change_type": obj.get("change_type", "code"),
                "phase": obj.get("phase", "started"),
                "rollout_fraction": float(obj.get("rollout_fraction", 1.0)),
                "timestamp": parse_timestamp(obj.get("timestamp")),
                "actor": str(obj.get("actor", "replay")), "commit": obj.get("commit"),
                "description": obj.get("description"),
            }  # fmt: skip
            return deploy_from_record(record)
    except (InvalidEventError, ValueError, TypeError) as exc:
        raise TraceError(lineno, str(exc)) from None
    raise TraceError(lineno, f'"type" must be "request" or "deploy", got {kind!r}')


def _no_unknown(obj: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValueError(f"unknown fields {unknown}")


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer")
    return value


def _num(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)


def read_trace(
    lines: Iterable[str], skip_invalid: bool = False
) -> Iterator[TraceEvent | TraceError]:
    """Events in file order. With ``skip_invalid``, bad lines come out as ``TraceError``
    values for the caller to count; otherwise the first one is raised."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield parse_line(line, lineno)
        except TraceError as exc:
            if not skip_invalid:
                raise
            yield exc


def format_event(event: TraceEvent) -> str:
    if isinstance(event, Request):
        return json.dumps({"type": "request", **request_to_record(event)}, separators=(",", ":"))
    return json.dumps({"type": "deploy", **deploy_to_record(event)}, separators=(",", ":"))
