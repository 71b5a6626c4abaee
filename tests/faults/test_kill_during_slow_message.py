"""Worker kill -9 while a slow message is in flight: every message of this replay is an
SDK batch of 8 000 events (560 KB), so handling one takes tens of milliseconds and a
micro-batch of them seconds; the kills land inside that handling (between a batch's
first absorbed event and its table writes and commit). Counts must still be exact and
alerts those of a fault-free run."""

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
    Worker,
    kill_loop,
    reckon,
    record,
    replay_records,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICES = 4  # few services: batches fill up to their size
EVENTS_PER_MESSAGE = 8_000
EVENTS = 480_000 if FULL else 160_000
KILLS = 5 if FULL else 2


def test_kill9_during_slow_messages_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(17)
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    settings = worker_settings(settings, catalogue)
    start = now_ms() - EVENTS * 1000 // EVENTS_PER_S
    load = preload(settings, "batched", EVENTS, SERVICES, 31,
                   records=replay_records(EVENTS, SERVICES, 31, start),
                   batch_events=EVENTS_PER_MESSAGE, linger_ms=None)  # fmt: skip
    worker = Worker(settings, tmp_path / "worker.log")
    started = time.monotonic()
    loop = kill_loop(worker, load.messages, KILLS, rng)
    elapsed = time.monotonic() - started
    result = reckon(settings)
    c = result.comparison
    record(
        "kill -9 during slow messages",
        events=EVENTS,
        messages=load.messages,
        bytes_per_message=load.bytes // load.messages,
        kills=KILLS,
        events_lost=c.lost,
        events_double_counted=c.doubled,
        lost_by_partition=c.lost_by_partition,
        buckets=c.buckets,
        buckets_bad_count_off=c.wrong_bad,
        alert_transitions=result.transitions_expected,
        alerts_missing=len(result.transitions_missing),
        alerts_unexpected=len(result.transitions_unexpected),
        offset_jumps=worker.offset_jumps(),
        offset_rewinds=worker.offset_rewinds(),
        restart_to_first_message_s=loop.restart_to_first_message_s,
        final_drain_s=loop.final_drain_s,
        seconds=round(elapsed, 1),
    )
    assert load.messages <= EVENTS // EVENTS_PER_MESSAGE + SERVICES  # the messages are big
    assert c.events == 2 * EVENTS
    assert (c.lost, c.doubled, c.wrong_bad) == (0, 0, 0), c
    assert not c.missing_keys and not c.extra_keys, c
    assert result.alerts_identical, result
