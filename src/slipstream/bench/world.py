"""The labelled deploy-correlation benchmark of CORRELATION.md.

A seeded world: 8-20 services in a call DAG, 0.02-200 rps with a daily cycle,
baseline errors 0.02-0.5 % with overdispersion and harmless blips; 2-10
deploys per service per day (rolling, canary, blue-green, config), 15 % of
them bad (rate ratio 1.5-50, immediate, delayed or gradual onset; rolled
back or fixed forward), bad callees hurting their callers, a quarter of bad
deploys overlapping another deploy, some services that do not tag versions,
and external incidents (hard negatives, some right after a good deploy).

Traffic is drawn per 10 s tick and version as counts (``Tally``): the engine
absorbs a tally exactly as it absorbs the same events one by one, so the real
statistics code (version split, CUSUM episodes, before/after with controls)
runs at a fraction of the cost of millions of single events.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from slipstream.slo.catalogue import Catalogue, parse_catalogue
from slipstream.slo.events import Deploy

TICK_MS = 10_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
T0 = 1_790_000_000_000 // DAY_MS * DAY_MS
SLO_NAME = "availability"

STRATEGIES = {
    "rolling": [(0, 0.1), (10 * MINUTE_MS, 0.5), (20 * MINUTE_MS, 1.0)],
    "canary": [(0, 0.05), (30 * MINUTE_MS, 1.0)],
    "blue-green": [(0, 1.0)],
    "config": [(0, 1.0)],
}
ONSETS = ("immediate", "delayed", "gradual")
OVERDISPERSION_SIGMA = 0.25  # a service's bad rate varies per tick by exp(N(0, this))


class Tally(NamedTuple):
    """Events of one service and version in one 10 s tick: ``bad`` of ``total`` failed,
    ``via`` of those naming the called service they failed on."""

    service: str
    version: str | None
    ts_ms: int
    bad: int
    total: int
    via: int = 0


@dataclass
class TruthDeploy:
    deploy_id: str
    service: str
    start_ms: int
    strategy: str
    bad: bool
    ratio: float
    onset: str  # immediate | delayed | gradual
    onset_delay_ms: int
    rollback_ms: int | None
    version: str
    previous: str
    expected_excess: float = 0.0  # bad events the change adds on its own service (truth)
    overlaps: bool = False  # another deploy started within 30 min of this one nearby

    @property
    def steps(self) -> list[tuple[int, float]]:
        return STRATEGIES[self.strategy]

    def fraction(self, t_ms: int) -> float:
        if self.rollback_ms is not None and t_ms >= self.rollback_ms:
            return 0.0
        return max((f for off, f in self.steps if self.start_ms + off <= t_ms), default=0.0)

    def multiplier(self, t_ms: int) -> float:
        """How much more often the new version fails at ``t_ms`` (1 for a good deploy)."""
        if not self.bad:
            return 1.0
        since = t_ms - self.start_ms
        if self.onset == "delayed":
            return self.ratio if since >= self.onset_delay_ms else 1.0
        if self.onset == "gradual":
            return 1.0 + (self.ratio - 1.0) * min(1.0, max(since, 0) / (30 * MINUTE_MS))
        return self.ratio

    @property
    def true_onset_ms(self) -> int:
        return self.start_ms + (self.onset_delay_ms if self.onset == "delayed" else 0)


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
    callees: dict[str, dict[str, float]]  # caller -> callee -> share of requests calling it
    tagged: dict[str, bool]  # does the service put its version on request events
    deploys: list[TruthDeploy]
    incidents: list[TruthIncident]
    blips: list[tuple[str, int, int, float]]  # service, start, end, multiplier (harmless)
    hours: float
    catalogue: Catalogue
    by_service: dict[str, list[TruthDeploy]] = field(default_factory=dict)
    # does the service name the called service a failed request failed on (``callee``)
    names_callee: dict[str, bool] = field(default_factory=dict)


def _tick(ms: float) -> int:
    return int(ms) // TICK_MS * TICK_MS


def make_world(seed: int, hours: float) -> World:  # noqa: PLR0915 (one generator, read top-down)
    rng = random.Random(seed)
    span = int(hours * HOUR_MS)
    names = [f"svc{i:02d}" for i in range(rng.randint(8, 20))]
    rates = {n: math.exp(rng.uniform(math.log(0.02), math.log(200))) for n in names}
    baseline = {n: math.exp(rng.uniform(math.log(0.0002), math.log(0.005))) for n in names}
    # A DAG: services call services later in the list.
    callees: dict[str, dict[str, float]] = {}
    for i, n in enumerate(names):
        later = names[i + 1 :]
        picked = rng.sample(later, min(len(later), rng.choice((0, 1, 1, 2))))
        callees[n] = {c: rng.uniform(0.3, 0.8) for c in picked}
    tagged = {n: rng.random() >= 0.2 for n in names}
    deploys: list[TruthDeploy] = []
    for n in names:
        per_day = rng.uniform(2, 10)
        count = int(per_day * hours / 24 + rng.random())
        starts = sorted(_tick(T0 + HOUR_MS + rng.randrange(max(span - 2 * HOUR_MS, 1)))
                        for _ in range(count))  # fmt: skip
        version, last, forced = 1, -10 * HOUR_MS, None
        while starts or forced is not None:
            fixing = forced is not None
            if forced is not None:  # a bad deploy not rolled back is fixed forward
                start, forced = forced, None
                starts = [t for t in starts if t - start >= 2 * HOUR_MS]
            else:
                start = starts.pop(0)
                if start - last < 2 * HOUR_MS:
                    continue  # one deploy at a time per service
            if start >= T0 + span:
                break
            last = start
            strategy = rng.choice(list(STRATEGIES))
            bad = rng.random() < 0.15 and not fixing
            ratio = math.exp(rng.uniform(math.log(1.5), math.log(50))) if bad else 1.0
            onset = rng.choice(ONSETS) if bad else "immediate"
            delay = _tick(rng.uniform(5, 30) * MINUTE_MS) if onset == "delayed" else 0
            rollback = None
            if bad and rng.random() < 0.5:
                rollback = _tick(start + delay + rng.uniform(15, 40) * MINUTE_MS)
            elif bad:
                forced = _tick(start + rng.uniform(45, 120) * MINUTE_MS)
            deploys.append(TruthDeploy(f"{n}-v{version + 1}", n, start, strategy, bad, ratio,
                                       onset, delay, rollback, f"v{version + 1}",
                                       f"v{version}"))  # fmt: skip
            version += 1
    # A quarter of bad deploys overlap another deploy: a good one nearby, minutes apart.
    nearby = {n: [n, *callees[n], *(c for c, cs in callees.items() if n in cs)] for n in names}
    for d in [d for d in deploys if d.bad]:
        if rng.random() >= 0.25:
            continue
        others = [o for o in nearby[d.service] if o != d.service] or [rng.choice(names)]
        other = rng.choice(others)
        mine = [x for x in deploys if x.service == other]
        start = _tick(d.start_ms + rng.uniform(-5, 5) * MINUTE_MS)
        if any(abs(x.start_ms - start) < 2 * HOUR_MS for x in mine):
            continue
        version = len(mine) + 1 + 100  # a version number no other deploy of `other` uses
        strategy = rng.choice(list(STRATEGIES))
        deploys.append(TruthDeploy(f"{other}-v{version}", other, start, strategy, False, 1.0,
                                   "immediate", 0, None, f"v{version}", "v1"))  # fmt: skip
        d.overlaps = True
    deploys.sort(key=lambda d: d.start_ms)
    by_service: dict[str, list[TruthDeploy]] = {n: [] for n in names}
    for d in deploys:
        by_service[d.service].append(d)
    for ds in by_service.values():  # a deploy's previous version is what served before it
        serving = "v1"
        for d in ds:
            d.previous = serving
            serving = d.previous if d.rollback_ms is not None else d.version
    incidents = []
    for _ in range(max(1, round(hours / 24 * rng.uniform(2, 4)))):
        affected = set(rng.sample(names, max(2, int(len(names) * rng.uniform(0.3, 0.6)))))
        good = [d for d in deploys if not d.bad and d.service in affected]
        after = bool(good) and rng.random() < 0.4
        if after:
            start = _tick(rng.choice(good).start_ms + rng.uniform(1, 5) * MINUTE_MS)
        else:
            start = _tick(T0 + HOUR_MS + rng.randrange(max(span - 2 * HOUR_MS, 1)))
        incidents.append(TruthIncident(start, _tick(start + rng.uniform(10, 30) * MINUTE_MS),
                                       affected, rng.uniform(5, 20), after))  # fmt: skip
    blips = []
    for n in names:
        for _ in range(rng.randint(0, int(3 * hours / 24) + 1)):
            start = _tick(T0 + rng.randrange(span))
            blips.append((n, start, start + rng.choice((1, 2, 3)) * MINUTE_MS, rng.uniform(3, 8)))
    # Drawn apart, so that the worlds of the seeds are what they were before it was.
    names_rng = random.Random(seed * 31 + 1)
    names_callee = {n: names_rng.random() >= 0.2 for n in names}
    services = {
        n: {"depends_on": sorted(callees[n]),
            # a service that names its callees says so (as its SDK setup would)
            **({"names_callees": True} if names_callee[n] else {}),
            "slos": [{"name": SLO_NAME, "objective": round(100 * (1 - 4 * baseline[n]), 4),
                      "period": "7d", "sli": {"kind": "availability"},
                      "alerting": {"min_events": 50}}]}
        for n in names
    }  # fmt: skip
    world = World(rates, baseline, callees, tagged, deploys, incidents, blips, hours,
                  parse_catalogue({"services": services}, f"bench seed {seed}"),
                  by_service, names_callee)  # fmt: skip
    for d in deploys:  # the truth of how much each bad change costs, from the model itself
        if d.bad:
            next_starts = [o.start_ms for o in by_service[d.service] if o.start_ms > d.start_ms]
            until = min([T0 + span, *next_starts])
            d.expected_excess = expected_excess(d, rates[d.service], baseline[d.service], until)
    return world


def expected_excess(d: TruthDeploy, rps: float, baseline: float, until_ms: int) -> float:
    """The bad events a change adds on its own service, in expectation, within two hours of
    its start, before ``until_ms`` (the next change of the service, or the simulated
    span's end: a change near it has less time to show) and its rollback; at each tick's
    traffic (the daily cycle) and the mean of the per-tick bad rate (its log-normal
    spread), as the generator draws them."""
    ends = [d.start_ms + 2 * HOUR_MS, until_ms]
    end = min([*ends, d.rollback_ms] if d.rollback_ms is not None else ends)
    rate = baseline * math.exp(OVERDISPERSION_SIGMA**2 / 2)
    return sum(
        rps * daily_traffic(t) * TICK_MS / 1000 * rate * d.fraction(t) * (d.multiplier(t) - 1)
        for t in range(d.start_ms, end, TICK_MS)
    )


def daily_traffic(t_ms: int) -> float:
    """Traffic at ``t_ms`` as a share of the daily mean: a cycle of +-50 % over the day."""
    return 1.0 + 0.5 * math.sin(2 * math.pi * (t_ms - T0) / DAY_MS)


def deploy_events(d: TruthDeploy) -> list[Deploy]:
    change = "config" if d.strategy == "config" else "code"
    out = []
    for i, (offset, fraction) in enumerate(d.steps):
        ts = d.start_ms + offset
        if d.rollback_ms is not None and ts >= d.rollback_ms:
            break
        phase = "started" if i == 0 else "progress"
        out.append(Deploy(d.deploy_id, d.service, d.version, d.previous, change, phase, fraction,
                          ts, "bench"))  # fmt: skip
        if fraction == 1.0:  # fully rolled out: the deploy is finished
            out.append(Deploy(d.deploy_id, d.service, d.version, d.previous, change, "finished",
                              1.0, ts, "bench"))  # fmt: skip
    if d.rollback_ms is not None:
        out.append(Deploy(d.deploy_id, d.service, d.version, d.previous, change, "rolled_back",
                          0.0, d.rollback_ms, "bench"))  # fmt: skip
    return out


def poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean < 30:
        limit, k, prod = math.exp(-mean), 0, rng.random()
        while prod > limit:
            k += 1
            prod *= rng.random()
        return k
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    if n < 30:
        return sum(rng.random() < p for _ in range(n))
    if n * p < 25:  # geometric gaps between successes
        log_q, count, pos = math.log1p(-p), 0, 0
        while True:
            pos += int(math.log(1.0 - rng.random()) / log_q) + 1
            if pos > n:
                return count
            count += 1
    return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))


def tallies(world: World, seed: int) -> Iterator[Tally | Deploy]:
    """Every deploy phase and every tick's counts, in event-time order."""
    rng = random.Random(seed * 7919)
    via_rng = random.Random(seed * 31)  # which failures came from a callee: drawn apart
    end = T0 + int(world.hours * HOUR_MS)
    phases = sorted((e for d in world.deploys for e in deploy_events(d)),
                    key=lambda e: e.timestamp_ms)  # fmt: skip
    starts = {n: [d.start_ms for d in ds] for n, ds in world.by_service.items()}
    introduced = {(d.service, d.version): d for d in world.deploys}
    names = list(world.rates)
    blips: dict[str, list[tuple[int, int, float]]] = {n: [] for n in names}
    for s, start, stop, mult in world.blips:
        blips[s].append((start, stop, mult))
    nd = 0
    for t in range(T0, end, TICK_MS):
        while nd < len(phases) and phases[nd].timestamp_ms <= t:
            yield phases[nd]
            nd += 1
        daily = daily_traffic(t)
        # Each service's failure multiplier per version, then callers feel their callees.
        served: dict[str, list[tuple[str, float, float]]] = {}  # version, share, multiplier
        for n in names:
            i = bisect.bisect_right(starts[n], t) - 1
            if i < 0:
                served[n] = [("v1", 1.0, 1.0)]
                continue
            d = world.by_service[n][i]
            before = introduced.get((n, d.previous))
            prev_mult = before.multiplier(t) if before is not None else 1.0
            f = d.fraction(t)
            served[n] = [(d.version, f, d.multiplier(t)), (d.previous, 1.0 - f, prev_mult)]
        for n in names:
            p = world.baseline[n] * math.exp(rng.gauss(0.0, OVERDISPERSION_SIGMA))
            for inc in world.incidents:
                if n in inc.services and inc.start_ms <= t < inc.end_ms:
                    p *= inc.multiplier
            for start, stop, mult in blips[n]:
                if start <= t < stop:
                    p *= mult
            extra = sum(share * world.baseline[c] * sum(f * (m - 1) for _, f, m in served[c])
                        for c, share in world.callees[n].items())  # fmt: skip
            total = poisson(rng, world.rates[n] * daily * TICK_MS / 1000)
            versions = served[n]
            first = binomial(rng, total, versions[0][1])
            for (version, _, mult), count in zip(versions, (first, total - first), strict=False):
                if count:
                    bad = binomial(rng, count, min(p * mult + extra, 1.0))
                    tag = version if world.tagged[n] else None
                    # A callee's failure the caller felt is named as such when it says so.
                    via = 0
                    if bad and extra > 0 and world.names_callee[n]:
                        via = binomial(via_rng, bad, extra / (p * mult + extra))
                    yield Tally(n, tag, t + TICK_MS // 2, bad, count, via)
