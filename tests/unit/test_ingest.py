"""The worker's input side without Kafka: validation, dead letters, dedup, stream time."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipstream.schemas.codec import AvroCodec
from slipstream.slo.dedup import RecentIds
from slipstream.slo.events import TimePolicy
from slipstream.streams.ingest import Ingestor

CODEC = AvroCodec()
NOW = 1_764_150_000_000
REQ = "slo.requests"
DEP = "slo.deploys"


def request(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e-1", "service": "checkout", "operation": "GET /", "status_code": 200,
        "latency_ms": 12.0, "timestamp": NOW - 1000, "version": "v1", "region": None,
        "callee": None,
    }  # fmt: skip
    return {**base, **over}


def deploy(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "deploy_id": "d-1", "service": "checkout", "version": "v2", "previous_version": "v1",
        "change_type": "code", "phase": "started", "rollout_fraction": 0.1,
        "timestamp": NOW - 500, "actor": "ci", "commit": None, "description": None,
    }  # fmt: skip
    return {**base, **over}


def test_a_valid_request_and_deploy_are_accepted() -> None:
    ing = Ingestor()
    got = ing.ingest(REQ, 0, CODEC.encode("RequestEvent", request()), NOW)
    assert [r.event_id for r in got.requests] == ["e-1"] and not got.dead
    assert got.requests[0].timestamp_ms == NOW - 1000
    got = ing.ingest(DEP, 0, CODEC.encode("DeployEvent", deploy()), NOW)
    assert [d.deploy_id for d in got.deploys] == ["d-1"] and not got.dead


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"service": "bad service!"}, "bad-service-name"),
        ({"service": "x" * 65}, "bad-service-name"),
        ({"status_code": 99}, "bad-status-code"),
        ({"status_code": 600}, "bad-status-code"),
        ({"latency_ms": -1.0}, "bad-latency"),
        ({"latency_ms": math.nan}, "bad-latency"),
        ({"event_id": ""}, "bad-event-id"),
        ({"timestamp": 1_764_150_000}, "timestamp-out-of-range"),  # seconds, not ms
        ({"timestamp": NOW + 2 * 3_600_000}, "timestamp-future"),
        ({"callee": "no/slashes"}, "bad-service-name"),
    ],
)
def test_invalid_requests_become_dead_letters_with_reasons(
    over: dict[str, object], reason: str
) -> None:
    data = CODEC.encode("RequestEvent", request(**over))
    got = Ingestor().ingest(REQ, 3, data, NOW)
    assert not got.requests
    [dead] = got.dead
    assert dead.reason == reason and dead.value == data
    headers = dict(dead.headers("ns.slo.requests", 3, 77, NOW))
    assert headers["slipstream.error.reason"] == reason.encode()
    assert headers["slipstream.error.class"] == b"InvalidEventError"
    assert headers["slipstream.source.topic"] == b"ns.slo.requests"
    assert headers["slipstream.source.partition"] == b"3"
    assert headers["slipstream.source.offset"] == b"77"
    assert headers["slipstream.dlq.time_ms"] == str(NOW).encode()


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"rollout_fraction": 1.5}, "bad-rollout-fraction"),
        ({"version": ""}, "bad-version"),
        ({"service": ""}, "bad-service-name"),
    ],
)
def test_invalid_deploys_become_dead_letters(over: dict[str, object], reason: str) -> None:
    got = Ingestor().ingest(DEP, 0, CODEC.encode("DeployEvent", deploy(**over)), NOW)
    assert not got.deploys and [d.reason for d in got.dead] == [reason]


def test_a_batch_keeps_its_good_events_and_dead_letters_only_the_bad_one() -> None:
    events = [request(event_id=f"e-{i}") for i in range(5)]
    events[2] = request(event_id="e-2", status_code=42)
    got = Ingestor().ingest(REQ, 0, CODEC.encode("RequestBatch", {"events": events}), NOW)
    assert [r.event_id for r in got.requests] == ["e-0", "e-1", "e-3", "e-4"]
    [dead] = got.dead
    assert dead.batch_index == 2 and dead.reason == "bad-status-code"
    assert CODEC.decode(dead.value).record == events[2]  # the bad event alone, re-encoded
    assert dict(dead.headers("t", 0, 1, NOW))["slipstream.source.batch_index"] == b"2"


def test_an_empty_batch_is_a_dead_letter() -> None:
    got = Ingestor().ingest(REQ, 0, CODEC.encode("RequestBatch", {"events": []}), NOW)
    assert [d.reason for d in got.dead] == ["empty-batch"]


def test_the_wrong_type_on_a_topic_is_a_dead_letter() -> None:
    got = Ingestor().ingest(DEP, 0, CODEC.encode("RequestEvent", request()), NOW)
    assert [d.reason for d in got.dead] == ["unexpected-type"]


def test_duplicates_within_the_horizon_are_counted_once() -> None:
    ing = Ingestor(dedup_horizon_ms=60_000)
    data = CODEC.encode("RequestEvent", request(event_id="same"))
    assert len(ing.ingest(REQ, 0, data, NOW).requests) == 1
    again = ing.ingest(REQ, 0, data, NOW)
    assert not again.requests and again.duplicates == 1 and not again.dead
    batch = {"events": [request(event_id="b"), request(event_id="b")]}
    got = ing.ingest(REQ, 0, CODEC.encode("RequestBatch", batch), NOW)
    assert len(got.requests) == 1 and got.duplicates == 1


def test_events_far_behind_the_stream_time_are_refused() -> None:
    ing = Ingestor(time_policy=TimePolicy(max_behind_stream_ms=86_400_000))
    ing.ingest(REQ, 0, CODEC.encode("RequestEvent", request(event_id="new")), NOW)
    assert ing.stream_time_ms(REQ, 0) == NOW - 1000
    old = request(event_id="old", timestamp=NOW - 3 * 86_400_000)
    got = ing.ingest(REQ, 0, CODEC.encode("RequestEvent", old), NOW)
    assert [d.reason for d in got.dead] == ["timestamp-too-old"]
    # Stream time is per partition: the same event is fine on a fresh partition.
    assert ing.ingest(REQ, 1, CODEC.encode("RequestEvent", old), NOW).requests


def test_recent_ids_forget_beyond_horizon_and_cap() -> None:
    ids = RecentIds(horizon_ms=1000, max_ids=3)
    assert not ids.seen_before("a", 0)
    assert ids.seen_before("a", 0)
    assert not ids.seen_before("b", 2000)  # "a" is now beyond the horizon
    assert not ids.seen_before("a", 2000)
    for name in "cdef":
        ids.seen_before(name, 2000)
    assert len(ids) == 3


VALID = [
    CODEC.encode("RequestEvent", request()),
    CODEC.encode("RequestBatch", {"events": [request(event_id=f"x{i}") for i in range(3)]}),
    CODEC.encode("DeployEvent", deploy()),
]


@settings(max_examples=300)
@given(st.binary(max_size=1024))
def test_random_bytes_are_always_dead_letters(data: bytes) -> None:
    got = Ingestor().ingest(REQ, 0, data, NOW)
    assert not got.requests and len(got.dead) == 1 and got.dead[0].reason


@settings(max_examples=300)
@given(st.sampled_from(VALID), st.data())
def test_truncated_messages_are_always_dead_letters(valid: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(valid) - 1))
    topic = DEP if valid is VALID[2] else REQ
    got = Ingestor().ingest(topic, 0, valid[:cut], NOW)
    assert not got.requests and not got.deploys and len(got.dead) == 1


@settings(max_examples=500)
@given(st.sampled_from(VALID), st.data())
def test_bit_flips_give_events_or_dead_letters_never_an_exception(
    valid: bytes, data: st.DataObject
) -> None:
    # Avro carries no checksum: a flip inside a string can still decode to a valid event.
    # What must hold is that every outcome is accounted for.
    bits = data.draw(st.lists(st.integers(0, len(valid) * 8 - 1), min_size=1, max_size=3))
    buf = bytearray(valid)
    for bit in bits:
        buf[bit // 8] ^= 1 << (bit % 8)
    topic = DEP if valid is VALID[2] else REQ
    got = Ingestor().ingest(topic, 0, bytes(buf), NOW)
    assert got.requests or got.deploys or got.dead
    assert all(d.reason for d in got.dead)
