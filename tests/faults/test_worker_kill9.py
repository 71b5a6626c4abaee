"""Worker kill -9 at random moments of a replay: nothing lost, nothing counted twice, and
/metrics, scraped throughout, never errs nor shows a partial SLO set once ready.

The source topic is loaded first (SDK batches, then single-event messages), then a
worker of one consumer group drains it and is killed with SIGKILL at random points of
its progress, restarted each time. After the last restart it drains the rest. The
changelog's buckets must equal those of a fault-free engine fed the same topic, and
the alert topic must hold exactly the fault-free run's transitions.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from slipstream.bench.load import now_ms, preload, write_catalogue
from slipstream.settings import Settings

from faultkit import (
    EVENTS_PER_S,
    FULL,
    MetricsWatch,
    Worker,
    kill_loop,
    reckon,
    record,
    replay_records,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICES = 20
BATCHED_EVENTS = 1_000_000 if FULL else 120_000
SINGLE_EVENTS = 60_000 if FULL else 10_000
KILLS = 10 if FULL else 3


def test_worker_kill9_loop_loses_and_doubles_nothing(settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(7)
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    # Checkpoints often: most restarts resume from one and read the changelog after it.
    settings = worker_settings(settings, catalogue).replace(checkpoint_interval_s=0.2)
    start = now_ms() - (BATCHED_EVENTS + SINGLE_EVENTS) * 1000 // EVENTS_PER_S
    batched = preload(settings, "batched", BATCHED_EVENTS, SERVICES, 11,
                      records=replay_records(BATCHED_EVENTS, SERVICES, 11, start))  # fmt: skip
    start += BATCHED_EVENTS * 1000 // EVENTS_PER_S
    single = preload(settings, "single", SINGLE_EVENTS, SERVICES, 12,
                     records=replay_records(SINGLE_EVENTS, SERVICES, 12, start))  # fmt: skip
    messages = batched.messages + single.messages
    worker = Worker(settings, tmp_path / "worker.log")
    started = time.monotonic()
    with MetricsWatch(worker.addr) as watch:  # /metrics scraped through every restart
        loop = kill_loop(worker, messages, KILLS, rng)
    elapsed = time.monotonic() - started
    result = reckon(settings)
    c = result.comparison
    restores, from_checkpoints, after_checkpoints = worker.checkpoint_restores()
    record(
        "worker kill -9 loop",
        events=BATCHED_EVENTS + SINGLE_EVENTS,
        messages=messages,
        kills=KILLS,
        slo_events_in_truth=c.events,
        events_lost=c.lost,
        events_double_counted=c.doubled,
        buckets=c.buckets,
        buckets_bad_count_off=c.wrong_bad,
        alert_transitions=result.transitions_expected,
        alerts_missing=len(result.transitions_missing),
        alerts_unexpected=len(result.transitions_unexpected),
        alert_records_republished=result.transitions_duplicated,
        offset_jumps=worker.offset_jumps(),
        offset_rewinds=worker.offset_rewinds(),
        checkpoint_restores=restores,
        entries_from_checkpoints=from_checkpoints,
        changelog_entries_after_checkpoints=after_checkpoints,
        restart_to_first_message_s=loop.restart_to_first_message_s,
        final_drain_s=loop.final_drain_s,
        seconds=round(elapsed, 1),
        **watch.figures(),
    )
    assert c.events == 2 * (BATCHED_EVENTS + SINGLE_EVENTS)  # two SLOs count each event
    assert (c.lost, c.doubled, c.wrong_bad) == (0, 0, 0), c
    assert not c.missing_keys and not c.extra_keys, c
    assert result.transitions_expected > 0  # the load burns budget: alerts must be there
    assert result.alerts_identical, result
    # /metrics during restarts: never an error response, never a partial SLO set once ready.
    assert watch.ready_scrapes > 0 and not watch.errors and not watch.partial, watch.figures()
    assert len(watch.seen) == 2 * SERVICES
    # The restarts resumed from checkpoints with state in them, and changelog after them.
    assert from_checkpoints > 0 and after_checkpoints > 0, (restores, from_checkpoints)
