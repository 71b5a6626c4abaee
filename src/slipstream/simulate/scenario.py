"""Scenario files: validated on load, with errors that name the file and the key."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slipstream.slo.events import CHANGE_TYPES, SERVICE_NAME

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ScenarioError(ValueError):
    pass


def parse_duration_ms(value: Any, where: str) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1000)  # a bare number is seconds
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ScenarioError(f"{where}: {value!r} is not a duration like 90s, 10m, 2h")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    rate_per_s: float
    error_ratio: float
    latency_median_ms: float
    latency_p99_ms: float
    version: str
    operations: tuple[str, ...] = ("GET /",)
    bad_status: tuple[int, ...] = (500, 503)
    region: str | None = None


@dataclass(frozen=True)
class RolloutStep:
    at_ms: int  # after the deploy starts
    fraction: float


@dataclass(frozen=True)
class DeploySpec:
    service: str
    version: str
    at_ms: int  # after the scenario starts
    change_type: str = "code"
    rollout: tuple[RolloutStep, ...] = (RolloutStep(0, 1.0),)
    error_ratio: float | None = None  # of the new version; None keeps the service's
    latency_factor: float = 1.0
    rollback_after_ms: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class IncidentSpec:
    """Something outside every deploy (a network, a shared dependency) raising error ratios."""

    at_ms: int
    duration_ms: int
    services: tuple[str, ...]
    error_ratio: float


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    duration_ms: int
    services: tuple[ServiceSpec, ...]
    deploys: tuple[DeploySpec, ...] = field(default=())
    description: str = ""
    incidents: tuple[IncidentSpec, ...] = field(default=())


def _take(obj: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ScenarioError(f"{where}: expected a mapping")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return obj


def _number(value: Any, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ScenarioError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ScenarioError(f"{where}: {x} is not finite")
    return x


def _ratio(value: Any, where: str) -> float:
    x = _number(value, where)
    if not 0.0 <= x <= 1.0:
        raise ScenarioError(f"{where}: {x} is outside 0..1")
    return x


def _positive(value: Any, where: str) -> float:
    x = _number(value, where)
    if x <= 0:
        raise ScenarioError(f"{where}: must be > 0, got {x}")
    return x


def _service(name: str, raw: Any, where: str) -> ServiceSpec:
    if not SERVICE_NAME.match(name):
        raise ScenarioError(f"{where}: service name {name!r} does not match {SERVICE_NAME.pattern}")
    keys = {"rate_per_s", "error_ratio", "latency_ms", "version", "operations", "bad_status",
            "region"}  # fmt: skip
    obj = _take(raw, keys, where)
    latency = _take(obj.get("latency_ms", {}), {"median", "p99"}, f"{where}.latency_ms")
    median = _positive(latency.get("median", 40), f"{where}.latency_ms.median")
    p99 = _positive(latency.get("p99", median * 5), f"{where}.latency_ms.p99")
    if p99 < median:
        raise ScenarioError(f"{where}.latency_ms: p99 {p99} is below the median {median}")
    bad = tuple(int(s) for s in obj.get("bad_status", (500, 503)))
    if not bad or not all(100 <= s <= 599 for s in bad):
        raise ScenarioError(f"{where}.bad_status: need status codes in 100..599")
    ops = tuple(str(o) for o in obj.get("operations", ("GET /",)))
    if not ops:
        raise ScenarioError(f"{where}.operations: need at least one")
    return ServiceSpec(
        name=name,
        rate_per_s=_positive(obj.get("rate_per_s", 10), f"{where}.rate_per_s"),
        error_ratio=_ratio(obj.get("error_ratio", 0.001), f"{where}.error_ratio"),
        latency_median_ms=median,
        latency_p99_ms=p99,
        version=str(obj.get("version", "v1")),
        operations=ops,
        bad_status=bad,
        region=obj.get("region"),
    )


def _deploy(raw: Any, where: str, services: dict[str, ServiceSpec]) -> DeploySpec:
    keys = {"service", "version", "at", "change_type", "rollout", "effect", "rollback_after",
            "description"}  # fmt: skip
    obj = _take(raw, keys, where)
    service = obj.get("service")
    if service not in services:
        raise ScenarioError(f"{where}.service: {service!r} is not a service of the scenario")
    change_type = obj.get("change_type", "code")
    if change_type not in CHANGE_TYPES:
        raise ScenarioError(f"{where}.change_type: {change_type!r} not in {sorted(CHANGE_TYPES)}")
    steps = []
    for i, step in enumerate(obj.get("rollout", [{"at": "0s", "fraction": 1.0}])):
        s = _take(step, {"at", "fraction"}, f"{where}.rollout[{i}]")
        steps.append(
            RolloutStep(
                parse_duration_ms(s.get("at", "0s"), f"{where}.rollout[{i}].at"),
                _ratio(s.get("fraction"), f"{where}.rollout[{i}].fraction"),
            )
        )
    if not steps or [s.at_ms for s in steps] != sorted(s.at_ms for s in steps):
        raise ScenarioError(f"{where}.rollout: need steps in time order")
    effect = _take(obj.get("effect", {}), {"error_ratio", "latency_factor"}, f"{where}.effect")
    rollback = obj.get("rollback_after")
    return DeploySpec(
        service=service,
        version=str(obj.get("version") or ""),
        at_ms=parse_duration_ms(obj.get("at", "0s"), f"{where}.at"),
        change_type=change_type,
        rollout=tuple(steps),
        error_ratio=(
            _ratio(effect["error_ratio"], f"{where}.effect.error_ratio")
            if "error_ratio" in effect
            else None
        ),
        latency_factor=_positive(
            effect.get("latency_factor", 1.0), f"{where}.effect.latency_factor"
        ),
        rollback_after_ms=(
            parse_duration_ms(rollback, f"{where}.rollback_after") if rollback is not None else None
        ),
        description=obj.get("description"),
    )


def parse_scenario(raw: Any, source: str) -> Scenario:
    keys = {"name", "seed", "duration", "services", "deploys", "description", "incidents"}
    obj = _take(raw, keys, source)
    services_raw = _take(obj.get("services") or {}, set(obj.get("services") or {}), source)
    if not services_raw:
        raise ScenarioError(f"{source}: services: need at least one service")
    services = {n: _service(n, v, f"{source}: services.{n}") for n, v in services_raw.items()}
    deploys = tuple(
        _deploy(d, f"{source}: deploys[{i}]", services)
        for i, d in enumerate(obj.get("deploys") or [])
    )
    for i, d in enumerate(deploys):
        if not d.version:
            raise ScenarioError(f"{source}: deploys[{i}].version: required")
    incidents = []
    for i, inc in enumerate(obj.get("incidents") or []):
        where = f"{source}: incidents[{i}]"
        o = _take(inc, {"at", "duration", "services", "error_ratio"}, where)
        names = tuple(o.get("services") or ())
        if not names or any(n not in services for n in names):
            raise ScenarioError(f"{where}.services: names of services of the scenario")
        incidents.append(IncidentSpec(
            parse_duration_ms(o.get("at", "0s"), f"{where}.at"),
            parse_duration_ms(o.get("duration", "5m"), f"{where}.duration"),
            names, _ratio(o.get("error_ratio"), f"{where}.error_ratio"),
        ))  # fmt: skip
    seed = obj.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScenarioError(f"{source}: seed: must be an integer")
    return Scenario(
        name=str(obj.get("name") or Path(source).stem),
        seed=seed,
        duration_ms=parse_duration_ms(obj.get("duration", "10m"), f"{source}: duration"),
        services=tuple(services.values()),
        deploys=deploys,
        description=str(obj.get("description", "")),
        incidents=tuple(incidents),
    )


def shipped_scenarios() -> list[str]:
    root = resources.files("slipstream.simulate") / "scenarios"
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name (``bad-deploy``) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            text = path.read_text()
        except OSError as exc:
            raise ScenarioError(f"{name_or_path}: {exc.strerror}") from None
        source = str(path)
    else:
        shipped = resources.files("slipstream.simulate") / "scenarios" / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise ScenarioError(
                f"no scenario {name_or_path!r}; shipped: {', '.join(shipped_scenarios())}"
            )
        text = shipped.read_text()
        source = f"{name_or_path}.yaml"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from None
    return parse_scenario(raw, source)
