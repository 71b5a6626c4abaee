"""OpenSLO v1 documents (``SLO``, ``SLI``, ``AlertPolicy``, ``AlertCondition``) to a
catalogue.

Expressed: the SLO's service, name, description, labels, a rolling 7d/28d/30d (1w/4w)
window, an occurrences objective (``target`` or ``targetPercent``), a ratio SLI whose
Prometheus queries have a shape slipstream reads (``promql.guess_sli``), and burn-rate
alert conditions (severity page or ticket, threshold, lookback window) as alert tiers
in place of the default ones. Everything else is reported by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from slipstream.spec_import.promql import guess_sli
from slipstream.spec_import.report import ImportResult, slo_name

API_VERSION = "openslo/v1"
DEFAULT_TIER_NAMES = ("page-1h", "page-6h", "ticket-1d", "ticket-3d")
_PERIODS = {"7d": "7d", "1w": "7d", "28d": "28d", "4w": "28d", "30d": "30d"}
_DURATION = re.compile(r"^(\d+)([smhdw])$")
NO_ALERT_AFTER = (
    "slipstream fires when the long and the short window (long/12) both burn above the "
    "threshold: there is no `for`"
)
_SLO_SPEC_KEYS = {"service", "description", "indicator", "indicatorRef", "timeWindow",
                  "budgetingMethod", "objectives", "alertPolicies"}  # fmt: skip


def import_openslo(docs: list[Any], source: str) -> ImportResult:
    result = ImportResult()
    by_kind: dict[str, dict[str, Mapping[str, Any]]] = {}
    slos: list[tuple[str, Mapping[str, Any]]] = []
    for d, doc in enumerate(docs):
        where = f"{source}[{d}]"
        if not isinstance(doc, Mapping) or doc.get("apiVersion") != API_VERSION:
            result.skipped.append(f"{where}: not an {API_VERSION} document")
            continue
        kind = str(doc.get("kind"))
        name = str((doc.get("metadata") or {}).get("name", ""))
        if kind == "SLO":
            slos.append((f"{where} (SLO {name})", doc))
        elif kind in ("SLI", "AlertPolicy", "AlertCondition"):
            by_kind.setdefault(kind, {})[name] = doc
        else:
            result.note(f"{where} ({kind} {name})", f"kind {kind} has no catalogue equivalent")
    for where, doc in slos:
        _slo(result, by_kind, doc, where)
    return result


def _slo(result: ImportResult, by_kind: dict[str, dict[str, Mapping[str, Any]]],
         doc: Mapping[str, Any], where: str) -> None:  # fmt: skip
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    for key in sorted(set(spec) - _SLO_SPEC_KEYS):
        result.note(f"{where}.spec.{key}", "not an OpenSLO v1 SLO field")
    service = str(spec.get("service", ""))
    method = spec.get("budgetingMethod", "Occurrences")
    if method != "Occurrences":
        result.skipped.append(f"{where}.spec.budgetingMethod: {method} (slipstream budgets "
                              "count occurrences: good events over all events)")  # fmt: skip
        return
    windows = spec.get("timeWindow") or [{"duration": "30d", "isRolling": True}]
    window = windows[0]
    if len(windows) > 1:
        result.note(f"{where}.spec.timeWindow[1:]", "one window per SLO: the first is used")
    if not window.get("isRolling", False) or "calendar" in window:
        result.skipped.append(f"{where}.spec.timeWindow: calendar-aligned windows (slipstream's "
                              "are rolling)")  # fmt: skip
        return
    period = _PERIODS.get(str(window.get("duration")))
    if period is None:
        result.skipped.append(f"{where}.spec.timeWindow.duration: {window.get('duration')!r} "
                              "(rolling 7d, 28d or 30d)")  # fmt: skip
        return
    objectives = spec.get("objectives") or []
    if not objectives:
        result.skipped.append(f"{where}.spec.objectives: none")
        return
    objective = objectives[0]
    if len(objectives) > 1:
        result.note(f"{where}.spec.objectives[1:]", "one objective per SLO: the first is used")
    for key in sorted(set(objective) - {"displayName", "target", "targetPercent"}):
        result.note(f"{where}.spec.objectives[0].{key}", "threshold and time-slice objectives "
                                                         "are not expressible")  # fmt: skip
    if "targetPercent" in objective:
        percent = float(objective["targetPercent"])
    elif "target" in objective:
        percent = round(float(objective["target"]) * 100, 6)
    else:
        result.skipped.append(f"{where}.spec.objectives[0]: no target")
        return
    sli_doc = spec.get("indicator")
    if sli_doc is None and spec.get("indicatorRef"):
        sli_doc = by_kind.get("SLI", {}).get(str(spec["indicatorRef"]))
        if sli_doc is None:
            result.skipped.append(f"{where}.spec.indicatorRef: no SLI {spec['indicatorRef']!r}")
            return
    sli = _sli(result, sli_doc or {}, where)
    if sli is None:
        return
    slo: dict[str, Any] = {"name": slo_name(str(meta.get("name", ""))),
                           "objective": percent, "period": period, "sli": sli}  # fmt: skip
    description = spec.get("description") or meta.get("displayName")
    if description:
        slo["description"] = str(description)
    labels = meta.get("labels") or {}
    if isinstance(labels, Mapping) and labels:
        slo["labels"] = {str(k): ",".join(map(str, v)) if isinstance(v, list) else str(v)
                         for k, v in labels.items()}  # fmt: skip
    tiers = _tiers(result, by_kind, spec.get("alertPolicies") or [], where)
    if tiers:
        slo["alerting"] = {"tiers": {**dict.fromkeys(DEFAULT_TIER_NAMES, False), **tiers}}
    result.add_slo(service, slo)


def _query(metric: Any) -> str | None:
    source = (metric or {}).get("metricSource") or {}
    spec = source.get("spec") or {}
    query = spec.get("query") or spec.get("promql")
    return str(query) if query else None


def _sli(result: ImportResult, doc: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    spec = doc.get("spec") or {}
    if "thresholdMetric" in spec:
        result.skipped.append(f"{where}: a thresholdMetric SLI (a threshold on a metric's "
                              "value, not a ratio of request events)")  # fmt: skip
        return None
    ratio = spec.get("ratioMetric")
    if not ratio:
        result.skipped.append(f"{where}: no ratioMetric SLI")
        return None
    if ratio.get("rawType") or ratio.get("raw"):
        result.note(f"{where}: ratioMetric.raw", "a precomputed ratio is read only for its "
                                                  "query's shape")  # fmt: skip
    guess = guess_sli(bad=_query(ratio.get("bad")) or _query(ratio.get("raw")),
                      good=_query(ratio.get("good")))  # fmt: skip
    if guess.sli is None:
        result.skipped.append(f"{where}: SLI: {guess.reason}")
    return guess.sli


def _duration(value: Any) -> str | None:
    match = _DURATION.match(str(value))
    if not match:
        return None
    n, unit = int(match.group(1)), match.group(2)
    return f"{n * 7}d" if unit == "w" else f"{n}{unit}"


def _tiers(result: ImportResult, by_kind: dict[str, dict[str, Mapping[str, Any]]],
           policies: list[Any], where: str) -> dict[str, Any]:  # fmt: skip
    tiers: dict[str, Any] = {}
    for p, ref in enumerate(policies):
        pw = f"{where}.spec.alertPolicies[{p}]"
        name = ref if isinstance(ref, str) else (ref or {}).get("alertPolicyRef")
        policy = by_kind.get("AlertPolicy", {}).get(str(name)) if name else ref
        if not isinstance(policy, Mapping):
            result.note(pw, f"no AlertPolicy {name!r}")
            continue
        pspec = policy.get("spec") or {}
        for key in sorted(set(pspec) - {"conditions", "description"}):
            result.note(f"{pw}.spec.{key}", "notification settings and targets belong to "
                                            "Alertmanager's routing")  # fmt: skip
        for c, cref in enumerate(pspec.get("conditions") or []):
            cw = f"{pw}.spec.conditions[{c}]"
            cname = (cref or {}).get("conditionRef")
            cond = by_kind.get("AlertCondition", {}).get(str(cname)) if cname else cref
            if not isinstance(cond, Mapping):
                result.note(cw, f"no AlertCondition {cname!r}")
                continue
            tier = _tier(result, cond, cw)
            if tier is not None:
                tiers[slo_name(str((cond.get("metadata") or {}).get("name", f"tier-{c}")))] = tier
    return tiers


def _tier(result: ImportResult, cond: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    spec = cond.get("spec") or {}
    body = spec.get("condition") or {}
    if body.get("kind") != "burnrate":
        result.note(f"{where}.spec.condition.kind", f"{body.get('kind')!r}: only burnrate")
        return None
    severity = str(spec.get("severity", "")).lower()
    if severity not in ("page", "ticket"):
        result.note(f"{where}.spec.severity", f"{spec.get('severity')!r}: page or ticket")
        return None
    if body.get("op") not in (None, "gte", "gt"):
        result.note(f"{where}.spec.condition.op", f"{body.get('op')!r}: a burn-rate alert "
                                                  "fires above its threshold (gte)")  # fmt: skip
        return None
    long = _duration(body.get("lookbackWindow"))
    if long is None:
        result.note(f"{where}.spec.condition.lookbackWindow", "a duration like 1h is needed")
        return None
    if body.get("alertAfter"):
        result.note(f"{where}.spec.condition.alertAfter", NO_ALERT_AFTER)
    return {"severity": severity, "long": long, "factor": float(body["threshold"])}
