"""``slipstream bench``: the baseline ladder and the real pipeline on the same pre-loaded topics.

Every figure is a ratio to a baseline measured in the same run (PERFORMANCE.md):
these machines are shared and noisy. Each step drains the same topic ``repeats``
times; the median and the spread (min, max) are reported.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka.admin import KafkaAdminClient

from slipstream.bench import ladder, latency
from slipstream.bench.load import EVENT_RATE, SHAPES, Load, preload, write_catalogue
from slipstream.bench.memory import measure_in_subprocess
from slipstream.bench.pipeline import consumed, run_pipeline, worker_settings
from slipstream.bench.recovery import run_recovery
from slipstream.bench.worker_memory import measure_worker
from slipstream.catalogue_file import load_catalogue
from slipstream.schemas.request_rows import compiled_reader
from slipstream.settings import Settings
from slipstream.slo.catalogue import Catalogue
from slipstream.stack.kafka import ensure_jars
from slipstream.streams.supervise import worker_process
from slipstream.streams.topics import ensure_topics

BENCH_METRICS_PORT = 9471
PACKAGES = ("fastavro", "aiokafka", "kafka-python", "faust-streaming", "redis",
            "prometheus-client", "crc32c", "uvloop")  # fmt: skip


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}  # fmt: skip


def versions(settings: Settings) -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version(), "kafka": settings.kafka_version}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    found["java"] = (java.stderr.splitlines() or ["?"])[0]
    # kafka-python checks record CRCs with the crc32c package when it can import it;
    # aiokafka has its own C extension unless AIOKAFKA_NO_EXTENSIONS is set.
    from aiokafka.util import NO_EXTENSIONS
    from kafka.record import util

    found["crc32c_active"] = getattr(util, "crc32c_c", None) is not None
    found["aiokafka_c_extensions"] = not NO_EXTENSIONS
    found["uvloop_active"] = found["uvloop"] is not None
    # P reads request messages with it (schemas/request_rows.py); B2 and B3 use fastavro.
    found["compiled_reader_active"] = compiled_reader is not None
    return found


def _measure(name: str, shape: str, repeats: int, fn: Callable[[], float]) -> dict[str, Any]:
    runs = []
    for i in range(repeats):
        value = fn()
        runs.append(value)
        say(f"  [{shape}] {name} run {i + 1}/{repeats}: {value:,.0f} events/s")
    return spread(runs)


def _cleanup(settings: Settings, namespaces: list[str], groups: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        topics = [t for t in admin.list_topics()
                  if any(t.startswith(f"{ns}.") for ns in namespaces)
                  or any(t.startswith(f"{g}-") for g in groups)]  # fmt: skip
        if topics:
            admin.delete_topics(topics)
    finally:
        admin.close()
    for ns in namespaces:  # the workers' local checkpoints
        shutil.rmtree(Path(settings.stack_dir) / "worker" / ns, ignore_errors=True)


def run_perf(
    settings: Settings,
    events: int,
    repeats: int,
    services: int,
    latency_samples: int,
    memory_sizes: tuple[int, ...],
    metrics_port: int = BENCH_METRICS_PORT,
    recovery_records: int = 1_000_000,
) -> dict[str, Any]:
    """Load both topics, run the ladder and P on each, then alert latency, memory and
    recovery."""
    run_id = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="slipstream-bench-"))
    catalogue_path = write_catalogue(workdir / "catalogue.yaml", services)
    catalogue = load_catalogue(str(catalogue_path))  # fails early on a bad catalogue
    jars = ensure_jars(settings)
    started = time.monotonic()
    namespaces: list[str] = []
    groups: list[str] = []
    result: dict[str, Any] = {
        "events": events, "repeats": repeats, "services": services,
        "slos": len(catalogue.all_slos()), "partitions": settings.partitions,
        "versions": versions(settings), "shapes": {},
    }  # fmt: skip
    try:
        loads = {}
        for shape in SHAPES:
            shaped = settings.replace(namespace=f"bench-{run_id}-{shape}")
            namespaces.append(shaped.namespace)
            say(f"[{shape}] loading {events:,} events into {shaped.namespace} …")
            loads[shape] = load = preload(shaped, shape, events, services, seed=1)
            say(f"[{shape}] loaded {load.messages:,} messages, {load.bytes / 1e6:.1f} MB "
                f"in {load.seconds:.0f} s")  # fmt: skip
        floor = [ladder.f_faust(settings.kafka_bootstrap, loads["single"]) for _ in range(repeats)]
        result["faust_floor_messages_per_s"] = spread(floor)
        for shape, load in loads.items():
            result["shapes"][shape] = _bench_shape(
                settings,
                load,
                repeats,
                jars,
                catalogue_path,
                catalogue,
                workdir,
                groups,
                floor,
                metrics_port,
            )
        sustainable = result["shapes"]["batched"]["steps"]["P"]["median"]
        say(f"[latency] {latency_samples} samples per load level (sustainable "
            f"{sustainable:,.0f} events/s) …")  # fmt: skip
        result["latency"] = _bench_latency(settings, sustainable, latency_samples, services,
                                           workdir, metrics_port)  # fmt: skip
        namespaces.append(result["latency"]["namespace"])
        groups.append(result["latency"]["group"])
        result["memory"] = []
        for size in memory_sizes:
            say(f"[memory] {size:,} SLOs with full 30-day windows …")
            result["memory"].append(measure_in_subprocess(size))
        whole = max(memory_sizes)
        say(f"[memory] a whole worker holding {whole:,} SLOs with full windows …")
        held = measure_worker(settings, whole, workdir, metrics_port)
        namespaces.extend(held.namespaces)
        groups.extend(held.groups)
        result["worker_memory"] = {
            "slos": held.slos, "entries": held.entries, "rss_mib": held.rss_mib,
            "bare_rss_mib": held.bare_rss_mib, "kib_per_slo": held.kib_per_slo,
        }  # fmt: skip
        say(f"[recovery] kill -9 and restart on a changelog of {recovery_records:,} records …")
        run = run_recovery(settings, recovery_records, workdir, metrics_port)
        namespaces.append(run.namespace)
        groups.append(run.group)
        result["recovery"] = {
            "records": run.records, "slos": run.slos,
            "restart_to_first_event_s": run.restart_to_first_event_s,
            "b1_read_s": run.b1_read_s, "ratio": run.ratio, "worker_rss_mib": run.rss_mib,
            "restored_entries": run.restored_entries,
            "checkpoint_entries": run.checkpoint_entries, "cold_restart_s": run.cold_restart_s,
            "cold_ratio": run.cold_ratio, "cold_restored_entries": run.cold_restored_entries,
        }  # fmt: skip
    finally:
        _cleanup(settings, namespaces, groups)
        shutil.rmtree(workdir, ignore_errors=True)
    result["seconds"] = time.monotonic() - started
    return result


def _bench_shape(
    settings: Settings,
    load: Load,
    repeats: int,
    jars: Path,
    catalogue_path: Path,
    catalogue: Catalogue,
    workdir: Path,
    groups: list[str],
    faust_floor: list[float],
    metrics_port: int,
) -> dict[str, Any]:
    """Every step of the ladder, then P, on one loaded topic. ``faust_floor``: messages/s
    of faust with an empty agent, one per repetition."""
    bootstrap = settings.kafka_bootstrap
    rss: list[float] = []
    faust_runs = iter(faust_floor)

    def pipeline() -> float:
        run = run_pipeline(settings, load, catalogue_path, metrics_port,
                           workdir / "worker.log")  # fmt: skip
        groups.append(run.group)
        rss.append(run.peak_rss_mib)
        return run.events_per_s

    steps: dict[str, Callable[[], float]] = {
        "B0": lambda: ladder.b0_consumer_perf(jars, bootstrap, load),
        "B1": lambda: ladder.b1_aiokafka(bootstrap, load),
        "B1 kafka-python": lambda: ladder.b1_kafka_python(bootstrap, load),
        "B2": lambda: ladder.b2_decode(bootstrap, load),
        "B3": lambda: ladder.b3_aggregate(bootstrap, load, catalogue),
        B3C: lambda: ladder.b3_aggregate(bootstrap, load, catalogue, compiled=True),
        # faust's ceiling is per message: measured on the single-event topic (a few
        # thousand batched messages are too few to time), scaled by events per message.
        "F (faust, empty agent)": lambda: next(faust_runs) * load.events / load.messages,
        "P": pipeline,
    }
    figures = {name: _measure(name, load.shape, repeats, fn) for name, fn in steps.items()}
    p, b3, b0 = (figures[k]["median"] for k in ("P", "B3", "B0"))
    b3c = figures[B3C]["median"]
    return {
        "messages": load.messages, "bytes": load.bytes, "steps": figures,
        "P_over_B3": p / b3, "P_over_B0": p / b0, "P_over_B3c": p / b3c,
        "worker_peak_rss_mib": max(rss),
    }  # fmt: skip


def _bench_latency(
    settings: Settings,
    sustainable: float,
    samples: int,
    services: int,
    workdir: Path,
    port: int,
) -> dict[str, Any]:
    """Alert latency at 0 %, 50 % and 90 % of the sustainable (batched) load."""
    levels = {"0%": 0.0, "50%": 0.5 * sustainable, "90%": 0.9 * sustainable}
    targets = latency.target_services(len(levels) * samples)
    path = write_catalogue(workdir / "latency-catalogue.yaml", services, targets)
    catalogue = load_catalogue(str(path))
    shaped = settings.replace(namespace=f"bench-{uuid.uuid4().hex[:6]}-latency")
    ensure_topics(shaped)
    group = f"bench-l-{uuid.uuid4().hex[:8]}"
    child = worker_settings(settings, shaped.namespace, path, group, port)
    log = workdir / "worker-latency.log"
    with worker_process(child, log, loglevel="warning") as proc:
        warm = preload(shaped, "batched", 1000, services, seed=2)  # the worker is consuming
        deadline = time.monotonic() + 120
        while (consumed(child.metrics_addr) or 0) < warm.messages:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the latency worker did not start; see {log}")
            time.sleep(0.2)
        slos = [s for name in targets for s in catalogue.services[name].slos]
        result = latency.run_levels(settings.kafka_bootstrap, shaped.namespace, slos, levels,
                                    samples, services)  # fmt: skip
    result["namespace"], result["group"] = shaped.namespace, group
    return result


TARGETS = {"batched": 0.7, "single": 0.4}  # P / B3 (issue 6)
B3C = "B3c (B3 with P's compiled reader)"
MIN_JUDGED_EVENTS = 1_000_000


def report(result: dict[str, Any]) -> str:
    v = result["versions"]
    lines = [
        f"## Throughput, {result['events']:,} events, {result['services']} services "
        f"({result['slos']} SLOs), {result['partitions']} partitions, "
        f"{result['repeats']} runs per step; event times as produced at {EVENT_RATE:,} events/s",
        "",
        "| step | single-event messages (events/s) | batched messages (events/s) |",
        "|---|---|---|",
    ]
    shapes = result["shapes"]
    for step in shapes[SHAPES[0]]["steps"]:
        cells = []
        for shape in SHAPES:
            s = shapes[shape]["steps"][step]
            cells.append(f"{s['median']:,.0f} ({s['min']:,.0f} to {s['max']:,.0f})")
        lines.append(f"| {step} | {' | '.join(cells)} |")
    lines.append("")
    for shape in SHAPES:
        s = shapes[shape]
        met = "met" if s["P_over_B3"] >= TARGETS[shape] else "NOT met"
        lines.append(
            f"- {shape}: P / B3 = **{s['P_over_B3']:.2f}** (target >= {TARGETS[shape]}: {met}), "
            f"P / B0 = {s['P_over_B0']:.3f}, worker peak RSS {s['worker_peak_rss_mib']:.0f} MiB; "
            f"P / B3c = {s['P_over_B3c']:.2f} (no target: P's own work beyond the decode)"
        )
    if result["events"] < MIN_JUDGED_EVENTS:  # --short
        lines.append(
            f"- fewer than {MIN_JUDGED_EVENTS:,} events (as `--short` runs): start-up and the "
            "first fetches weigh more, so P's ratios (and recovery's) come out lower than in "
            "a full run; the targets are judged on a full run (PERFORMANCE.md: N >= 1 M)"
        )
    lines += _latency_lines(result.get("latency", {})) + _memory_lines(result.get("memory", []))
    lines += _worker_memory_lines(result.get("worker_memory"))
    lines += _recovery_lines(result.get("recovery"))
    lines += [
        "",
        f"Python {v['python']}, Kafka {v['kafka']} ({v['java']}), fastavro {v['fastavro']}, "
        f"aiokafka {v['aiokafka']}, kafka-python {v['kafka-python']}, "
        f"faust-streaming {v['faust-streaming']}; crc32c active: {v['crc32c_active']}, "
        f"uvloop active: {v['uvloop_active']}, P's compiled request reader active: "
        f"{v.get('compiled_reader_active')}. {result['seconds']:.0f} s in all.",
    ]
    return "\n".join(lines)


def _latency_lines(levels: dict[str, Any]) -> list[str]:
    lines = ["", "## Alert latency (send of the tipping event to the record on slo.alerts)", "",
             "| background | events/s | samples | p50 s | p99 s | max s | tier |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for level, r in levels.items():
        if not isinstance(r, dict):
            continue  # the namespace and group it ran in
        cells = " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in ("p50", "p99", "max"))
        samples = f"{r['n']} (missed {r['missed']})"
        load = f"{r['background_events_per_s']:,.0f}"
        lines.append(f"| {level} | {load} | {samples} | {cells} | {', '.join(r['tiers'])} |")
    half = levels.get("50%", {})
    if "p99" in half:
        met = "met" if half["p99"] <= 1.0 else "NOT met"
        lines += ["", f"- p99 at 50 % load: **{half['p99']:.2f} s** (target <= 1 s: {met})"]
    return lines


def _worker_memory_lines(w: dict[str, Any] | None) -> list[str]:
    if not w:
        return []
    lines = ["", "## A whole worker holding the SLOs (full 30-day windows, from local "
             "checkpoints)", "",
             "| SLOs | table entries held | worker RSS MiB | same worker, no state, MiB | "
             "KiB per SLO |", "|---|---|---|---|---|",
             f"| {w['slos']:,} | {w['entries']:,} | {w['rss_mib']:,.0f} | "
             f"{w['bare_rss_mib']:,.0f} | {w['kib_per_slo']:,.0f} |"]  # fmt: skip
    if w["slos"] >= 10_000:
        met = "met" if w["rss_mib"] < 1024 else "NOT met"
        lines += ["", f"- {w['slos']:,} SLOs in one worker: **{w['rss_mib']:,.0f} MiB** RSS "
                  f"(target < 1 GiB: {met})"]  # fmt: skip
    return lines


def _memory_lines(sizes: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Memory per SLO (full 30-day windows, restored from a changelog)", "",
             "| SLOs | RSS added, MiB | KiB per SLO | restore s |",
             "|---|---|---|---|"]  # fmt: skip
    for m in sizes:
        added = (m["rss_after_kib"] - m["rss_before_kib"]) / 1024
        lines.append(f"| {m['slos']:,} | {added:,.0f} | {m['kib_per_slo']:,.0f} | "
                     f"{m['restore_s']:.1f} |")  # fmt: skip
    if sizes:
        worst = max(m["kib_per_slo"] for m in sizes)
        met = "met" if worst <= 64 else "NOT met"
        lines += ["", f"- KiB per SLO: **{worst:,.0f}** (target <= 64: {met})"]
    return lines


def _recovery_lines(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return []
    met = "met" if r["ratio"] <= 2 else "NOT met"
    return [
        "", "## Recovery after kill -9", "",
        "| restart | changelog records | SLOs | entries from checkpoints | changelog entries "
        "read | restart to first processed event s | B1 reads the changelog in s | ratio |",
        "|---|---|---|---|---|---|---|---|",
        f"| same machine (local checkpoints) | {r['records']:,} | {r['slos']:,} | "
        f"{r['checkpoint_entries']:,} | {r['restored_entries']:,} | "
        f"{r['restart_to_first_event_s']:.2f} | {r['b1_read_s']:.2f} | {r['ratio']:.2f} |",
        f"| new machine (no checkpoint) | {r['records']:,} | {r['slos']:,} | 0 | "
        f"{r['cold_restored_entries']:,} | {r['cold_restart_s']:.2f} | {r['b1_read_s']:.2f} | "
        f"{r['cold_ratio']:.2f} |",
        "", f"- restart / B1 read: **{r['ratio']:.2f}** (target <= 2: {met}); without a "
        f"checkpoint {r['cold_ratio']:.2f}; worker RSS after the restart "
        f"{r['worker_rss_mib']:.0f} MiB",
    ]  # fmt: skip
