"""A paused "zombie" worker: of two workers, the first is SIGSTOPped while it is busy,
past the group's session timeout, so the second takes all partitions and goes on
writing their state. When the first runs again (SIGCONT) it must write nothing it
computed before the pause over that newer state: its stall guard ends it (exit 75),
and the test restarts it as a service manager would. The changelog must still equal
the truth and the alerts those of a fault-free run."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from slipstream.bench.load import now_ms, preload, write_catalogue
from slipstream.settings import Settings
from slipstream.stack.process import free_port
from slipstream.streams.stall_guard import EXIT_STALLED
from slipstream.streams.supervise import scrape

from faultkit import (
    EVENTS_PER_S,
    FULL,
    Worker,
    consumed,
    drained,
    reckon,
    record,
    replay_records,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICES = 20
EVENTS = 1_000_000 if FULL else 300_000
PAUSES = 3 if FULL else 1
SESSION_S = 10.0
PARTITIONS = 4


def _member(settings: Settings, catalogue: Path) -> Settings:
    # Dynamic membership and a short session: a paused member is dropped after 10 s.
    return settings.replace(catalogue=str(catalogue), instance_id="", session_timeout_s=SESSION_S,
                            metrics_addr=f"127.0.0.1:{free_port()}")  # fmt: skip


def _assigned(addr: str) -> int:
    return int(scrape(addr).get(("slipstream_partitions_assigned", ()), 0))


def test_a_paused_worker_writes_nothing_stale_when_it_resumes(
    settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(13)
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    zombie = Worker(_member(settings, catalogue), tmp_path / "zombie.log")
    survivor = Worker(_member(settings, catalogue), tmp_path / "survivor.log")
    start = now_ms() - EVENTS * 1000 // EVENTS_PER_S
    load = preload(zombie.settings, "batched", EVENTS, SERVICES, 19,
                   records=replay_records(EVENTS, SERVICES, 19, start))  # fmt: skip
    exits: list[int | None] = []
    takeovers: list[float] = []
    started = time.monotonic()
    with survivor.running():
        for _ in range(PAUSES):
            with zombie.running() as proc:
                wait_for(lambda: consumed(zombie.addr) > 0, 120, "the zombie-to-be to consume",
                         zombie)  # fmt: skip
                time.sleep(rng.uniform(0.0, 1.0))  # somewhere inside its work
                os.kill(proc.pid, signal.SIGSTOP)
                paused = time.monotonic()
                try:
                    wait_for(lambda: _assigned(survivor.addr) == PARTITIONS, 60,
                             "the survivor to take every partition", survivor)  # fmt: skip
                    takeovers.append(round(time.monotonic() - paused, 1))
                    # Well past the guard's limit (half the session) and the session.
                    time.sleep(max(0.0, paused + SESSION_S + 2 - time.monotonic()))
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
                try:
                    exits.append(proc.wait(timeout=60))
                except Exception:
                    exits.append(None)
        with zombie.running():  # restarted, it takes its share again and drains
            wait_for(drained(survivor.settings), 600, "the group to drain", survivor)
    result = reckon(survivor.settings)
    c = result.comparison
    record(
        "paused zombie worker",
        events=EVENTS,
        messages=load.messages,
        pauses=PAUSES,
        zombie_exit_codes=exits,
        survivor_took_over_s=takeovers,
        events_lost=c.lost,
        events_double_counted=c.doubled,
        buckets_bad_count_off=c.wrong_bad,
        alert_transitions=result.transitions_expected,
        alerts_missing=len(result.transitions_missing),
        alerts_unexpected=len(result.transitions_unexpected),
        seconds=round(time.monotonic() - started, 1),
    )
    assert exits == [EXIT_STALLED] * PAUSES, zombie.log_tail()
    assert c.events == 2 * EVENTS
    assert (c.lost, c.doubled, c.wrong_bad) == (0, 0, 0), c
    assert not c.missing_keys and not c.extra_keys, c
    assert result.alerts_identical, result
