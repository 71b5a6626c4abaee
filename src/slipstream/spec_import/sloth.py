"""Sloth ``prometheus/v1`` specs to a catalogue.

Expressed: service, SLO name, objective, description, labels, the SLI when its PromQL has
a shape slipstream can read (``promql.guess_sli``), disabled page or ticket alerts, and
a runbook URL among the alert annotations. Sloth's tiers are the Workbook's, as ours;
its period is 30 days unless the command line changes it, as ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slipstream.spec_import.promql import guess_sli
from slipstream.spec_import.report import ImportResult, slo_name

SPEC_VERSION = "prometheus/v1"
_SLO_KEYS = {"name", "objective", "description", "labels", "sli", "alerting"}
_ALERTING_KEYS = {"name", "labels", "annotations", "page_alert", "ticket_alert"}
_RUNBOOK_KEYS = ("runbook_url", "runbook")
OWN_ANNOTATIONS = "alert annotations are slipstream's (summary, burn rates, budget, deploy)"
TIERS_BY_SEVERITY = {"page": ("page-1h", "page-6h"), "ticket": ("ticket-1d", "ticket-3d")}


def import_sloth(docs: list[Any], source: str) -> ImportResult:
    result = ImportResult()
    for d, doc in enumerate(docs):
        where = f"{source}[{d}]" if len(docs) > 1 else source
        if not isinstance(doc, Mapping) or doc.get("version") != SPEC_VERSION:
            version = doc.get("version") if isinstance(doc, Mapping) else None
            result.skipped.append(f"{where}: not a Sloth {SPEC_VERSION} spec ({version!r})")
            continue
        for key in sorted(set(doc) - {"version", "service", "labels", "slos"}):
            result.note(f"{where}.{key}", "not a Sloth prometheus/v1 field")
        service = str(doc.get("service", ""))
        labels = {str(k): str(v) for k, v in (doc.get("labels") or {}).items()}
        for i, raw in enumerate(doc.get("slos") or []):
            _slo(result, service, labels, raw, f"{where}.slos[{i}]")
    return result


def _slo(result: ImportResult, service: str, labels: dict[str, str], raw: Any,
         where: str) -> None:  # fmt: skip
    if not isinstance(raw, Mapping):
        result.skipped.append(f"{where}: not a mapping")
        return
    name = str(raw.get("name", ""))
    where = f"{where} ({name})"
    for key in sorted(set(raw) - _SLO_KEYS):
        result.note(f"{where}.{key}", "not a Sloth SLO field")
    sli_raw = raw.get("sli") or {}
    if "events" in sli_raw:
        events = sli_raw["events"] or {}
        guess = guess_sli(bad=events.get("error_query"), good=None)
        if guess.sli is None and events.get("total_query"):
            guess = guess_sli(bad=events.get("error_query"), good=events.get("total_query"))
    elif "raw" in sli_raw:
        guess = guess_sli(bad=(sli_raw["raw"] or {}).get("error_ratio_query"))
    elif "plugin" in sli_raw:
        result.skipped.append(f"{where}.sli.plugin: SLI plugins run PromQL slipstream "
                              "cannot see; write the SLI as events or raw")  # fmt: skip
        return
    else:
        result.skipped.append(f"{where}.sli: needs events, raw or plugin")
        return
    if guess.sli is None:
        result.skipped.append(f"{where}.sli: {guess.reason}")
        return
    slo: dict[str, Any] = {"name": slo_name(name), "objective": raw.get("objective"),
                           "period": "30d", "sli": guess.sli}  # fmt: skip
    if raw.get("description"):
        slo["description"] = str(raw["description"])
    slo_labels = {**labels, **{str(k): str(v) for k, v in (raw.get("labels") or {}).items()}}
    if slo_labels:
        slo["labels"] = slo_labels
    alerting = raw.get("alerting") or {}
    for key in sorted(set(alerting) - _ALERTING_KEYS):
        result.note(f"{where}.alerting.{key}", "not a Sloth alerting field")
    if alerting.get("name"):
        result.note(f"{where}.alerting.name", "alerts are named by slipstream (service, SLO, "
                                              "severity); the Prometheus rules file gives "
                                              "them Sloth's labels")  # fmt: skip
    annotations = dict(alerting.get("annotations") or {})
    for key in _RUNBOOK_KEYS:
        if key in annotations:
            slo["runbook_url"] = str(annotations.pop(key))
            break
    for key in sorted(annotations):
        result.note(f"{where}.alerting.annotations.{key}", OWN_ANNOTATIONS)
    if alerting.get("labels"):
        result.note(f"{where}.alerting.labels", "alert routing labels: put them on the SLO's "
                                                "labels, which every alert carries")  # fmt: skip
    tiers: dict[str, bool] = {}
    for severity in ("page", "ticket"):
        spec = alerting.get(f"{severity}_alert") or {}
        if spec.get("disable"):
            tiers |= {tier: False for tier in TIERS_BY_SEVERITY[severity]}
        for key in sorted(set(spec) - {"disable"}):
            result.note(f"{where}.alerting.{severity}_alert.{key}",
                        "per-severity alert labels and annotations are not kept")  # fmt: skip
    if tiers:
        slo["alerting"] = {"tiers": tiers}
    result.add_slo(service, slo)
