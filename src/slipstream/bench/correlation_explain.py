"""Why the correlation benchmark scored a deploy wrong: each false attribution and each missed
detectable bad deploy of a seed, with its truth, the verdicts it got and when, the evidence
of its last verdict, and what else happened around it (incidents and blips on its service,
deploys of the services it calls). Reading these is how the statistics are improved; only
tuning and diagnosis seeds should be read, never the reporting ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from slipstream.bench.world import HOUR_MS, MINUTE_MS, TruthDeploy, World
from slipstream.slo.deploys import Impact

DIAGNOSIS_SEEDS: Final = tuple(range(37, 85))  # neither tuned on, fresh, nor reported
# More to read, first run at stop 43: 60 worlds more than diagnosis shows the rarer misses.
SURVEY_SEEDS: Final = tuple(range(201, 261))
# The evidence fields worth a line (the rest is in the JSON of --out).
EVIDENCE_KEYS: Final = ("method", "onset", "note", "rate_ratio", "p_value", "recent_rate_ratio",
                        "beyond_burst_rate_ratio", "adjusted_rate_ratio", "e_value", "pre",
                        "post", "controls")  # fmt: skip


def _minutes(ms: int, origin: int) -> float:
    return round((ms - origin) / MINUTE_MS, 1)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.3g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _surroundings(d: TruthDeploy, world: World) -> dict[str, Any]:
    """Incidents and blips on the deploy's service, and its callees' deploys, near it."""
    near = range(d.start_ms - 10 * MINUTE_MS, d.start_ms + 2 * HOUR_MS)
    return {
        "incidents": [
            {"start_min": _minutes(i.start_ms, d.start_ms),
             "minutes": _minutes(i.end_ms, i.start_ms), "multiplier": round(i.multiplier, 1),
             "services": len(i.services), "after_a_deploy": i.after_deploy}
            for i in world.incidents if d.service in i.services and i.start_ms in near
        ],
        "blips": [
            {"start_min": _minutes(start, d.start_ms), "minutes": _minutes(end, start),
             "multiplier": round(mult, 1)}
            for service, start, end, mult in world.blips if service == d.service and start in near
        ],
        "callee_deploys": [
            {"deploy": o.deploy_id, "bad": o.bad, "start_min": _minutes(o.start_ms, d.start_ms)}
            for callee in world.callees[d.service] for o in world.by_service[callee]
            if abs(o.start_ms - d.start_ms) < HOUR_MS
        ],
    }  # fmt: skip


def explain(
    world: World,
    seed: int,
    impacts: Iterable[Impact],
    attributed: set[str],
    detectable: set[str],
    judged_ms: int,
) -> list[dict[str, Any]]:
    """One entry per false attribution ("false") and per missed detectable deploy ("missed"),
    in the order of the deploys' starts."""
    truth = {d.deploy_id: d for d in world.deploys}
    history: dict[str, dict[str, float]] = {}
    last: dict[str, Impact] = {}
    for impact in impacts:
        d = truth.get(impact.deploy.deploy_id)
        if d is None or impact.decided_at_ms - d.start_ms > judged_ms:
            continue
        seen = history.setdefault(d.deploy_id, {})
        seen.setdefault(impact.verdict.verdict, _minutes(impact.decided_at_ms, d.start_ms))
        if last.get(d.deploy_id) is None or last[d.deploy_id].verdict.verdict != "ATTRIBUTED":
            last[d.deploy_id] = impact  # the attribution, or else the latest verdict
    entries = []
    for d in world.deploys:
        wrong = d.deploy_id in attributed and not d.bad
        missed = d.deploy_id in detectable and d.deploy_id not in attributed
        if not (wrong or missed):
            continue
        final = last.get(d.deploy_id)
        evidence = {} if final is None else {
            k: _rounded(final.evidence[k]) for k in EVIDENCE_KEYS
            if final.evidence.get(k) is not None
        }  # fmt: skip
        entries.append({
            "seed": seed, "kind": "false" if wrong else "missed", "deploy": d.deploy_id,
            "strategy": d.strategy, "tagged": world.tagged[d.service],
            "rps": round(world.rates[d.service], 2),
            "baseline_error": round(world.baseline[d.service], 5),
            "ratio": round(d.ratio, 1), "onset": d.onset,
            "onset_delay_min": _minutes(d.onset_delay_ms, 0),
            "expected_excess": round(d.expected_excess),
            "rollback_min": None if d.rollback_ms is None else _minutes(d.rollback_ms, d.start_ms),
            "overlaps": d.overlaps, "verdicts": history.get(d.deploy_id, {}),
            "last_verdict": None if final is None else final.verdict.verdict,
            "evidence": evidence, **_surroundings(d, world),
        })  # fmt: skip
    return entries


def explained_lines(entries: Iterable[dict[str, Any]]) -> list[str]:
    """Two lines per entry: what it was and what it got, then the evidence and context."""
    lines = []
    for e in entries:
        truth = ("good" if e["kind"] == "false"
                 else f"{e['ratio']}x {e['onset']} (+{e['onset_delay_min']} min), "
                      f"{e['expected_excess']} excess bad")  # fmt: skip
        lines.append(
            f"- seed {e['seed']} {e['kind'].upper()} {e['deploy']}: {e['strategy']}, "
            f"{'tagged' if e['tagged'] else 'untagged'}, {e['rps']} rps, {truth}; "
            f"verdicts {e['verdicts'] or 'none'}"
        )
        context = {k: e[k] for k in ("incidents", "blips", "callee_deploys") if e[k]}
        lines.append(f"  evidence {e['evidence'] or '-'}; around it {context or '-'}")
    return lines
