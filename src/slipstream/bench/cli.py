"""``slipstream bench correlation``: the labelled correlation benchmark, with its baselines."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from slipstream.bench.correlation import REPORTING_SEEDS, TUNING_SEEDS, pooled, run_seed

TARGETS = {"precision": 0.95, "recall": 0.90, "top1_episode_attribution": 0.90}


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    bench = verbs.add_parser("bench", parents=[common], help="benchmarks")
    bench.add_argument("which", choices=["correlation"])
    bench.add_argument("--hours", type=float, default=24.0, help="simulated hours per seed")
    bench.add_argument("--seeds", choices=["reporting", "tuning"], default="reporting")
    bench.add_argument("--out", help="write the results as JSON here")


def run_bench(args: argparse.Namespace) -> int:
    seeds = REPORTING_SEEDS if args.seeds == "reporting" else TUNING_SEEDS
    results = []
    started = time.monotonic()
    for seed in seeds:
        t0 = time.monotonic()
        results.append(run_seed(seed, args.hours))
        print(f"seed {seed}: {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    summary = pooled(results)
    summary["seconds"] = time.monotonic() - started
    print(f"## Deploy correlation, {len(seeds)} {args.seeds} seeds x {args.hours:g} h\n")
    print("| method | precision | recall | F1 |\n|---|---|---|---|")
    print(f"| slipstream | {summary['precision']:.3f} | {summary['recall']:.3f} | "
          f"{summary['f1']:.3f} |")  # fmt: skip
    for name, s in summary["baselines"].items():
        print(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} |")
    print()
    for key in ("top1_episode_attribution", "false_blame_external", "inconclusive_rate",
                "median_minutes_to_attribution_10x_1rps"):  # fmt: skip
        print(f"- {key}: {summary[key]:.3f}")
    misses = [k for k, floor in TARGETS.items() if not summary[k] >= floor]
    if summary["false_blame_external"] > 0.05:
        misses.append("false_blame_external")
    print(f"\ntargets of the issue not met: {', '.join(misses) or 'none'}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"summary": summary, "seeds": results}, fh, indent=2, default=str)
    return 0
