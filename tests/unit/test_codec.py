"""The Avro single-object codec: round trips, evolution both ways, and no escape for bad bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipstream.schemas.codec import (
    MARKER,
    MAX_MESSAGE_BYTES,
    AvroCodec,
    CodecError,
    SchemaRegistry,
    crc64_avro,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "src/slipstream/schemas/avro"
CODEC = AvroCodec()

REQUEST = {
    "event_id": "e-1", "service": "checkout", "operation": "POST /pay", "status_code": 503,
    "latency_ms": 120.5, "timestamp": 1764150000123, "version": "v42", "region": "eu-west-1",
    "callee": "payments",
}  # fmt: skip
SAMPLES: dict[str, dict[str, Any]] = {
    "RequestEvent": REQUEST,
    "RequestBatch": {"events": [REQUEST, {**REQUEST, "event_id": "e-2"}], "sdk": "slipstream/0.1"},
    "DeployEvent": {
        "deploy_id": "d-1", "service": "checkout", "version": "v43", "previous_version": "v42",
        "change_type": "code", "phase": "progress", "rollout_fraction": 0.25,
        "timestamp": 1764150600000, "actor": "ci", "commit": "abc123", "description": None,
    },
    "BurnRateAlert": {
        "alert_id": "a-1", "service": "checkout", "slo": "availability", "severity": "page",
        "long_window_s": 3600, "short_window_s": 300, "factor": 14.4, "state": "firing",
        "event_time_ms": 1764150600000, "processed_at_ms": 1764150600400,
        "burn_rate_long": 15.2, "burn_rate_short": 20.1, "budget_remaining_ratio": 0.93,
        "suspected_deploy_id": "d-1", "cause": "deploy",
    },
    "BudgetState": {
        "service": "checkout", "slo": "availability", "objective": 99.9, "period_days": 30,
        "good": 999_000, "total": 1_000_000, "sli": 0.999, "budget_remaining_ratio": 0.0,
        "burn_rates": {"5m": 1.0, "1h": 2.5}, "frozen": True, "freeze_reason": "budget exhausted",
        "active_alerts": ["ticket"], "updated_at_ms": 1764150600000,
    },
    "DeployImpact": {
        "deploy_id": "d-1", "service": "checkout", "version": "v43", "slo": "availability",
        "verdict": "ATTRIBUTED", "confidence": 0.98, "budget_consumed_ratio": 0.31,
        "onset_ms": 1764150660000, "decided_at_ms": 1764150900000,
        "evidence_json": json.dumps({"rate_ratio": 41.0, "e_value": 1200.0}),
    },
    "PolicyEvent": {
        "event_id": "p-1", "service": "checkout", "slo": "availability", "action": "freeze",
        "reason": "budget exhausted: -3% left", "actor": "slipstream", "timestamp": 1764150900000,
        "budget_remaining_ratio": -0.03, "expires_at_ms": None,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_schema_round_trips(name: str) -> None:
    data = CODEC.encode(name, SAMPLES[name])
    assert data[:2] == MARKER
    assert data[2:10] == CODEC.registry.current(name).fingerprint
    decoded = CODEC.decode(data)
    assert decoded.schema == name
    assert decoded.record == SAMPLES[name]


def test_samples_cover_every_current_schema() -> None:
    assert sorted(SAMPLES) == sorted(CODEC.registry.names())


def test_every_schema_and_field_is_documented_and_namespaced() -> None:
    for path in SCHEMA_DIR.rglob("*.avsc"):
        schema = json.loads(path.read_text())
        assert schema["namespace"] == "io.slipstream", path
        assert schema.get("doc"), path
        for fld in schema["fields"]:
            assert fld.get("doc"), f"{path}: field {fld['name']} has no doc"
            assert "logicalType" not in json.dumps(fld), f"{path}: timestamps are plain longs"


def test_fingerprint_is_crc64_avro_of_the_canonical_form() -> None:
    for schema in CODEC.registry.writers():
        expected = fastavro_fingerprint(schema.canonical, "CRC-64-AVRO")
        assert schema.fingerprint.hex() == expected
    # The empty input leaves the algorithm's initial value (Avro specification).
    assert crc64_avro(b"") == 0xC15D213AA4D7A795


def test_records_of_the_older_request_schema_are_read_with_defaults() -> None:
    fixture = json.loads((ROOT / "tests/fixtures/request_event_v1.json").read_text())
    for message in fixture["messages"]:
        data = bytes.fromhex(message["hex"])
        assert data[2:10].hex() == fixture["writer_fingerprint"]
        decoded = CODEC.decode(data)
        assert decoded.schema == "RequestEvent"
        assert decoded.record == {**message["record"], "region": None, "callee": None}


def test_an_old_reader_reads_todays_records() -> None:
    v2 = json.loads((SCHEMA_DIR / "RequestEvent.avsc").read_text())
    v1 = json.loads((SCHEMA_DIR / "history/RequestEvent.v1.avsc").read_text())
    others = [
        json.loads((SCHEMA_DIR / f"{n}.avsc").read_text())
        for n in CODEC.registry.names()
        if n != "RequestEvent"
    ]
    old_registry = SchemaRegistry(current=[v1, *others], history=[v2])
    old = AvroCodec(old_registry)
    decoded = old.decode(CODEC.encode("RequestEvent", REQUEST))
    assert decoded.record == {k: v for k, v in REQUEST.items() if k not in ("region", "callee")}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (MARKER + b"\x00" * 3, "truncated"),
        (b"\x00\x01" + b"\x00" * 20, "bad-marker"),
        (b'{"service": "checkout"}', "bad-marker"),
        (MARKER + b"\xff" * 8 + b"\x00", "unknown-fingerprint"),
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), "oversize"),
    ],
)
def test_framing_errors_have_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CodecError) as info:
        CODEC.decode(data)
    assert info.value.reason == reason


def test_trailing_bytes_and_truncation_are_errors() -> None:
    data = CODEC.encode("RequestEvent", REQUEST)
    with pytest.raises(CodecError, match="1 bytes after the record"):
        CODEC.decode(data + b"\x00")
    with pytest.raises(CodecError) as info:
        CODEC.decode(data[:-4])
    assert info.value.reason == "malformed"


def test_a_type_not_expected_on_the_topic_is_refused() -> None:
    data = CODEC.encode("DeployEvent", SAMPLES["DeployEvent"])
    with pytest.raises(CodecError) as info:
        CODEC.decode(data, expected={"RequestEvent", "RequestBatch"})
    assert info.value.reason == "unexpected-type"


def test_encoding_a_record_of_wrong_types_is_a_codec_error() -> None:
    with pytest.raises(CodecError) as info:
        CODEC.encode("RequestEvent", {**REQUEST, "status_code": "five hundred"})
    assert info.value.reason == "invalid-record"


VALID = [CODEC.encode(name, sample) for name, sample in SAMPLES.items()]


def _decode_is_total(data: bytes) -> None:
    """Either a record or a CodecError with a reason: nothing else may come out."""
    try:
        CODEC.decode(data)
    except CodecError as exc:
        assert exc.reason
        assert str(exc)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_escape_the_decoder(data: bytes) -> None:
    _decode_is_total(data)


@settings(max_examples=400)
@given(st.sampled_from(VALID), st.binary(max_size=600))
def test_random_bodies_behind_a_valid_header_never_escape(valid: bytes, body: bytes) -> None:
    _decode_is_total(valid[:10] + body)


@settings(max_examples=400)
@given(st.sampled_from(VALID), st.data())
def test_truncated_messages_are_errors(valid: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(valid) - 1))
    with pytest.raises(CodecError):
        CODEC.decode(valid[:cut])


@settings(max_examples=600)
@given(st.sampled_from(VALID), st.data())
def test_bit_flipped_messages_never_escape(valid: bytes, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.integers(0, len(valid) * 8 - 1), min_size=1, max_size=4))
    buf = bytearray(valid)
    for bit in flips:
        buf[bit // 8] ^= 1 << (bit % 8)
    _decode_is_total(bytes(buf))
