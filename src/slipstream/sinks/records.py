"""The engine's outputs as the records of the contract: Avro values, Redis hashes, JSON rows."""

from __future__ import annotations

import json
import uuid
from typing import Any

from slipstream.slo.alerts import Transition
from slipstream.slo.deploys import Impact
from slipstream.slo.engine import BudgetSnapshot, PolicyChange
from slipstream.slo.policy import REPORTED_WINDOWS_MS


def alert_key(service: str, slo: str) -> bytes:
    return f"{service}/{slo}".encode()


def burn_rate_alert(
    t: Transition,
    snapshot: BudgetSnapshot,
    processed_at_ms: int,
    suspect: str | None = None,
    cause: str = "unknown",
) -> dict[str, Any]:
    """A ``BurnRateAlert`` record (also the row of ``slipstream alerts --json``)."""
    return {
        "alert_id": t.alert_id,
        "service": t.service,
        "slo": t.slo,
        "severity": t.severity,
        "long_window_s": t.tier.long_window_ms // 1000,
        "short_window_s": t.tier.short_window_ms // 1000,
        "factor": t.tier.factor,
        "state": t.state,
        "event_time_ms": t.event_time_ms,
        "processed_at_ms": processed_at_ms,
        "burn_rate_long": t.burn_rate_long,
        "burn_rate_short": t.burn_rate_short,
        "budget_remaining_ratio": snapshot.budget_remaining_ratio,
        "suspected_deploy_id": suspect,
        "cause": cause,
    }


def budget_state(s: BudgetSnapshot) -> dict[str, Any]:
    """A ``BudgetState`` record."""
    return {
        "service": s.service,
        "slo": s.slo,
        "objective": s.objective_percent,
        "period_days": s.period_days,
        "good": s.good,
        "total": s.total,
        "sli": s.sli,
        "budget_remaining_ratio": s.budget_remaining_ratio,
        "burn_rates": dict(s.burn_rates),
        "frozen": s.frozen,
        "freeze_reason": s.freeze_reason,
        "active_alerts": list(s.active_alerts),
        "updated_at_ms": s.updated_at_ms,
    }


def redis_budget_hash(s: BudgetSnapshot) -> dict[str, str]:
    """The fields of ``slipstream:[ns:]budget:{service}:{slo}`` (DESIGN.md), as absolutes."""
    out = {
        "service": s.service,
        "slo": s.slo,
        "objective": repr(s.objective_percent),
        "window_days": str(s.period_days),
        "good": str(s.good),
        "total": str(s.total),
        "sli": "" if s.sli is None else repr(s.sli),
        "budget_remaining_ratio": repr(s.budget_remaining_ratio),
        "frozen": "1" if s.frozen else "0",
        "freeze_reason": s.freeze_reason or "",
        "active_alerts": ",".join(s.active_alerts),
        "updated_at_ms": str(s.updated_at_ms),
    }
    for name in REPORTED_WINDOWS_MS:
        out[f"burn_rate_{name}"] = repr(s.burn_rates[name])
    return out


def status_row(h: dict[str, str]) -> dict[str, Any]:
    """A row of ``slipstream status --json`` from a Redis budget hash."""
    return {
        "service": h["service"],
        "slo": h["slo"],
        "objective": float(h["objective"]),
        "period_days": int(h["window_days"]),
        "good": int(h["good"]),
        "total": int(h["total"]),
        "budget_remaining_ratio": float(h["budget_remaining_ratio"]),
        "burn_rates": {n: float(h[f"burn_rate_{n}"]) for n in REPORTED_WINDOWS_MS},
        "frozen": h.get("frozen") == "1",
        "active_alerts": [a for a in h.get("active_alerts", "").split(",") if a],
        "updated_at_ms": int(h["updated_at_ms"]),
    }


def deploy_impact(i: Impact) -> dict[str, Any]:
    """A ``DeployImpact`` record (also the row of ``slipstream deploys --json``)."""
    return {
        "deploy_id": i.deploy.deploy_id,
        "service": i.deploy.service,
        "version": i.deploy.version,
        "slo": i.slo,
        "verdict": i.verdict.verdict,
        "confidence": i.verdict.confidence,
        "budget_consumed_ratio": i.budget_consumed_ratio,
        "onset_ms": i.evidence.get("onset_ms"),
        "decided_at_ms": i.decided_at_ms,
        "evidence_json": json.dumps(i.evidence, sort_keys=True),
    }


def policy_event(p: PolicyChange) -> dict[str, Any]:
    """A ``PolicyEvent`` record for an automatic freeze or unfreeze."""
    return {
        "event_id": uuid.uuid5(_POLICY_NAMESPACE, f"{p.service}/{p.action}/{p.event_time_ms}").hex,
        "service": p.service,
        "slo": p.slo,
        "action": p.action,
        "reason": p.reason,
        "actor": "slipstream",
        "timestamp": p.event_time_ms,
        "budget_remaining_ratio": p.budget_remaining_ratio,
        "expires_at_ms": None,
    }


_POLICY_NAMESPACE = uuid.UUID("7b3c1e52-2f8d-4b1a-9c6e-0a5d4f3e2b19")
