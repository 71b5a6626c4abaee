"""Memory per active SLO with full windows: the worker's engine restored from a changelog in
which every bucket of every resolution, back to the 30-day period, holds counts.

Run as ``python -m slipstream.bench.memory SLOS`` (a fresh process per size, so one
size's garbage cannot hide in another's figure); prints one JSON line with the resident
set size before and after the restore.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from slipstream.bench.load import bench_catalogue
from slipstream.slo.catalogue import Slo, parse_catalogue
from slipstream.slo.engine import PartitionEngine, windows_for
from slipstream.slo.windows import FINE_MS, RES_CODE, RESOLUTIONS_MS, WindowCounts
from slipstream.streams.supervise import status_kib


def full_changelog(
    slos: Iterable[Slo], now_ms: int, partition: int = 0
) -> Iterator[tuple[str, Any]]:
    """Table entries of ``slos``: all buckets each resolution keeps, and each SLO's state."""
    for slo in slos:
        keeps = WindowCounts(windows_for(slo)).series
        for res in RESOLUTIONS_MS:
            newest = now_ms // res
            for index in range(newest - keeps[res].keep + 1, newest + 1):
                key = f"{partition}|b|{slo.service}|{slo.name}|{RES_CODE[res]}|{index}"
                yield key, [index % 7, 1000 + index % 13, 10_000 + index % 1000]
        clock = now_ms // FINE_MS * FINE_MS
        state = {"clock_ms": clock, "first_clock_ms": clock - 30 * 86_400_000}
        yield f"{partition}|s|{slo.service}|{slo.name}", state


def measure(slos: int) -> dict[str, Any]:
    catalogue = parse_catalogue(bench_catalogue(-(-slos // 2)), f"{slos} SLOs")
    slos = len(catalogue.all_slos())  # two per service: an odd count is rounded up
    engine = PartitionEngine(0, catalogue)
    gc.collect()
    before = status_kib("VmRSS")
    started = time.perf_counter()
    entries = engine.restore(full_changelog(catalogue.all_slos(), int(time.time() * 1000)))
    seconds = time.perf_counter() - started
    gc.collect()
    after = status_kib("VmRSS")
    return {"slos": slos, "entries": entries, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_slo": (after - before) / slos, "restore_s": seconds}  # fmt: skip


def measure_in_subprocess(slos: int, timeout_s: float = 900) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "slipstream.bench.memory", str(slos)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory run for {slos} SLOs failed: {out.stderr[-800:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]))), flush=True)
