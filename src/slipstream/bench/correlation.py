"""The labelled deploy-correlation benchmark of CORRELATION.md.

A seeded world of services with daily traffic cycles, deploys of several
strategies (15 % of them bad, some rolled back) and external incidents (hard
negatives, some right after a good deploy), with the ground truth kept per
deploy and per incident. The events run through the real engine
(``PartitionEngine``: version split, CUSUM episodes, controls); the naive
baselines are scored on the same events in the same run.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from slipstream.slo.catalogue import Catalogue, parse_catalogue
from slipstream.slo.engine import PartitionEngine
from slipstream.slo.events import Deploy, Request

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
T0 = 1_790_000_000_000 // DAY_MS * DAY_MS
TUNING_SEEDS = (1, 2, 3)
REPORTING_SEEDS = (101, 102, 103, 104, 105)

STRATEGIES = {
    "rolling": [(0, 0.1), (600_000, 0.5), (1_200_000, 1.0)],
    "canary": [(0, 0.05), (1_800_000, 1.0)],
    "blue-green": [(0, 1.0)],
    "config": [(0, 1.0)],
}


@dataclass
class TruthDeploy:
    deploy_id: str
    service: str
    start_ms: int
    strategy: str
    bad: bool
    ratio: float
    rollback_ms: int | None
    steps: list[tuple[int, float]]
    version: str
    previous: str


@dataclass
class TruthIncident:
    start_ms: int
    end_ms: int
    services: set[str]
    multiplier: float
    after_deploy: bool


@dataclass
class World:
    rates: dict[str, float]  # requests per second (daily mean)
    baseline: dict[str, float]
    deploys: list[TruthDeploy]
    incidents: list[TruthIncident]
    hours: float
    catalogue: Catalogue


def make_world(seed: int, hours: float) -> World:
    rng = random.Random(seed)
    names = [f"svc{i:02d}" for i in range(rng.randint(8, 12))]
    rates = {n: math.exp(rng.uniform(math.log(0.05), math.log(50))) for n in names}
    baseline = {n: rng.uniform(0.0002, 0.005) for n in names}
    end = T0 + int(hours * HOUR_MS)
    deploys: list[TruthDeploy] = []
    for n in names:
        per_day = rng.uniform(2, 10)
        count = max(int(rng.expovariate(1.0) * 0 + per_day * hours / 24 + rng.random()), 0)
        starts = sorted(T0 + HOUR_MS + rng.randrange(max(int(hours * HOUR_MS) - 2 * HOUR_MS, 1))
                        for _ in range(count))  # fmt: skip
        version = 1
        last = -10 * HOUR_MS
        for start in starts:
            if start - last < 2 * HOUR_MS:
                continue  # one deploy at a time per service
            last = start
            strategy = rng.choice(list(STRATEGIES))
            bad = rng.random() < 0.15
            ratio = math.exp(rng.uniform(math.log(1.5), math.log(50))) if bad else 1.0
            rollback = (
                start + rng.randint(900_000, 2_400_000) if bad and rng.random() < 0.5 else None
            )
            deploys.append(TruthDeploy(f"{n}-v{version + 1}", n, start, strategy, bad, ratio,
                                       rollback, STRATEGIES[strategy], f"v{version + 1}",
                                       f"v{version}"))  # fmt: skip
            version += 1
    incidents = []
    for _ in range(max(1, int(hours / 24 * rng.uniform(2, 4)))):
        affected = set(rng.sample(names, max(2, int(len(names) * rng.uniform(0.3, 0.6)))))
        good = [d for d in deploys if not d.bad and d.service in affected]
        after = bool(good) and rng.random() < 0.3
        span = max(int(hours * HOUR_MS) - 2 * HOUR_MS, 1)
        if after:
            start = rng.choice(good).start_ms + rng.randint(60_000, 300_000)
        else:
            start = T0 + HOUR_MS + rng.randrange(span)
        incidents.append(TruthIncident(start, start + rng.randint(600_000, 1_800_000), affected,
                                       rng.uniform(5, 20), after))  # fmt: skip
    slos = {
        n: {"slos": [{"name": "availability", "objective": round(100 * (1 - 4 * baseline[n]), 4),
                      "period": "7d", "sli": {"kind": "availability"},
                      "alerting": {"min_events": 50}}]}
        for n in names
    }  # fmt: skip
    del end
    return World(rates, baseline, deploys, incidents, hours,
                 parse_catalogue({"services": slos}, f"bench seed {seed}"))  # fmt: skip


def _deploy_events(d: TruthDeploy) -> list[Deploy]:
    change = "config" if d.strategy == "config" else "code"
    out = []
    for i, (offset, fraction) in enumerate(d.steps):
        phase = "started" if i == 0 else "progress"
        if i == len(d.steps) - 1 and fraction == 1.0 and i > 0:
            phase = "finished"
        ts = d.start_ms + offset
        if d.rollback_ms is not None and ts >= d.rollback_ms:
            break
        out.append(Deploy(d.deploy_id, d.service, d.version, d.previous, change, phase, fraction,
                          ts, "bench"))  # fmt: skip
    if d.rollback_ms is not None:
        out.append(Deploy(d.deploy_id, d.service, d.version, d.previous, change, "rolled_back",
                          0.0, d.rollback_ms, "bench"))  # fmt: skip
    return out


def events(world: World, seed: int) -> Iterator[Request | Deploy]:
    """Every event in event-time order."""
    rng = random.Random(seed * 7919)
    end = T0 + int(world.hours * HOUR_MS)
    by_service: dict[str, list[TruthDeploy]] = defaultdict(list)
    for d in world.deploys:
        by_service[d.service].append(d)
    deploy_events = sorted((e for d in world.deploys for e in _deploy_events(d)),
                           key=lambda e: e.timestamp_ms)  # fmt: skip
    heap = []
    for name, rate in world.rates.items():
        heap.append((T0 + rng.expovariate(rate * 1.5) * 1000, name))
    heapq.heapify(heap)
    versions = {n: "v1" for n in world.rates}
    nd = 0
    counter = 0
    while heap:
        t, name = heapq.heappop(heap)
        if t >= end:
            continue
        ts = int(t)
        while nd < len(deploy_events) and deploy_events[nd].timestamp_ms <= ts:
            yield deploy_events[nd]
            nd += 1
        heapq.heappush(heap, (t + rng.expovariate(world.rates[name] * 1.5) * 1000, name))
        day_phase = math.sin(2 * math.pi * (ts - T0) / DAY_MS)
        if rng.random() > (1 + 0.5 * day_phase) / 1.5:
            continue  # thinning: the daily cycle
        p_bad = world.baseline[name] * (1 + 0.3 * rng.uniform(-1, 1))  # overdispersion
        version = versions[name]
        for d in by_service[name]:
            if d.start_ms <= ts and (d.rollback_ms is None or ts < d.rollback_ms):
                fraction = max((f for off, f in d.steps if d.start_ms + off <= ts), default=0.0)
                version = d.previous
                if rng.random() < fraction:
                    version = d.version
                    p_bad *= d.ratio
        for inc in world.incidents:
            if name in inc.services and inc.start_ms <= ts < inc.end_ms:
                p_bad *= inc.multiplier
        counter += 1
        yield Request(f"e{counter}", name, "GET /", 503 if rng.random() < min(p_bad, 1.0) else 200,
                      10.0, ts, version)  # fmt: skip


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    extra: dict[str, Any] = field(default_factory=dict)


def _prf(predicted: set[str], truth: set[str]) -> Scores:
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1)


def run_seed(seed: int, hours: float) -> dict[str, Any]:  # noqa: PLR0915 (one harness, read top-down)
    world = make_world(seed, hours)
    engine = PartitionEngine(0, world.catalogue)
    impacts: list[Any] = []
    alerts: list[Any] = []
    per_version: dict[str, list[tuple[int, int, int, int, int]]] = defaultdict(list)
    batch: list[Request | Deploy] = []
    offset = 0

    def flush() -> None:
        nonlocal offset
        engine.begin(offset)
        for e in batch:
            if isinstance(e, Deploy):
                engine.absorb_deploy(e)
            else:
                engine.absorb(e)
        result = engine.end()
        impacts.extend(result.impacts)
        alerts.extend(t for t, _ in result.transitions if t.state == "firing")
        offset += 1
        batch.clear()

    # The harness also keeps, per deploy, per-version counts per tick for the baselines.
    truth = {d.deploy_id: d for d in world.deploys}
    tick_counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    service_deploys: dict[str, list[TruthDeploy]] = defaultdict(list)
    for d in world.deploys:
        service_deploys[d.service].append(d)
    for event in events(world, seed):
        batch.append(event)
        if isinstance(event, Request):
            for d in service_deploys[event.service]:
                if d.start_ms - 1_800_000 <= event.timestamp_ms < d.start_ms + 1_800_000:
                    new = event.version == d.version
                    c = tick_counts[(d.deploy_id, event.timestamp_ms // 10_000)]
                    base = 0 if new else 2
                    c[base] += event.status_code >= 500
                    c[base + 1] += 1
        if len(batch) >= 200:
            flush()
    if batch:
        flush()
    del per_version

    bad_truth = {d.deploy_id for d in world.deploys if d.bad}
    attributed = {i.deploy.deploy_id for i in impacts if i.verdict.verdict == "ATTRIBUTED"}
    ours = _prf(attributed & set(truth), bad_truth)

    first_attr: dict[str, int] = {}
    for i in impacts:
        if i.verdict.verdict == "ATTRIBUTED":
            first_attr.setdefault(i.deploy.deploy_id, i.decided_at_ms)
    latencies = [
        (first_attr[d.deploy_id] - d.start_ms) / 60_000
        for d in world.deploys
        if d.bad and d.ratio >= 10 and world.rates[d.service] >= 1 and d.deploy_id in first_attr
    ]
    decided = {i.deploy.deploy_id for i in impacts
               if i.verdict.verdict in ("ATTRIBUTED", "CLEARED", "SUSPECTED")}  # fmt: skip
    inconclusive = [d for d in bad_truth if d not in decided]
    # False blame: a good deploy of an affected service first ATTRIBUTED during an incident.
    blamed = 0
    for inc in world.incidents:
        for did, at in first_attr.items():
            good = truth.get(did)
            if (
                good is not None
                and not good.bad
                and good.service in inc.services
                and inc.start_ms <= at < inc.end_ms + 600_000
            ):
                blamed += 1
                break
    top1_hits = 0
    for d in world.deploys:
        if not d.bad:
            continue
        firsts = sorted((i.decided_at_ms, i.deploy.deploy_id) for i in impacts
                        if i.verdict.verdict == "ATTRIBUTED" and i.deploy.service == d.service
                        and d.start_ms <= i.decided_at_ms <= d.start_ms + 2 * HOUR_MS)  # fmt: skip
        top1_hits += bool(firsts) and firsts[0][1] == d.deploy_id

    # Baselines on the same events.
    last_deploy: set[str] = set()
    for a in alerts:
        before = [d for d in service_deploys[a.service]
                  if d.start_ms <= a.event_time_ms <= d.start_ms + 2 * HOUR_MS]  # fmt: skip
        if before:
            last_deploy.add(max(before, key=lambda d: d.start_ms).deploy_id)
    threshold: set[str] = set()
    ztest: set[str] = set()
    for d in world.deploys:
        ticks = sorted((t, c) for (did, t), c in tick_counts.items() if did == d.deploy_id)
        split = d.strategy in ("rolling", "canary")
        cum = [0, 0, 0, 0]
        pre = [0, 0]
        post = [0, 0]
        for t, c in ticks:
            at = t * 10_000
            if at < d.start_ms:
                pre[0] += c[0] + c[2]
                pre[1] += c[1] + c[3]
                continue
            post[0] += c[0] + c[2]
            post[1] += c[1] + c[3]
            for k in range(4):
                cum[k] += c[k]
            if split:
                a_bad, a_n, b_bad, b_n = cum
            else:
                a_bad, a_n, b_bad, b_n = post[0], post[1], pre[0], pre[1]
            if a_n and b_n and _z(a_bad, a_n, b_bad, b_n) > 2.33:
                ztest.add(d.deploy_id)
        a_bad, a_n, b_bad, b_n = cum if split else (post[0], post[1], pre[0], pre[1])
        if a_n and b_n and a_bad >= 5 and a_bad / a_n > 2 * max(b_bad / b_n, 0.001):
            threshold.add(d.deploy_id)
    return {
        "seed": seed,
        "services": len(world.rates),
        "deploys": len(world.deploys),
        "bad_deploys": len(bad_truth),
        "incidents": len(world.incidents),
        "slipstream": ours.__dict__,
        "top1_episode_attribution": top1_hits / len(bad_truth) if bad_truth else 1.0,
        "false_blame_external": blamed / len(world.incidents) if world.incidents else 0.0,
        "inconclusive_rate": len(inconclusive) / len(bad_truth) if bad_truth else 0.0,
        "median_minutes_to_attribution_10x_1rps": statistics.median(latencies)
        if latencies
        else None,
        "baselines": {
            "last deploy before the alert": _prf(last_deploy, bad_truth).__dict__,
            "fixed threshold (2x, Argo/Flagger style)": _prf(threshold, bad_truth).__dict__,
            "repeated two-proportion z-test": _prf(ztest, bad_truth).__dict__,
        },
    }


def _z(a_bad: int, a_n: int, b_bad: int, b_n: int) -> float:
    p = (a_bad + b_bad) / (a_n + b_n)
    se = math.sqrt(p * (1 - p) * (1 / a_n + 1 / b_n)) if 0 < p < 1 else 0.0
    return (a_bad / a_n - b_bad / b_n) / se if se else 0.0


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Micro-averaged over seeds: precision/recall/F1 from summed counts is not kept per
    seed, so seeds are averaged (each seed is a world of its own)."""

    def mean(key: str) -> float:
        values = [r[key] for r in results if r[key] is not None]
        return sum(values) / len(values) if values else float("nan")

    out: dict[str, Any] = {
        k: sum(r["slipstream"][k] for r in results) / len(results)
        for k in ("precision", "recall", "f1")
    }
    out |= {k: mean(k) for k in ("top1_episode_attribution", "false_blame_external",
                                  "inconclusive_rate",
                                  "median_minutes_to_attribution_10x_1rps")}  # fmt: skip
    out["baselines"] = {
        name: {k: sum(r["baselines"][name][k] for r in results) / len(results)
               for k in ("precision", "recall", "f1")}
        for name in results[0]["baselines"]
    }  # fmt: skip
    return out
