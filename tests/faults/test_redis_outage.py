"""Redis down for a while, then back empty: the worker keeps counting, and Redis converges
to the worker's state once it answers again.

The test runs its own redis-server without persistence, so the Redis that comes back
has lost everything: only a worker that writes its whole state again after an outage
passes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from slipstream import conventions
from slipstream.bench.load import now_ms, preload, write_catalogue
from slipstream.settings import Settings
from slipstream.stack.process import free_port
from slipstream.streams.supervise import scrape
from slipstream.streams.worker import REDIS_FLUSH_INTERVAL_S

from faultkit import (
    EVENTS_PER_S,
    FULL,
    Worker,
    drained,
    reckon,
    record,
    replay_records,
    wait_for,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICES = 20
EVENTS = 40_000  # per phase: before the outage and during it
OUTAGE_S = 60 if FULL else 10


@contextmanager
def redis_server(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of the test's own, nothing saved: a restart starts it empty."""
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--protected-mode", "yes"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        wait_for(lambda: _pings(client), 30, "redis-server to answer")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _worker_view(addr: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(good, total) per SLO as the worker's /metrics shows them."""
    samples = scrape(addr)
    out: dict[tuple[str, str], list[int]] = {}
    for (name, pairs), value in samples.items():
        labels = dict(pairs)
        if name == "slipstream_slo_period_good_events":
            out.setdefault((labels["service"], labels["slo"]), [0, 0])[0] = int(value)
        elif name == "slipstream_slo_period_events":
            out.setdefault((labels["service"], labels["slo"]), [0, 0])[1] = int(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


def _redis_view(client: redis.Redis, namespace: str) -> dict[tuple[str, str], tuple[int, int]]:
    out = {}
    for key in client.scan_iter(match=conventions.redis_key(namespace, "budget", "*")):
        h = {str(k): str(v) for k, v in client.hgetall(key).items()}
        out[(h["service"], h["slo"])] = (int(h["good"]), int(h["total"]))
    return out


def _flush_failures(addr: str) -> float:
    return scrape(addr).get(("slipstream_redis_flush_failures_total", ()), 0.0)


def test_redis_outage_then_empty_redis_converges(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    settings = worker_settings(settings, catalogue).replace(redis_url=f"redis://127.0.0.1:{port}/0")
    worker = Worker(settings, tmp_path / "worker.log")
    client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
    start = now_ms() - 2 * EVENTS * 1000 // EVENTS_PER_S
    records = replay_records(2 * EVENTS, SERVICES, 31, start)
    with worker.running():
        with redis_server(port, tmp_path / "redis-1.log"):
            preload(settings, "batched", EVENTS, SERVICES, 31,
                    records=(next(records) for _ in range(EVENTS)))  # fmt: skip
            wait_for(drained(settings), 300, "the first half", worker)
            wait_for(lambda: _redis_view(client, settings.namespace)
                     == _worker_view(worker.addr) != {}, 60,
                     "Redis to match the worker before the outage", worker)  # fmt: skip
        down_at = time.monotonic()
        # Redis is down: the second half is counted all the same.
        preload(settings, "batched", EVENTS, SERVICES, 32, records=records)
        wait_for(drained(settings), 300, "the second half, Redis down", worker)
        wait_for(lambda: _flush_failures(worker.addr) > 0, 30, "a failed flush", worker)
        failures = _flush_failures(worker.addr)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        outage = time.monotonic() - down_at
        with redis_server(port, tmp_path / "redis-2.log"):
            converged = wait_for(
                lambda: _redis_view(client, settings.namespace) == _worker_view(worker.addr),
                60, "Redis to converge after the outage", worker)  # fmt: skip
            assert worker.alive()
            view = _worker_view(worker.addr)
    result = reckon(settings)
    c = result.comparison
    record(
        "redis down, then back empty",
        outage_s=round(outage, 1),
        events=2 * EVENTS,
        flush_failures=failures,
        seconds_to_converge=round(converged, 2),
        flush_intervals_to_converge=round(converged / REDIS_FLUSH_INTERVAL_S, 2),
        slos=len(view),
        events_lost=c.lost,
        events_double_counted=c.doubled,
    )
    assert len(view) == 2 * SERVICES  # every SLO's state is back in Redis
    assert (c.lost, c.doubled, c.wrong_bad) == (0, 0, 0), c
