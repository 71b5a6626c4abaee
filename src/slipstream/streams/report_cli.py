"""``slipstream report``: a blameless incident report in Markdown, from the topics and Redis.

Its subject is systems and changes: deploys are named by service, version and
change type, never by who ran them (the ``actor`` field is left out on purpose).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipstream import conventions
from slipstream.client.trace import parse_timestamp
from slipstream.settings import Settings
from slipstream.slo.deploys import JUDGING_ENDED
from slipstream.streams.read_cli import read_alerts, read_impacts, read_records, read_status


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    report = verbs.add_parser("report", parents=[common], help="blameless incident report")
    report.add_argument("--service", required=True)
    report.add_argument("--since", required=True, help="start (ISO-8601 or epoch ms)")
    report.add_argument("--until", help="end (default: now)")
    report.add_argument("--out", help="write the Markdown here (default: standard output)")


def _ts(value: str) -> int:
    return parse_timestamp(int(value) if value.isdigit() else value)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z"


@dataclass(frozen=True)
class Row:
    at_ms: int
    kind: str
    what: str


def timeline(
    service: str,
    since: int,
    until: int,
    deploys: Iterable[dict[str, Any]],
    alerts: Iterable[dict[str, Any]],
    policy: Iterable[dict[str, Any]],
    impacts: Iterable[dict[str, Any]],
) -> list[Row]:
    rows = []
    for d in deploys:
        if d["service"] == service and since <= d["timestamp"] <= until:
            rows.append(Row(d["timestamp"], "deploy",
                            f"{d['change_type']} change {d['version']} (from "
                            f"{d['previous_version'] or 'nothing'}) {d['phase']}, "
                            f"{d['rollout_fraction']:.0%} of traffic"))  # fmt: skip
    for a in alerts:
        if a["service"] == service and since <= a["event_time_ms"] <= until:
            suspect = (
                f", suspected deploy {a['suspected_deploy_id']}" if a["suspected_deploy_id"] else ""
            )
            rows.append(Row(a["event_time_ms"], "alert",
                            f"{a['slo']} {a['severity']} {a['state']}: burn "
                            f"{a['burn_rate_long']:.1f}x over {a['long_window_s'] // 60}m, "
                            f"{a['burn_rate_short']:.1f}x over {a['short_window_s'] // 60}m "
                            f"(factor {a['factor']:g}){suspect}"))  # fmt: skip
    for p in policy:
        if p["service"] == service and since <= p["timestamp"] <= until:
            who = "" if p["actor"] == "slipstream" else " (recorded override)"
            rows.append(Row(p["timestamp"], "policy", f"{p['action']}{who}: {p['reason']}"))
    for i in impacts:
        if i["service"] == service and since <= i["decided_at_ms"] <= until:
            rows.append(Row(i["decided_at_ms"], "verdict",
                            f"{i['deploy_id']} on {i['slo']}: {i['verdict']} "
                            f"(confidence {i['confidence']:.2f})"))  # fmt: skip
    return sorted(rows, key=lambda r: (r.at_ms, r.kind))


def undecided_line(impact: dict[str, Any]) -> str:
    """What the report says of a deploy with no decision: AMBIGUOUS names what it could not
    be told apart from."""
    others = impact["evidence"].get("ambiguous_with")
    if impact["verdict"] == "AMBIGUOUS" and others:
        return (f"- {impact['deploy_id']} on {impact['slo']}: cannot be told apart from "
                f"{', '.join(others)}, whose rollout moved with it; together they explain the "
                "rise.")  # fmt: skip
    if impact["evidence"].get("note") == JUDGING_ENDED:
        return (f"- {impact['deploy_id']} on {impact['slo']}: under suspicion earlier, judged "
                "to the end of its window and left undecided (its harm was neither confirmed "
                "nor cleared); no decision will come.")  # fmt: skip
    return (f"- {impact['deploy_id']} on {impact['slo']}: no decision yet (too little "
            "evidence, or no version split to compare).")  # fmt: skip


def _share(counts: Any) -> str:
    """``[bad, total]`` as a bad rate with its counts."""
    bad, total = counts
    return f"{bad / total if total else 0.0:.3%} ({bad}/{total})"


def evidence_line(e: dict[str, Any]) -> str:
    """What a verdict rests on, in the terms of the test that decided it: the versions side
    by side for a version split; the SLO before and after the change (and how far it rose
    beyond the services around it) for a before/after comparison."""
    if e.get("method") == "before_after" and e.get("pre") and e.get("post"):
        line = (f"  Evidence (before/after): bad rate {_share(e['post'])} after the change "
                f"against {_share(e['pre'])} before it; rate ratio "
                f"{e.get('rate_ratio') or 0:.1f}x (p = {e.get('p_value', 1.0):.2g})")  # fmt: skip
        if e.get("adjusted_rate_ratio") is not None:
            line += (f", {e['adjusted_rate_ratio']:.1f}x beyond the rise of the services "
                     "around it")  # fmt: skip
        if e.get("onset"):
            line += f"; onset {e['onset']}"
        controls = e.get("controls") or {}
        if controls.get("usable"):
            line += (f"; {controls['usable']} control services, "
                     f"{controls.get('degraded', 0)} degraded")  # fmt: skip
        return line + "."
    ci = e.get("rate_ratio_ci95") or [None, None]
    return (f"  Evidence ({e.get('method')}): bad rate {e.get('bad_rate_new') or 0:.3%} on the "
            f"new version against {e.get('bad_rate_old') or 0:.3%} on the old "
            f"({e.get('bad_new')}/{e.get('total_new')} vs {e.get('bad_old')}/"
            f"{e.get('total_old')}); rate ratio {e.get('rate_ratio') or 0:.1f}x "
            f"(95% interval {ci[0] or 0:.1f} to {ci[1] or 0:.1f}); "
            f"e-value {e.get('e_value', 0):.3g}.")  # fmt: skip


def render(settings: Settings, service: str, since: int, until: int) -> str:
    deploys = read_records(settings, conventions.DEPLOYS_TOPIC, "DeployEvent")
    alerts = read_alerts(settings)
    policy = read_records(settings, conventions.POLICY_TOPIC, "PolicyEvent")
    impacts = [i for i in read_impacts(settings) if i["service"] == service]
    status = [s for s in read_status(settings) if s["service"] == service]
    rows = timeline(service, since, until, deploys, alerts, policy, impacts)
    lines = [
        f"# Incident report: {service}",
        "",
        f"Window: {_iso(since)} to {_iso(until)}. Written by slipstream from the events on "
        "its topics; it describes systems and changes, not people.",
        "",
        "## Error budget",
        "",
        "| SLO | objective | period | budget left now | burn 1h | burn 6h | frozen |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in status:
        b = s["burn_rates"]
        frozen = "yes" if s["frozen"] else "no"
        lines.append(f"| {s['slo']} | {s['objective']}% | {s['period_days']}d | "
                     f"{s['budget_remaining_ratio']:.1%} | {b['1h']:.2f} | {b['6h']:.2f} | "
                     f"{frozen} |")  # fmt: skip
    lines += ["", "## Timeline", "", "| time (UTC) | kind | what |", "|---|---|---|"]
    lines += [f"| {_iso(r.at_ms)} | {r.kind} | {r.what} |" for r in rows]
    attributed = [i for i in impacts if i["verdict"] in ("ATTRIBUTED", "SUSPECTED")]
    lines += ["", "## Deploys that explain the budget burn", ""]
    if not attributed:
        lines.append("No deploy in this window is attributed the burn.")
    for i in attributed:
        e = i["evidence"]
        lines += [
            f"- **{i['deploy_id']}** ({i['slo']}): {i['verdict']} with confidence "
            f"{i['confidence']:.2f}; spent {i['budget_consumed_ratio']:.1%} of the period's "
            "error budget.",
            evidence_line(e),
        ]
        if e.get("rollback_recommended"):
            lines.append(
                "  A rollback was recommended: it burned fast at two evaluations in a row."
            )
    unknown = [i for i in impacts if i["verdict"] in ("INCONCLUSIVE", "AMBIGUOUS")]
    unexplained = [
        a for a in alerts
        if a["service"] == service and a["state"] == "firing" and not a["suspected_deploy_id"]
        and since <= a["event_time_ms"] <= until
    ]  # fmt: skip
    lines += ["", "## What is still unknown", ""]
    if not unknown and not unexplained:
        lines.append("Nothing: every alert in the window has a deploy verdict behind it.")
    lines += [undecided_line(i) for i in unknown]
    for a in unexplained:
        lines.append(f"- {a['slo']} {a['severity']} alert at {_iso(a['event_time_ms'])}: no "
                     "deploy explains it.")  # fmt: skip
    return "\n".join(lines) + "\n"


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    since = _ts(args.since)
    until = _ts(args.until) if args.until else time.time_ns() // 1_000_000
    text = render(settings, args.service, since, until)
    if args.out:
        Path(args.out).write_text(text)
        print(f"report written to {args.out}")
    else:
        sys.stdout.write(text)
    return 0
