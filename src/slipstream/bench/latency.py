"""Alert latency: from the send of the event that makes a tier's condition true to the alert
record on ``slo.alerts``, under a background load (0 %, 50 %, 90 % of sustainable).

Each sample uses a fresh target SLO (99.9 %, 30 days). Its history, ``HISTORY`` good events
timed 56 to 50 minutes before the burst, lies inside every window of an hour or more and
outside every window of 50 minutes or less. The burst then sends only bad events, one
message each, at ``BURST_RATE`` per second on an open-loop schedule (intended send times,
no coordinated omission). So the burst event that makes a tier true is known exactly:
the K-th, K = ceil(f * e * H / (1 - f * e)) for factor f and error budget e. Latency is
the wall time the record is received minus the intended send time of the K-th event.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from slipstream import conventions
from slipstream.bench.load import BATCH_EVENTS, SDK_LINGER_MS, request_record, zipf_services
from slipstream.schemas.codec import AvroCodec
from slipstream.slo.catalogue import Slo

HISTORY = 20_000
BURST_RATE = 500.0  # bad events per second
BURST_MAX_S = 25.0  # give up on a sample after this long
HISTORY_FROM_MIN, HISTORY_TO_MIN = 56, 50


def target_services(count: int) -> dict[str, Any]:
    """Catalogue entries of the latency targets."""
    return {
        f"lat{i:03d}": {"slos": [{"name": "availability", "objective": 99.9, "period": "30d",
                                  "sli": {"kind": "availability"}}]}
        for i in range(count)
    }  # fmt: skip


def tipping_events(slo: Slo, history: int, history_span_ms: int) -> dict[tuple[int, int], int]:
    """(long window s, short window s) -> the burst event that makes that tier true."""
    out = {}
    for tier in slo.tiers:
        if tier.short_window_ms > history_span_ms:
            continue  # the SLO has not been observed for a short window yet: cannot fire
        for window in (tier.long_window_ms, tier.short_window_ms):
            if HISTORY_TO_MIN * 60_000 < window < HISTORY_FROM_MIN * 60_000 + 4 * 60_000:
                raise ValueError(f"window {window} ms cuts through the history")
        fe = tier.factor * slo.error_budget
        # The short window holds history only when it is an hour or longer.
        h_short = history if tier.short_window_ms >= 3_600_000 else 0
        k = max(math.ceil(fe * history / (1 - fe)), math.ceil(fe * h_short / (1 - fe)), 1)
        out[(tier.long_window_ms // 1000, tier.short_window_ms // 1000)] = k
    return out


def _record(service: str, ts: int, bad: bool, i: int, run: str) -> dict[str, Any]:
    return request_record(f"{run}-{service}-{i}", service, ts, bad, 20.0)


def background(bootstrap: str, topic: str, rate: float, services: int, stop: Any) -> None:
    """Open-loop background traffic: ``rate`` events/s, until ``stop``, shaped as the SDK
    shapes it and as the throughput runs that define the sustainable load were: a
    service's events go out as one ``RequestBatch`` when ``BATCH_EVENTS`` are waiting or
    the oldest has waited ``SDK_LINGER_MS``."""
    codec = AvroCodec()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    names, weights = zipf_services(services)
    rng = random.Random(7)
    run = uuid.uuid4().hex[:6]
    step, sent, started = 0.02, 0, time.monotonic()
    pending: dict[str, list[dict[str, Any]]] = {}
    opened: dict[str, float] = {}  # service -> when its waiting batch got its first event

    def flush(service: str) -> None:
        value = codec.encode("RequestBatch", {"events": pending.pop(service), "sdk": "bench"})
        producer.send(topic, key=service.encode(), value=value)
        opened.pop(service, None)

    try:
        while not stop.is_set():
            clock = time.monotonic()
            due = int((clock - started) * rate)
            now = int(time.time() * 1000)
            for service in rng.choices(names, weights, k=max(due - sent, 0)):
                events = pending.setdefault(service, [])
                opened.setdefault(service, clock)
                events.append(_record(service, now, rng.random() < 0.001, sent, run))
                sent += 1
                if len(events) >= BATCH_EVENTS:
                    flush(service)
            for service in [s for s, t in opened.items() if clock - t >= SDK_LINGER_MS / 1000]:
                flush(service)
            time.sleep(step)
    finally:
        producer.close()


@dataclass
class AlertTail:
    """Receives alert records in a thread; keeps the receive time of each (service, tier)."""

    bootstrap: str
    topic: str
    received: dict[tuple[str, int, int], float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                 enable_auto_commit=False)  # fmt: skip
        parts = consumer.partitions_for_topic(self.topic) or {0}
        consumer.assign([TopicPartition(self.topic, p) for p in parts])
        consumer.seek_to_end()
        codec = AvroCodec()

        def loop() -> None:
            try:
                while not self.stop.is_set():
                    for records in consumer.poll(timeout_ms=10).values():
                        now = time.time()
                        for rec in records:
                            a = codec.decode(rec.value, {"BurnRateAlert"}).record
                            key = (a["service"], a["long_window_s"], a["short_window_s"])
                            if a["state"] in ("firing", "escalated"):
                                self.received.setdefault(key, now)
            finally:
                consumer.close()

        threading.Thread(target=loop, daemon=True).start()


def sample(
    producer: KafkaProducer, topic: str, tail: AlertTail, slo: Slo, codec: AvroCodec
) -> dict[str, Any]:
    """One burst on a fresh target: the tier of its first alert record and the latency."""
    run = uuid.uuid4().hex[:6]
    service = slo.service
    t0 = time.time() + 3.0
    lo, hi = t0 - HISTORY_FROM_MIN * 60, t0 - HISTORY_TO_MIN * 60
    history = [_record(service, int((lo + (hi - lo) * i / HISTORY) * 1000), False, i, run)
               for i in range(HISTORY)]  # fmt: skip
    for i in range(0, HISTORY, 100):
        value = codec.encode("RequestBatch", {"events": history[i : i + 100], "sdk": "bench"})
        producer.send(topic, key=service.encode(), value=value)
    producer.flush()
    tipping = tipping_events(slo, HISTORY, int((hi - lo + HISTORY_TO_MIN * 60) * 1000))
    time.sleep(max(t0 - time.time(), 0))
    i = 0
    while time.time() - t0 < BURST_MAX_S:
        if any((service, *tier) in tail.received for tier in tipping):
            break  # the incident's first record names the tier that made it fire
        intended = t0 + i / BURST_RATE
        delay = intended - time.time()
        if delay > 0:
            time.sleep(delay)
        event = _record(service, int(intended * 1000), True, HISTORY + i, run)
        producer.send(topic, key=service.encode(), value=codec.encode("RequestEvent", event))
        i += 1
    time.sleep(0.5)
    for tier, k in tipping.items():
        got = tail.received.get((service, *tier))
        if got is not None:
            return {"tier": f"{tier[0] // 60}m/{tier[1] // 60}m", "tipping_event": k,
                    "latency_s": got - (t0 + (k - 1) / BURST_RATE)}  # fmt: skip
    return {"tier": None, "latency_s": None}


def summarise(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {"n": len(values), "p50": statistics.median(values), "p99": p99,
            "max": ordered[-1]}  # fmt: skip


def run_levels(
    bootstrap: str,
    namespace: str,
    targets: list[Slo],
    levels: dict[str, float],
    samples: int,
    services: int,
) -> dict[str, Any]:
    """Latency samples at each background level (events/s); needs a worker running."""
    topic = conventions.topic_name(namespace, conventions.REQUESTS_TOPIC)
    alerts = conventions.topic_name(namespace, conventions.ALERTS_TOPIC)
    tail = AlertTail(bootstrap, alerts)
    tail.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    codec = AvroCodec()
    remaining = list(targets)
    results: dict[str, Any] = {}
    try:
        for name, rate in levels.items():
            stop = multiprocessing.Event()
            proc = multiprocessing.Process(
                target=background, args=(bootstrap, topic, rate, services, stop), daemon=True
            )
            if rate > 0:
                proc.start()
                time.sleep(3.0)  # steady state
            latencies: list[float] = []
            tiers: list[str] = []
            missed = 0
            for _ in range(samples):
                got = sample(producer, topic, tail, remaining.pop(0), codec)
                if got["latency_s"] is None:
                    missed += 1
                else:
                    latencies.append(got["latency_s"])
                    tiers.append(got["tier"])
            stop.set()
            if rate > 0:
                proc.join(timeout=10)
            results[name] = {"background_events_per_s": rate, "missed": missed,
                             "tiers": sorted(set(tiers)), **summarise(latencies)}  # fmt: skip
    finally:
        tail.stop.set()
        producer.close()
    return results
