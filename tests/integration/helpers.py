"""Helpers for integration tests: running a worker process, reading metrics, querying Prometheus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from slipstream.settings import Settings, settings_env

T = TypeVar("T")


def poll(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout_s: float, what: str) -> T:
    """Call ``fetch`` until ``done`` holds for its result; fail with the last value after a bound."""
    deadline = time.monotonic() + timeout_s
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {value!r}")
        time.sleep(0.25)
        value = fetch()
    return value


def scrape(addr: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a /metrics endpoint keyed by (name, sorted labels); empty if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def prometheus_query(url: str, query: str) -> list[dict[str, object]]:
    full = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(full, timeout=5) as resp:
            body = json.load(resp)
    except OSError:
        return []
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def register_scrape_target(targets_dir: Path, name: str, addr: str) -> Path:
    """Point the stack's Prometheus at ``addr`` through its file_sd folder."""
    path = targets_dir / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [addr], "labels": {"instance_name": name}}]))
    tmp.replace(path)  # Prometheus must never read a half-written file
    return path


@contextmanager
def running_worker(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, **settings_env(settings)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slipstream.streams.cli", "worker", "--loglevel", "info"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
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
