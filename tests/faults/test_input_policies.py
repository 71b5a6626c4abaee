"""Schema evolution and the event-time and dedup policies, on the real broker.

One replay mixes what producers really send: records written with today's RequestEvent
schema and with its first version (v1, no ``region``/``callee``), events sent twice
(the same ``event_id``: an SDK retry), late events (twenty minutes behind the stream),
events from a broken clock two hours ahead, and events forty days behind the stream.
The documented policy (README "Event contracts"): v1 records are read with the new
fields' defaults; duplicates within ten minutes count once; late events count (past
evaluations stand); more than an hour ahead of the clock or 35 days behind the stream
goes to the dead-letter topic with its reason. The worker's state must equal the truth
recomputed from the topic, each policy must show in /metrics with the injected numbers,
and an old (v1) reader must still read every record written today."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from slipstream import conventions
from slipstream.bench.load import now_ms, write_catalogue
from slipstream.connect import kafka_options
from slipstream.schemas.codec import AvroCodec, SchemaRegistry
from slipstream.settings import Settings
from slipstream.streams.supervise import scrape
from slipstream.streams.topics import ensure_topics

from faultkit import EVENTS_PER_S, Worker, drained, reckon, record, replay_records, wait_for
from faultkit import worker_settings as make_settings
from helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SCHEMAS = Path(__file__).resolve().parents[2] / "src/slipstream/schemas/avro"
SERVICES = 4
EVENTS = 20_000
DUPLICATES = 1_000
LATE = 500
FUTURE = 200
TOO_OLD = 100
LATE_MS = 20 * 60_000
FUTURE_MS = 2 * 3_600_000
TOO_OLD_MS = 40 * 86_400_000


def v1_codec() -> AvroCodec:
    """The codec of a producer (or reader) still on RequestEvent v1."""
    v1 = json.loads((SCHEMAS / "history/RequestEvent.v1.avsc").read_text())
    v2 = json.loads((SCHEMAS / "RequestEvent.avsc").read_text())
    others = [json.loads((SCHEMAS / f"{name}.avsc").read_text())
              for name in SchemaRegistry.default().names() if name != "RequestEvent"]  # fmt: skip
    return AvroCodec(SchemaRegistry(current=[v1, *others], history=[v2]))


def _sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, pairs), v in samples.items()
               if n == name and set(labels.items()) <= set(pairs))  # fmt: skip


def test_evolution_duplicates_late_and_far_future_follow_the_policy(
    settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(23)
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    settings = make_settings(settings, catalogue)
    ensure_topics(settings)
    topic = conventions.topic_name(settings.namespace, conventions.REQUESTS_TOPIC)
    today, old = AvroCodec(), v1_codec()
    start = now_ms() - EVENTS * 1000 // EVENTS_PER_S
    producer = KafkaProducer(**kafka_options(settings), acks="all", linger_ms=20)
    sent = {"v1": 0, "v2": 0, "duplicates": 0, "late": 0, "future": 0, "too_old": 0}

    def send(rec: dict[str, Any], v1: bool = False) -> None:
        if v1:
            rec = {k: v for k, v in rec.items() if k not in ("region", "callee")}
        value = (old if v1 else today).encode("RequestEvent", rec)
        producer.send(topic, key=rec["service"].encode(), value=value)
        sent["v1" if v1 else "v2"] += 1

    stream = list(replay_records(EVENTS, SERVICES, 29, start))
    # Where each anomaly follows a regular event (about the numbers above: a later kind
    # takes a place an earlier one drew; `sent` counts what was sent).
    extra = {i: kind for kind, n in (("dup", DUPLICATES), ("late", LATE), ("future", FUTURE),
                                     ("old", TOO_OLD))
             for i in rng.sample(range(EVENTS // 10, EVENTS), n)}  # fmt: skip
    for i, rec in enumerate(stream):
        send(rec, v1=i % 3 == 0)
        kind = extra.get(i)
        if kind == "dup":  # the same event again, as a retry sends it (either schema)
            send(dict(rec), v1=rng.random() < 0.5)
            sent["duplicates"] += 1
        elif kind is not None:
            shift = {"late": -LATE_MS, "future": FUTURE_MS, "old": -TOO_OLD_MS}[kind]
            send({**rec, "event_id": f"{rec['event_id']}-{kind}",
                  "timestamp": rec["timestamp"] + shift})  # fmt: skip
            sent[{"late": "late", "future": "future", "old": "too_old"}[kind]] += 1
    producer.flush()
    producer.close()

    worker = Worker(settings, tmp_path / "worker.log")
    with worker.running():
        wait_for(drained(settings), 300, "the worker to drain the replay", worker)
        samples = scrape(worker.addr)
    result = reckon(settings)
    c = result.comparison
    requests = conventions.REQUESTS_TOPIC
    shown = {
        "events": _sample(samples, f"{conventions.METRIC_INPUT_EVENTS}_total", topic=requests),
        "duplicates": _sample(samples, f"{conventions.METRIC_DUPLICATE_EVENTS}_total"),
        "late": _sample(samples, "slipstream_late_events_total"),
        "future": _sample(samples, f"{conventions.METRIC_DEAD_LETTERS}_total",
                          reason="timestamp-future"),
        "too_old": _sample(samples, f"{conventions.METRIC_DEAD_LETTERS}_total",
                           reason="timestamp-too-old"),
    }  # fmt: skip
    dlq = read_topic(settings.kafka_bootstrap,
                     conventions.dlq_topic_name(settings.namespace, requests))  # fmt: skip
    reasons = [dict(r.headers)["slipstream.error.reason"].decode() for r in dlq]
    # And back: a reader still on v1 reads every record written today (new fields ignored).
    unreadable = 0
    for r in read_topic(settings.kafka_bootstrap, topic):
        try:
            old.decode(r.value)
        except Exception:
            unreadable += 1
    record("schema evolution, duplicates, late and far-future events", sent=sent,
           shown=shown, events_lost=c.lost, events_double_counted=c.doubled,
           dead_letters=len(dlq), unreadable_by_v1_reader=unreadable)  # fmt: skip
    assert (c.lost, c.doubled, c.wrong_bad) == (0, 0, 0), c
    late, future, too_old = sent["late"], sent["future"], sent["too_old"]
    assert c.events == 2 * (EVENTS + late)  # duplicates once, the refused not at all
    assert shown["events"] == EVENTS + late
    assert shown["duplicates"] == sent["duplicates"] > 0
    assert shown["late"] > 0
    assert (shown["future"], shown["too_old"]) == (future, too_old) and future and too_old
    expected = ["timestamp-future"] * future + ["timestamp-too-old"] * too_old
    assert sorted(reasons) == sorted(expected)
    assert sent["v1"] > EVENTS // 3 and unreadable == 0
