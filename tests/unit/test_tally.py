"""The batch path that counts events as it checks them (``Ingestor(catalogue=...)`` and
``PartitionEngine.absorb_tallied``) against the per-event path (a ``Request`` per event,
``absorb_many``): on random traffic with invalid events, duplicates, late events, unknown
services, several SLOs and versions, and a crash with a replay, every output is the same.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from slipstream.schemas.codec import AvroCodec
from slipstream.slo.catalogue import Catalogue, parse_catalogue
from slipstream.slo.engine import MessageResult, PartitionEngine
from slipstream.slo.tally import Tally, catalogue_slis, service_slis
from slipstream.streams.ingest import Ingested, Ingestor

CODEC = AvroCodec()
REQ, DEP = "slo.requests", "slo.deploys"
T0 = 1_795_000_000_000 // 3_600_000 * 3_600_000
DAY_MS = 86_400_000
TIERS = {
    "fast": {"severity": "page", "long": "2m", "short": "30s", "factor": 2},
    "slow": {"severity": "ticket", "long": "10m", "short": "1m", "factor": 1},
}
SERVICES = ("checkout", "search", "auth", "ghost")  # ghost: not in the catalogue
VERSIONS = (None, "v1", "v2")
OLDER_REQUEST = next(
    s for s in CODEC.registry.writers()
    if s.name == "RequestEvent" and s != CODEC.registry.current("RequestEvent")
)  # fmt: skip


def catalogue() -> Catalogue:
    def slo(name: str, sli: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "objective": 99, "period": "7d", "sli": sli,
                "alerting": {"min_events": 20, "tiers": TIERS}}  # fmt: skip

    return parse_catalogue({"services": {
        "checkout": {"slos": [
            slo("avail", {"kind": "availability"}),
            slo("fast", {"kind": "latency", "threshold_ms": 300}),
            slo("strict", {"kind": "availability", "bad_status": [[429, 429], [500, 504]]}),
        ]},
        "search": {"depends_on": ["auth"], "slos": [
            slo("p90", {"kind": "latency", "threshold_ms": 100}),
            slo("p99", {"kind": "latency", "threshold_ms": 800.5}),
        ]},
        "auth": {"slos": [slo("avail", {"kind": "availability"})]},
    }}, "tally-test")  # fmt: skip


def valid_event(rng: random.Random, i: int, ts: int, error_rate: float) -> dict[str, Any]:
    failed = rng.random() < error_rate
    return {
        "event_id": f"e{i}", "service": rng.choice(SERVICES),
        "operation": rng.choice(["GET /", "POST /pay"]),
        "status_code": rng.choice([500, 503, 504, 429]) if failed
        else rng.choice([200, 200, 200, 201, 404, 429]),
        "latency_ms": rng.choice([1.0, 99.9, 100.0, 250.0, 300.0, 300.5, 800.5, 2500.0]),
        "timestamp": ts, "version": rng.choice(VERSIONS),
        "region": rng.choice([None, "eu"]), "callee": rng.choice([None, None, "auth"]),
    }  # fmt: skip


# Each breaks one rule (or two, to pin the order the rules are checked in).
BREAKERS: tuple[dict[str, Any], ...] = (
    {"service": "bad service!"}, {"service": "x" * 65}, {"service": ""},
    {"status_code": 99}, {"status_code": 600}, {"status_code": -1},
    {"latency_ms": -0.5}, {"latency_ms": math.nan}, {"latency_ms": math.inf},
    {"event_id": ""}, {"event_id": "x" * 201}, {"operation": "o" * 1001},
    {"callee": "no such callee!"}, {"callee": "unknown-but-valid"},
    {"timestamp": 1_764_150_000}, {"status_code": 700, "latency_ms": -1.0},
    {"event_id": "", "service": "bad!"},
)  # fmt: skip


@dataclass
class Traffic:
    """A seeded stream of messages: (topic, partition, value, now_ms)."""

    messages: list[tuple[str, int, bytes, int]] = field(default_factory=list)


def traffic(seed: int, n_messages: int = 260) -> Traffic:
    rng = random.Random(seed)
    out = Traffic()
    ts, i = T0 + rng.randrange(3_600_000), 0
    sent: list[str] = []
    error_rate = 0.0
    for m in range(n_messages):
        if m % 40 == 0:  # phases: quiet, then bursts that fire and clear alerts
            error_rate = rng.choice([0.0, 0.01, 0.3, 0.8])
        partition = rng.randrange(3)
        now = ts + rng.choice([0, 500, 5_000])
        if rng.random() < 0.05:
            deploy = {"deploy_id": f"d{m}", "service": rng.choice(SERVICES[:3]), "version": "v2",
                      "previous_version": "v1", "change_type": "code",
                      "phase": rng.choice(["started", "finished"]), "rollout_fraction": 0.5,
                      "timestamp": ts, "actor": "ci", "commit": None,
                      "description": None}  # fmt: skip
            out.messages.append((DEP, partition, CODEC.encode("DeployEvent", deploy), now))
            continue
        events = []
        for _ in range(rng.choice([0, 1, 3, 20, 60, 100]) if rng.random() < 0.97 else 0):
            ts += rng.choice([0, 1, 7, 40, 99, 100, 350, 2_000])
            event = valid_event(rng, i, ts, error_rate)
            i += 1
            roll = rng.random()
            if roll < 0.05:
                event.update(rng.choice(BREAKERS))
            elif roll < 0.08:
                event["timestamp"] = ts - rng.choice([1, 150, 10_000, 90_000, 36 * DAY_MS])
            elif roll < 0.10:
                event["timestamp"] = now + rng.choice([3_599_000, 3_601_000, 7_200_000])
            elif roll < 0.15 and sent:
                event["event_id"] = rng.choice(sent[-300:])  # a duplicate
            sent.append(event["event_id"])
            events.append(event)
        if len(events) == 1 and rng.random() < 0.5:
            if rng.random() < 0.3:  # an older SDK: the codec resolves its writer schema
                old = {k: v for k, v in events[0].items() if k not in ("region", "callee")}
                value = CODEC.encode("RequestEvent", old, schema=OLDER_REQUEST)
            else:
                value = CODEC.encode("RequestEvent", events[0])
        else:
            value = CODEC.encode("RequestBatch", {"events": events, "sdk": "test"})
        if rng.random() < 0.03:  # damaged on the way: a dead letter, or read alike either way
            flipped = bytearray(value)
            flipped[rng.randrange(len(value))] ^= 1 << rng.randrange(8)
            value = bytes(flipped)
        out.messages.append((REQ, partition, value, now))
        if rng.random() < 0.02:
            ts += rng.choice([30_000, 600_000])  # a quiet spell: clocks move on idle
    return out


@dataclass
class Pipeline:
    """What the worker does with messages, without Kafka: ingest, absorb, end() per
    micro-batch, the table as a dict."""

    cat: Catalogue
    tallied: bool
    compiled: bool = True  # the tallied path's reader: compiled, or the codec's
    ingestor: Ingestor = field(init=False)
    engines: dict[int, PartitionEngine] = field(default_factory=dict)
    table: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ingestor = self.new_ingestor()

    def new_ingestor(self) -> Ingestor:
        return Ingestor(catalogue=self.cat if self.tallied else None, compiled_rows=self.compiled)

    def restart(self) -> None:
        """A crash: fresh ingest state, engines restored from the table."""
        self.ingestor = self.new_ingestor()
        self.engines = {}
        for p in range(3):
            self.engines[p] = PartitionEngine(p, self.cat)
            self.engines[p].restore(sorted(self.table.items()))

    def ingest(self, topic: str, partition: int, value: bytes, now: int) -> Ingested:
        return self.ingestor.ingest(topic, partition, value, now)

    def absorb(self, partition: int, offset: int, result: Ingested) -> PartitionEngine | None:
        if not result.accepted:
            return None
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = PartitionEngine(partition, self.cat)
        result.absorb_into(engine, offset)
        return engine

    def end(self, engine: PartitionEngine) -> MessageResult:
        result = engine.end()
        for key in result.deletes:
            self.table.pop(key, None)
        self.table.update(result.writes)
        return result


def counted(result: Ingested) -> int:
    """Accepted requests: a Request each, or the tally's."""
    return len(result.requests) + (result.tally.accepted if result.tally else 0)


