"""The subscriber's typed records: built from decoded records of each output schema."""

from __future__ import annotations

import json

from slipstream.client.subscribe import BurnRateAlert, DeployVerdict, PolicyEvent, typed
from slipstream.schemas.codec import AvroCodec

CODEC = AvroCodec()
ALERT = {"alert_id": "a", "service": "shop", "slo": "availability", "severity": "page",
         "long_window_s": 3600, "short_window_s": 300, "factor": 14.4, "state": "firing",
         "event_time_ms": 1, "processed_at_ms": 2, "burn_rate_long": 20.0,
         "burn_rate_short": 30.0, "budget_remaining_ratio": 0.5, "suspected_deploy_id": None,
         "cause": "unknown"}  # fmt: skip


def _roundtrip(schema: str, record: dict[str, object]) -> object:
    decoded = CODEC.decode(CODEC.encode(schema, record))
    return typed(decoded.schema, decoded.record)


def test_each_output_record_becomes_its_type() -> None:
    alert = _roundtrip("BurnRateAlert", ALERT)
    assert alert == BurnRateAlert(**ALERT)  # type: ignore[arg-type]
    verdict = _roundtrip("DeployImpact", {
        "deploy_id": "d1", "service": "shop", "version": "v2", "slo": None,
        "verdict": "ATTRIBUTED", "confidence": 0.99, "budget_consumed_ratio": 0.3,
        "onset_ms": 5, "decided_at_ms": 9,
        "evidence_json": json.dumps({"rate_ratio": 12.5})})  # fmt: skip
    assert isinstance(verdict, DeployVerdict) and verdict.evidence == {"rate_ratio": 12.5}
    policy = _roundtrip("PolicyEvent", {
        "event_id": "e", "service": "shop", "slo": None, "action": "freeze",
        "reason": "budget exhausted", "actor": "slipstream", "timestamp": 3,
        "budget_remaining_ratio": -0.1, "expires_at_ms": None})  # fmt: skip
    assert isinstance(policy, PolicyEvent) and policy.action == "freeze"


def test_fields_a_newer_writer_adds_are_left_out_and_other_types_skipped() -> None:
    newer = typed("BurnRateAlert", {**ALERT, "added_in_v9": "x"})
    assert newer == BurnRateAlert(**ALERT)  # type: ignore[arg-type]
    assert typed("RequestEvent", {"event_id": "r"}) is None
