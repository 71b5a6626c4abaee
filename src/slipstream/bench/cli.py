"""``slipstream bench``: throughput against the baseline ladder (default, ``bench.perf``) and
``slipstream bench correlation``: the labelled correlation benchmark, with its baselines."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from slipstream.bench.correlation import (
    DETECTABLE_EXCESS,
    FRESH_SEEDS,
    REPORTING_SEEDS,
    TUNING_SEEDS,
    pooled,
    run_seed,
)
from slipstream.bench.correlation_explain import DIAGNOSIS_SEEDS, SURVEY_SEEDS, explained_lines
from slipstream.settings import Settings

SHORT_EVENTS, SHORT_REPEATS, SHORT_SAMPLES, SHORT_SIZES = 100_000, 1, 2, (100, 1000)
FULL_EVENTS, FULL_REPEATS, FULL_SAMPLES, FULL_SIZES = 1_000_000, 3, 10, (100, 1000, 10_000)
SHORT_RECOVERY, FULL_RECOVERY = 100_000, 1_000_000  # changelog records
HOTPATH_EVENTS, HOTPATH_REPEATS = 100_000, 5


def run_perf_bench(args: argparse.Namespace, settings: Settings) -> int:
    from slipstream.bench import perf

    events = args.events or (SHORT_EVENTS if args.short else FULL_EVENTS)
    repeats = args.repeats or (SHORT_REPEATS if args.short else FULL_REPEATS)
    samples = args.latency_samples or (SHORT_SAMPLES if args.short else FULL_SAMPLES)
    sizes = SHORT_SIZES if args.short else FULL_SIZES
    recovery = SHORT_RECOVERY if args.short else FULL_RECOVERY
    result = perf.run_perf(settings, events, repeats, args.services, samples, sizes,
                           recovery_records=args.recovery_records or recovery)  # fmt: skip
    print(perf.report(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


SEED_SETS = {"reporting": REPORTING_SEEDS, "tuning": TUNING_SEEDS, "fresh": FRESH_SEEDS,
             "diagnosis": DIAGNOSIS_SEEDS, "survey": SURVEY_SEEDS}  # fmt: skip

# The targets: (key, floor or ceiling, True when higher is better).
TARGETS = (
    ("precision", 0.95, True),
    ("recall", 0.90, True),
    ("top1_episode_attribution", 0.90, True),
    ("false_blame_external", 0.05, False),
    ("median_minutes_to_attribution_10x_1rps", 5.0, False),
)


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    bench = verbs.add_parser("bench", parents=[common], help="benchmarks")
    bench.add_argument(
        "which",
        nargs="?",
        choices=["perf", "correlation", "hotpath"],
        default="perf",
        help="hotpath: µs per event of each stage of the worker's message path, offline "
        "(uses --events, --repeats, --services; no stack needed)",
    )
    bench.add_argument("--out", help="write the results as JSON here")
    perf = bench.add_argument_group("perf (needs the stack: slipstream stack up)")
    perf.add_argument(
        "--short",
        action="store_true",
        help=f"{SHORT_EVENTS:,} events, {SHORT_REPEATS} runs per step (~3 min)",
    )
    perf.add_argument("--events", type=int, help=f"events per topic (default {FULL_EVENTS:,})")
    perf.add_argument("--repeats", type=int, help=f"runs per step (default {FULL_REPEATS})")
    perf.add_argument("--services", type=int, default=50, help="services (2 SLOs each)")
    perf.add_argument("--latency-samples", type=int, help="alert latency samples per load level")
    perf.add_argument(
        "--recovery-records",
        type=int,
        help=f"changelog records for the recovery run (default {FULL_RECOVERY:,})",
    )
    corr = bench.add_argument_group("correlation")
    corr.add_argument("--hours", type=float, default=24.0, help="simulated hours per seed")
    corr.add_argument("--seeds", choices=list(SEED_SETS), default="reporting",
                      help="reporting 101-110, tuning 1-12, fresh 13-36 (neither), diagnosis "
                      "37-84 and survey 201-260 (read to find what goes wrong)")  # fmt: skip
    corr.add_argument("--explain", action="store_true",
                      help="list each false attribution and missed deploy with its evidence "
                      "(read the tuning, diagnosis or survey seeds', not the reporting "
                      "ones)")  # fmt: skip
    corr.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes")


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.which == "perf":
        return run_perf_bench(args, settings)
    if args.which == "hotpath":
        from slipstream.bench import hotpath

        return hotpath.main(args.events or HOTPATH_EVENTS, args.services,
                            args.repeats or HOTPATH_REPEATS)  # fmt: skip
    seeds = SEED_SETS[args.seeds]
    started = time.monotonic()
    results = run_seeds(seeds, args.hours, args.explain, max(args.jobs, 1))
    summary = pooled(results)
    summary["seconds"] = time.monotonic() - started
    print(report(summary, f"{len(seeds)} {args.seeds} seeds x {args.hours:g} h"))
    if args.explain:
        entries = [e for r in results for e in r["explained"]]
        print(f"\n## Why ({len(entries)} false attributions and missed deploys)\n")
        print("\n".join(explained_lines(entries)))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"summary": summary, "seeds": results}, fh, indent=2, default=str)
    return 0


def run_seeds(seeds: Sequence[int], hours: float, explain: bool, jobs: int) -> list[dict[str, Any]]:
    """Score the seeds in order, in ``jobs`` processes (each seed is independent and
    CPU-bound; one job runs them here, where a profiler sees them), with a progress line
    per seed."""
    score = functools.partial(run_seed, hours=hours, explain=explain)
    started = time.monotonic()
    results = []
    with ProcessPoolExecutor(jobs) if jobs > 1 else contextlib.nullcontext() as pool:
        scored = map(score, seeds) if pool is None else pool.map(score, seeds)
        for i, (seed, result) in enumerate(zip(seeds, scored, strict=True), 1):
            results.append(result)
            print(f"[{i}/{len(seeds)}] seed {seed}: {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    return results


def report(summary: dict[str, Any], title: str) -> str:
    """The Markdown the README quotes."""
    lines = [
        f"## Deploy correlation, {title}",
        "",
        f"{summary['deploys']} deploys, {summary['bad_deploys']} bad, "
        f"{summary['detectable_bad_deploys']} of them detectable (>= {DETECTABLE_EXCESS:g} "
        f"excess bad events within 2 h), {summary['incidents']} external incidents; "
        f"{summary.get('seconds', 0):.0f} s.",
        "",
        "| method | precision | recall (detectable) | recall (all bad) | F1 |",
        "|---|---|---|---|---|",
    ]
    rows = [("slipstream", summary), *summary["baselines"].items()]
    for name, s in rows:
        lines.append(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | "
                     f"{s['recall_all_bad']:.3f} | {s['f1']:.3f} |")  # fmt: skip
    lines.append("")
    missed = []
    for key, bound, higher in TARGETS:
        value = summary[key]
        ok = value is not None and (value >= bound if higher else value <= bound)
        missed += [] if ok else [key]
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"- {key}: {shown} (target {'>=' if higher else '<='} {bound:g})")
    lines.append(f"- inconclusive_rate (all deploys): {summary['inconclusive_rate']:.3f}")
    lines.append(f"- left AMBIGUOUS with an overlapping change: {summary['ambiguous_deploys']} "
                 f"deploys, {summary['ambiguous_bad_deploys']} of them bad")  # fmt: skip
    floor = summary.get("oracle_median_minutes_10x_1rps")
    if floor is not None:
        n = summary["attributions_10x_1rps"]
        lines.append(f"- the same {n} attributions' floor: median {floor:.3f} min "
                     "(an SPRT that knows the baseline and the effect)")  # fmt: skip
    lines += ["", "| slice | detectable | attributed |", "|---|---|---|"]
    for key, counts in summary["recall_by_slice"].items():
        lines.append(f"| {key} | {counts['detectable']} | {counts['attributed']} |")
    best = max(b["f1"] for b in summary["baselines"].values())
    lines += ["", f"beats every naive baseline on F1: {'yes' if summary['f1'] > best else 'no'}",
              f"targets of the issue not met: {', '.join(missed) or 'none'}"]  # fmt: skip
    return "\n".join(lines)
