"""Run a worker as a child process and read its /metrics: used by the demo, bench and tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from slipstream.settings import Settings, settings_env

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(addr: str, timeout_s: float = 2.0, names: Sequence[str] = ()) -> Samples:
    """Samples of /metrics keyed by (name, sorted labels), only the series ``names`` if
    given; empty if it does not answer."""
    query = "?" + urllib.parse.urlencode([("name[]", n) for n in names]) if names else ""
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics{query}", timeout=timeout_s) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def status_kib(field: str, pid: int | str = "self") -> int:
    """A size from ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...) in KiB; 0 when the
    process is gone or the field is missing."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else 0


@contextmanager
def worker_process(
    settings: Settings, log: Path, loglevel: str = "info"
) -> Iterator[subprocess.Popen[bytes]]:
    """A `slipstream worker` child with the same settings; SIGTERM (then SIGKILL) on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env(settings)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slipstream.streams.cli", "worker", "--loglevel", loglevel],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is ours to forward, not its
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
