"""Turns a scenario into a time-ordered stream of request and deploy events, from its seed."""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

from slipstream.simulate.scenario import DeploySpec, Scenario, ServiceSpec
from slipstream.slo.events import Deploy, Request

Z99 = 2.3263478740408408  # standard normal quantile of 0.99


@dataclass(frozen=True)
class _Phase:
    """From ``start_ms`` on, ``fraction`` of the service's traffic runs ``deploy``'s version."""

    start_ms: int
    deploy: DeploySpec
    fraction: float
    previous_version: str


def _deploy_events(
    scenario: Scenario, start_ms: int
) -> tuple[list[Deploy], dict[str, list[_Phase]]]:
    events: list[Deploy] = []
    phases: dict[str, list[_Phase]] = {s.name: [] for s in scenario.services}
    current = {s.name: s.version for s in scenario.services}
    for i, spec in enumerate(sorted(scenario.deploys, key=lambda d: d.at_ms)):
        deploy_id = f"{spec.service}-{spec.version}-s{scenario.seed}-{i}"
        previous = current[spec.service]
        t0 = start_ms + spec.at_ms
        last = len(spec.rollout) - 1

        # Every phase of one deploy differs only in phase, fraction and time.
        template = Deploy(deploy_id, spec.service, spec.version, previous, spec.change_type,
                          "started", 0.0, t0, f"simulate:{scenario.name}", None,
                          spec.description)  # fmt: skip

        for j, step in enumerate(spec.rollout):
            phase = "started" if j == 0 else "progress"
            if j == last and step.fraction == 1.0 and j > 0:
                phase = "finished"
            events.append(
                replace(template, phase=phase, rollout_fraction=step.fraction,
                        timestamp_ms=t0 + step.at_ms)
            )  # fmt: skip
            phases[spec.service].append(_Phase(t0 + step.at_ms, spec, step.fraction, previous))
        if spec.rollback_after_ms is not None:
            t_back = t0 + spec.rollback_after_ms
            events.append(
                replace(template, phase="rolled_back", rollout_fraction=0.0, timestamp_ms=t_back)
            )
            phases[spec.service].append(_Phase(t_back, spec, 0.0, previous))
        else:
            current[spec.service] = spec.version
    for service_phases in phases.values():
        service_phases.sort(key=lambda p: p.start_ms)
    events.sort(key=lambda d: d.timestamp_ms)
    return events, phases


class _ServiceModel:
    def __init__(
        self, spec: ServiceSpec, phases: list[_Phase], incidents: list[tuple[int, int, float]]
    ) -> None:
        self.spec = spec
        self.phases = phases
        self.incidents = incidents  # (start, end, error ratio) in event time
        self.mu = math.log(spec.latency_median_ms)
        self.sigma = max(math.log(spec.latency_p99_ms / spec.latency_median_ms) / Z99, 1e-9)

    def phase_at(self, ts_ms: int) -> _Phase | None:
        active = None
        for phase in self.phases:
            if phase.start_ms > ts_ms:
                break
            active = phase
        return active

    def request(self, rng: random.Random, ts_ms: int) -> Request:
        spec = self.spec
        phase = self.phase_at(ts_ms)
        version, error_ratio, factor = spec.version, spec.error_ratio, 1.0
        if phase is not None:
            version = phase.previous_version
            if rng.random() < phase.fraction:
                deploy = phase.deploy
                version = deploy.version
                if deploy.error_ratio is not None:
                    error_ratio = deploy.error_ratio
                factor = deploy.latency_factor
        for start, end, ratio in self.incidents:
            if start <= ts_ms < end:
                error_ratio = max(error_ratio, ratio)
        status = rng.choice(spec.bad_status) if rng.random() < error_ratio else 200
        latency = round(rng.lognormvariate(self.mu, self.sigma) * factor, 1)
        return Request(
            event_id=uuid.UUID(int=rng.getrandbits(128)).hex,
            service=spec.name,
            operation=rng.choice(spec.operations),
            status_code=status,
            latency_ms=latency,
            timestamp_ms=ts_ms,
            version=version,
            region=spec.region,
        )


def generate(scenario: Scenario, start_ms: int) -> Iterator[Request | Deploy]:
    """Every event of the scenario in event-time order; the same seed gives the same events."""
    rng = random.Random(scenario.seed)
    deploys, phases = _deploy_events(scenario, start_ms)
    models = [
        _ServiceModel(s, phases[s.name], [
            (start_ms + i.at_ms, start_ms + i.at_ms + i.duration_ms, i.error_ratio)
            for i in scenario.incidents if s.name in i.services
        ])
        for s in scenario.services
    ]  # fmt: skip
    end_ms = start_ms + scenario.duration_ms
    # Poisson arrivals per service, merged by time (ties broken by service order).
    heap = [(start_ms + rng.expovariate(m.spec.rate_per_s) * 1000, i) for i, m in enumerate(models)]
    heapq.heapify(heap)
    next_deploy = 0
    while heap:
        t, i = heapq.heappop(heap)
        ts = int(t)
        if ts >= end_ms:
            continue
        while next_deploy < len(deploys) and deploys[next_deploy].timestamp_ms <= ts:
            yield deploys[next_deploy]
            next_deploy += 1
        model = models[i]
        yield model.request(rng, ts)
        heapq.heappush(heap, (t + rng.expovariate(model.spec.rate_per_s) * 1000, i))
    for deploy in deploys[next_deploy:]:
        if deploy.timestamp_ms < end_ms:
            yield deploy
