"""The SLO catalogue: services, their SLOs, SLIs and alert policies, validated from plain data.

Pure: it takes what a YAML (or OpenSLO / Sloth importer) produced as dicts
and lists, and every error names the source, the service, the SLO and the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from slipstream.slo.events import SERVICE_NAME, Request
from slipstream.slo.policy import DAY_MS, AlertTier, default_tiers
from slipstream.slo.windows import resolution_for

SLO_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PERIODS_DAYS: Final = (7, 28, 30)
LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")
_DURATION: Final = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
DEFAULT_MIN_EVENTS: Final = 100
DEFAULT_BAD_STATUS: Final = ((500, 599),)


class CatalogueError(ValueError):
    pass


@dataclass(frozen=True)
class Sli:
    kind: str  # availability | latency
    bad_status: tuple[tuple[int, int], ...] = DEFAULT_BAD_STATUS
    threshold_ms: float | None = None

    def is_bad(self, request: Request) -> bool:
        if self.kind == "latency":
            assert self.threshold_ms is not None
            return request.latency_ms > self.threshold_ms
        code = request.status_code
        return any(lo <= code <= hi for lo, hi in self.bad_status)


@dataclass(frozen=True)
class Slo:
    service: str
    name: str
    objective_percent: float
    period_days: int
    sli: Sli
    tiers: tuple[AlertTier, ...]
    min_events: int = DEFAULT_MIN_EVENTS
    labels: Mapping[str, str] = field(default_factory=dict)
    runbook_url: str | None = None
    description: str = ""

    @property
    def objective(self) -> float:
        return self.objective_percent / 100.0

    @property
    def error_budget(self) -> float:
        return 1.0 - self.objective

    @property
    def period_ms(self) -> int:
        return self.period_days * DAY_MS

    @property
    def slo_id(self) -> str:
        """Sloth's ``sloth_id``: ``{service}-{slo}``."""
        return f"{self.service}-{self.name}"


@dataclass(frozen=True)
class BudgetPolicy:
    """When releases of a service freeze (the catalogue's ``policy:`` of a service)."""

    freeze_when_exhausted: bool = True
    freeze_on_page: bool = False
    # Hysteresis: a frozen SLO thaws only once this much budget is back, so a budget
    # hovering around zero does not freeze and unfreeze with every bad event.
    unfreeze_above: float = 0.02


@dataclass(frozen=True)
class Service:
    name: str
    slos: tuple[Slo, ...]
    depends_on: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    policy: BudgetPolicy = field(default_factory=BudgetPolicy)
    # Does the service name, on every request that failed because a called service did,
    # that service (``callee``)? None: not declared, taken to once it has named one.
    names_callees: bool | None = None


@dataclass(frozen=True)
class Catalogue:
    services: Mapping[str, Service]
    source: str = "<memory>"

    def slos_of(self, service: str) -> tuple[Slo, ...]:
        svc = self.services.get(service)
        return svc.slos if svc else ()

    def all_slos(self) -> list[Slo]:
        return [slo for svc in self.services.values() for slo in svc.slos]

    def slo(self, service: str, name: str) -> Slo | None:
        return next((s for s in self.slos_of(service) if s.name == name), None)


