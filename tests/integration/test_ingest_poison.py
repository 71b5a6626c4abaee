"""10 000 valid events mixed with poison through the real broker and worker: nothing lost,
nothing counted twice, every poison message on the DLQ with its reason, the worker alive."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from kafka import KafkaProducer

from slipstream import conventions
from slipstream.client import SlipstreamProducer
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings
from slipstream.slo.events import request_from_record
from slipstream.stack.process import free_port
from slipstream.streams.supervise import scrape, worker_process
from slipstream.streams.topics import ensure_topics

from helpers import poll, read_topic

CODEC = AvroCodec()
SINGLE, BATCHED, DEPLOYS, DUPLICATES = 4_000, 6_000, 50, 100


def _request(i: int, now_ms: int, rng: random.Random, **over: object) -> dict[str, object]:
    return {
        "event_id": f"ev-{i}", "service": rng.choice(["checkout", "payments", "auth"]),
        "operation": "GET /", "status_code": rng.choice([200, 200, 200, 503]),
        "latency_ms": rng.uniform(1, 300), "timestamp": now_ms - rng.randint(0, 600_000),
        "version": "v1", "region": None, "callee": None, **over,
    }  # fmt: skip


def _poison(now_ms: int, rng: random.Random) -> list[tuple[bytes, str]]:
    """(value, reason the worker must give) for every kind of bad input."""
    header = CODEC.registry.current("RequestEvent").header
    valid = CODEC.encode("RequestEvent", _request(10**9, now_ms, rng))
    out: list[tuple[bytes, str]] = []
    for _ in range(100):
        junk = os.urandom(rng.randint(1, 300))
        if junk[:2] == b"\xc3\x01":
            junk = b"\x00" + junk
        out.append((junk, "truncated" if len(junk) < 10 else "bad-marker"))
    out += [
        (b"\xc3\x01" + os.urandom(8) + os.urandom(40), "unknown-fingerprint") for _ in range(50)
    ]
    out += [(valid[: rng.randint(10, len(valid) - 1)], "malformed") for _ in range(50)]
    deploy = {
        "deploy_id": "d", "service": "checkout", "version": "v2", "previous_version": None,
        "change_type": "code", "phase": "started", "rollout_fraction": 1.0,
        "timestamp": now_ms, "actor": "ci", "commit": None, "description": None,
    }  # fmt: skip
    out += [(CODEC.encode("DeployEvent", deploy), "unexpected-type") for _ in range(25)]
    out += [(b'{"service": "checkout", "status_code": 200}', "bad-marker") for _ in range(25)]
    out += [
        (CODEC.encode("RequestEvent", _request(10**8 + i, now_ms, rng, status_code=42)),
         "bad-status-code")
        for i in range(25)
    ]  # fmt: skip
    out += [
        (CODEC.encode("RequestEvent", _request(10**7 + i, now_ms, rng, latency_ms=-5.0)),
         "bad-latency")
        for i in range(25)
    ]  # fmt: skip
    out += [(header + os.urandom(950 * 1024), "oversize") for _ in range(2)]
    out.append((b"", "truncated"))
    return out


def test_poison_goes_to_the_dlq_and_every_valid_event_counts_once(
    settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(5)
    now_ms = int(time.time() * 1000)
    settings = settings.replace(metrics_addr=f"127.0.0.1:{free_port()}")
    ensure_topics(settings)
    ns = settings.namespace
    requests_topic = conventions.topic_name(ns, "slo.requests")
    raw = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                        max_request_size=2 * 1024 * 1024)  # fmt: skip

    poison = _poison(now_ms, rng)
    singles = [CODEC.encode("RequestEvent", _request(i, now_ms, rng)) for i in range(SINGLE)]
    # Interleave poison among the valid single-event messages.
    stream: list[tuple[bytes, str | None]] = [(v, None) for v in singles] + list(poison)
    rng.shuffle(stream)
    futures = [(raw.send(requests_topic, key=b"k", value=v), v, reason) for v, reason in stream]
    for value in singles[:DUPLICATES]:  # producer retries seen as duplicates
        raw.send(requests_topic, key=b"k", value=value)
    raw.flush(timeout=60)
    expected_dlq: dict[tuple[int, int], str] = {}
    expected_value: dict[tuple[int, int], bytes] = {}
    for future, value, reason in futures:
        if reason is not None:
            meta = future.get(timeout=30)
            expected_dlq[(meta.partition, meta.offset)] = reason
            expected_value[(meta.partition, meta.offset)] = value
    raw.close()

    with SlipstreamProducer(settings.kafka_bootstrap, namespace=ns, max_batch_events=200,
                            register_atexit=False) as sdk:  # fmt: skip
        for i in range(SINGLE, SINGLE + BATCHED):
            sdk.record(request_from_record(_request(i, now_ms, rng)))
        for i in range(DEPLOYS):
            sdk.announce_deploy("checkout", f"v{i + 2}", timestamp_ms=now_ms, deploy_id=f"d{i}")

    def counters() -> dict[str, float]:
        samples = scrape(settings.metrics_addr)
        out: dict[str, float] = {}
        for (name, labels), value in samples.items():
            key = name + "".join(f"|{v}" for _, v in labels)
            out[key] = value
        return out

    def dead_total(c: dict[str, float]) -> float:
        return sum(v for k, v in c.items() if k.startswith("slipstream_dead_letters_total|"))

    log = tmp_path / "worker.log"
    with worker_process(settings, log) as worker:
        try:
            final = poll(
                counters,
                lambda c: (
                    c.get("slipstream_input_events_total|slo.requests") == SINGLE + BATCHED
                    and c.get("slipstream_input_events_total|slo.deploys") == DEPLOYS
                    and dead_total(c) == len(poison)
                    and c.get("slipstream_duplicate_events_total|slo.requests") == DUPLICATES
                ),
                timeout_s=180,
                what="every event counted and every poison message dead-lettered",
            )
        except AssertionError:
            print(log.read_text()[-5000:])
            raise
        for reason in set(expected_dlq.values()):
            want = sum(1 for r in expected_dlq.values() if r == reason)
            assert final[f"slipstream_dead_letters_total|{reason}|slo.requests"] == want, reason

        # Still consuming after all of that.
        with SlipstreamProducer(settings.kafka_bootstrap, namespace=ns,
                                register_atexit=False) as sdk:  # fmt: skip
            for i in range(100):
                sdk.record_request("auth", "GET /", 200, 1.0, event_id=f"after-{i}")
        poll(
            counters,
            lambda c: c.get("slipstream_input_events_total|slo.requests") == SINGLE + BATCHED + 100,
            timeout_s=60,
            what="the worker to consume after the poison",
        )
        assert worker.poll() is None, log.read_text()[-5000:]

    dlq = read_topic(settings.kafka_bootstrap, conventions.dlq_topic_name(ns, "slo.requests"))
    assert len(dlq) == len(poison)
    seen = {}
    for rec in dlq:
        headers = {k: v.decode() for k, v in rec.headers}
        assert headers["slipstream.source.topic"] == requests_topic
        assert headers["slipstream.error.message"]
        assert headers["slipstream.error.class"] in ("CodecError", "InvalidEventError")
        assert int(headers["slipstream.dlq.time_ms"]) >= now_ms
        where = (
            int(headers["slipstream.source.partition"]),
            int(headers["slipstream.source.offset"]),
        )
        seen[where] = headers["slipstream.error.reason"]
        assert rec.key == b"k"
        assert (rec.value or b"") == expected_value[where]  # the original bytes, kept
    assert seen == expected_dlq