@pytest.mark.parametrize(
    ("seed", "compiled"), [(seed, True) for seed in range(6)] + [(0, False), (1, False)]
)
def test_the_tallied_batch_path_gives_exactly_the_per_request_results(
    seed: int, compiled: bool
) -> None:
    cat = catalogue()
    msgs = traffic(seed).messages
    ref, fused = Pipeline(cat, tallied=False), Pipeline(cat, tallied=True, compiled=compiled)
    rng = random.Random(seed + 1000)
    crash_at: int | None = rng.randrange(len(msgs) // 2, len(msgs))
    offsets = [0, 0, 0]
    seen = {"dead": 0, "duplicates": 0, "transitions": 0, "late": 0, "unknown": 0, "tallied": 0}
    i = 0
    while i < len(msgs):
        batch = msgs[i : i + rng.choice([1, 4, 25])]
        touched: dict[int, tuple[PartitionEngine, PartitionEngine]] = {}
        for topic, partition, value, now in batch:
            a = ref.ingest(topic, partition, value, now)
            b = fused.ingest(topic, partition, value, now)
            assert a.dead == b.dead
            assert (a.duplicates, a.accepted, counted(a)) == (b.duplicates, b.accepted, counted(b))
            assert a.deploys == b.deploys
            assert ref.ingestor.stream_time_ms(topic, partition) == fused.ingestor.stream_time_ms(
                topic, partition
            )
            seen["dead"] += len(a.dead)
            seen["duplicates"] += a.duplicates
            seen["tallied"] += b.tally is not None
            offset = offsets[partition]
            offsets[partition] += 1
            ea, eb = ref.absorb(partition, offset, a), fused.absorb(partition, offset, b)
            assert (ea is None) == (eb is None)
            if ea is not None and eb is not None:
                touched[partition] = (ea, eb)
        for ea, eb in touched.values():
            ra, rb = ref.end(ea), fused.end(eb)
            assert ra == rb
            seen["transitions"] += len(ra.transitions)
            seen["late"] += ra.late_events
            seen["unknown"] += ra.unknown_service_events
        assert ref.table == fused.table
        i += len(batch)
        if crash_at is not None and i >= crash_at:
            # Crash and replay the last messages: the offset guard must skip the same.
            crash_at = None
            back = min(i, rng.choice([5, 30]))
            i -= back
            for _, partition, *_ in msgs[i : i + back]:
                offsets[partition] -= 1
            ref.restart()
            fused.restart()
    # The traffic must have exercised what is compared.
    assert all(seen.values()), seen


def test_the_precomputed_slis_classify_as_the_slis_do() -> None:
    cat = catalogue()
    slis = catalogue_slis(cat)
    assert set(slis) == {"checkout", "search", "auth"}
    for name, service in cat.services.items():
        table = service_slis(service.slos)
        for status in range(100, 600):
            for latency in (0.0, 100.0, 100.01, 300.0, 300.5, 800.5, 800.51, 1e9):
                bad = [int(slo.sli.is_bad(_request(status, latency))) for slo in service.slos]
                for callee, via in ((None, [0] * len(bad)), ("auth", bad)):
                    tally = Tally({name: table})
                    tally.add(name, "v", T0, status, latency, callee)
                    (run,) = tally.runs
                    assert run.versions["v"] == [1, *bad, *via], (name, status, latency, callee)


def _request(status: int, latency: float) -> Any:
    from slipstream.slo.events import Request

    return Request("e", "s", "op", status, latency, T0)


def test_runs_follow_the_service_and_the_step_of_event_time() -> None:
    cat = catalogue()
    tally = Tally(catalogue_slis(cat))
    for service, ts, version in [("auth", T0, "v1"), ("auth", T0 + 99, "v2"),
                                 ("search", T0 + 50, None), ("auth", T0 + 100, "v1"),
                                 ("auth", T0 + 30, "v1"), ("ghost", T0, None)]:  # fmt: skip
        tally.add(service, version, ts, 200, 1.0)
    assert [(r.slos[0].service, r.tick, r.ts_ms, r.versions) for r in tally.runs] == [
        ("auth", T0 // 100, T0 + 99, {"v1": [1, 0, 0], "v2": [1, 0, 0]}),
        ("search", T0 // 100, T0 + 50, {None: [1, 0, 0, 0, 0]}),
        ("auth", T0 // 100 + 1, T0 + 100, {"v1": [1, 0, 0]}),
        ("auth", T0 // 100, T0 + 30, {"v1": [1, 0, 0]}),
    ]
    assert (tally.accepted, tally.unknown) == (6, 1)