def _duration_ms(value: Any, where: str) -> int:
    match = _DURATION.match(str(value))
    if not match:
        raise CatalogueError(f"{where}: {value!r} is not a duration like 5m, 1h, 3d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def _keys(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise CatalogueError(f"{where}: expected a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise CatalogueError(f"{where}: unknown key {unknown[0]!r}; allowed: {sorted(allowed)}")
    return dict(obj)


def _labels(obj: Any, where: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise CatalogueError(f"{where}: expected a mapping of label names to values")
    for key in obj:
        if not isinstance(key, str) or not LABEL_NAME.match(key):
            raise CatalogueError(f"{where}: label name {key!r} is not a valid Prometheus label")
    return {str(k): str(v) for k, v in obj.items()}


def _bad_status(value: Any, where: str) -> tuple[tuple[int, int], ...]:
    # [500, 599] is one inclusive range; [[500, 599], [429, 429]] several.
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise CatalogueError(f"{where}: expected [LOW, HIGH] or a list of such ranges")
    ranges = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
            or not 100 <= item[0] <= item[1] <= 599
        ):
            raise CatalogueError(f"{where}: {item!r} is not a status range within 100..599")
        ranges.append((item[0], item[1]))
    return tuple(ranges)


def _sli(raw: Any, where: str) -> Sli:
    obj = _keys(raw, {"kind", "bad_status", "threshold_ms"}, where)
    kind = obj.get("kind")
    if kind == "availability":
        if "threshold_ms" in obj:
            raise CatalogueError(f"{where}.threshold_ms: only for kind latency")
        bad = _bad_status(obj["bad_status"], f"{where}.bad_status") if "bad_status" in obj else None
        return Sli("availability", bad or DEFAULT_BAD_STATUS)
    if kind == "latency":
        if "bad_status" in obj:
            raise CatalogueError(f"{where}.bad_status: only for kind availability")
        threshold = obj.get("threshold_ms")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
            or threshold <= 0
        ):
            raise CatalogueError(f"{where}.threshold_ms: a positive number of milliseconds")
        return Sli("latency", threshold_ms=float(threshold))
    raise CatalogueError(f"{where}.kind: {kind!r} is not availability or latency")


def _tiers(raw: Any, period_days: int, where: str) -> tuple[AlertTier, ...]:
    tiers = {t.name: t for t in default_tiers(period_days)}
    if raw is None:
        return tuple(tiers.values())
    if not isinstance(raw, Mapping):
        raise CatalogueError(f"{where}: expected a mapping of tier names")
    for name, spec in raw.items():
        tier_where = f"{where}.{name}"
        if spec is False:  # a tier can be disabled
            if name not in tiers:
                raise CatalogueError(f"{tier_where}: no such default tier; {sorted(tiers)}")
            del tiers[name]
            continue
        obj = _keys(spec, {"severity", "long", "short", "factor"}, tier_where)
        base = tiers.get(name)
        if base is None and not {"severity", "long", "factor"} <= set(obj):
            raise CatalogueError(f"{tier_where}: a new tier needs severity, long and factor")
        severity = obj.get("severity", base.severity if base else "")
        if severity not in ("page", "ticket"):
            raise CatalogueError(f"{tier_where}.severity: page or ticket, got {severity!r}")
        long_ms = _duration_ms(obj["long"], f"{tier_where}.long") if "long" in obj else None
        long_ms = long_ms or (base.long_window_ms if base else 0)
        short_ms = (
            _duration_ms(obj["short"], f"{tier_where}.short") if "short" in obj else long_ms // 12
        )
        factor = obj.get("factor", base.factor if base else 0.0)
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
            raise CatalogueError(f"{tier_where}.factor: must be a positive number")
        if not 0 < short_ms < long_ms <= period_days * DAY_MS:
            raise CatalogueError(f"{tier_where}: need 0 < short < long <= the SLO period")
        if long_ms % 10_000 or short_ms % 10_000:
            raise CatalogueError(f"{tier_where}: windows must be multiples of 10s")
        for window in (long_ms, short_ms):
            try:
                resolution_for(window)
            except ValueError:
                raise CatalogueError(
                    f"{tier_where}: a {window // 1000}s window fits no bucket resolution "
                    "(10s steps up to 6h, 5m steps up to 3d, whole hours beyond)"
                ) from None
        changed = base and (float(factor), long_ms) != (base.factor, base.long_window_ms)
        tiers[name] = AlertTier(
            name, severity, long_ms, short_ms, float(factor),
            None if changed or base is None else base.budget_fraction,
        )  # fmt: skip
    if not tiers:
        raise CatalogueError(f"{where}: every tier is disabled; disable alerting explicitly")
    return tuple(tiers.values())


def _slo(service: str, raw: Any, where: str) -> Slo:
    keys = {"name", "objective", "period", "sli", "alerting", "labels", "runbook_url",
            "description"}  # fmt: skip
    obj = _keys(raw, keys, where)
    name = obj.get("name")
    if not isinstance(name, str) or not SLO_NAME.match(name):
        raise CatalogueError(f"{where}.name: {name!r} must match {SLO_NAME.pattern}")
    where = f"{where} ({name})"
    objective = obj.get("objective")
    if (
        isinstance(objective, bool)
        or not isinstance(objective, int | float)
        or not 0 < objective < 100
    ):
        raise CatalogueError(f"{where}.objective: a percentage strictly between 0 and 100")
    period = str(obj.get("period", "30d"))
    if period not in {f"{d}d" for d in PERIODS_DAYS}:
        raise CatalogueError(f"{where}.period: one of 7d, 28d, 30d, got {period!r}")
    period_days = int(period[:-1])
    if "sli" not in obj:
        raise CatalogueError(f"{where}.sli: required")
    alerting = _keys(obj.get("alerting") or {}, {"min_events", "tiers"}, f"{where}.alerting")
    min_events = alerting.get("min_events", DEFAULT_MIN_EVENTS)
    if isinstance(min_events, bool) or not isinstance(min_events, int) or min_events < 0:
        raise CatalogueError(f"{where}.alerting.min_events: a count >= 0")
    return Slo(
        service=service,
        name=name,
        objective_percent=float(objective),
        period_days=period_days,
        sli=_sli(obj["sli"], f"{where}.sli"),
        tiers=_tiers(alerting.get("tiers"), period_days, f"{where}.alerting.tiers"),
        min_events=min_events,
        labels=_labels(obj.get("labels"), f"{where}.labels"),
        runbook_url=obj.get("runbook_url"),
        description=str(obj.get("description", "")),
    )


def parse_catalogue(raw: Any, source: str) -> Catalogue:
    top = _keys(raw, {"services"}, source)
    services_raw = top.get("services")
    if not isinstance(services_raw, Mapping) or not services_raw:
        raise CatalogueError(f"{source}: services: need at least one service")
    services: dict[str, Service] = {}
    for svc_name, svc_raw in services_raw.items():
        where = f"{source}: services.{svc_name}"
        if not isinstance(svc_name, str) or not SERVICE_NAME.match(svc_name):
            raise CatalogueError(f"{where}: service name must match {SERVICE_NAME.pattern}")
        obj = _keys(svc_raw, {"depends_on", "slos", "labels", "policy", "names_callees"}, where)
        slos_raw = obj.get("slos") or []
        if not isinstance(slos_raw, list) or not slos_raw:
            raise CatalogueError(f"{where}.slos: need at least one SLO")
        slos = tuple(_slo(svc_name, s, f"{where}.slos[{i}]") for i, s in enumerate(slos_raw))
        names = [s.name for s in slos]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise CatalogueError(f"{where}.slos: duplicate SLO name {duplicate!r}")
        labels = _labels(obj.get("labels"), f"{where}.labels")
        slos = tuple(replace(s, labels={**labels, **s.labels}) for s in slos)
        depends = obj.get("depends_on") or []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise CatalogueError(f"{where}.depends_on: a list of service names")
        policy_keys = {"freeze_when_exhausted", "freeze_on_page", "unfreeze_above"}
        policy_raw = _keys(obj.get("policy") or {}, policy_keys, f"{where}.policy")
        for key, value in policy_raw.items():
            if key == "unfreeze_above":
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not 0 <= value < 1
                ):
                    raise CatalogueError(f"{where}.policy.unfreeze_above: a ratio in [0, 1)")
            elif not isinstance(value, bool):
                raise CatalogueError(f"{where}.policy.{key}: true or false")
        policy = BudgetPolicy(**policy_raw)
        names_callees = obj.get("names_callees")
        if names_callees is not None and not isinstance(names_callees, bool):
            raise CatalogueError(f"{where}.names_callees: true or false")
        services[svc_name] = Service(svc_name, slos, tuple(depends), labels, policy,
                                     names_callees)  # fmt: skip
    for svc in services.values():
        for dep in svc.depends_on:
            if not SERVICE_NAME.match(dep):
                raise CatalogueError(f"{source}: services.{svc.name}.depends_on: bad name {dep!r}")
    return Catalogue(services, source)
