"""Two workers, repeated rebalances: a second worker joins and leaves the group again and
again while the first drains a replay. Partitions move back and forth, each move a
restore from the changelog; the counts must still be exact, the alerts those of a
fault-free run, and with both workers up /metrics must show each SLO exactly once."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from slipstream.bench.load import now_ms, preload, write_catalogue
from slipstream.settings import Settings
from slipstream.stack.process import free_port
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

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
]

SERVICES = 20
EVENTS = 1_000_000 if FULL else 150_000
REBALANCES = 10 if FULL else 3
PARTITIONS = 4  # the test settings' default


def _dynamic(settings: Settings, catalogue: Path) -> Settings:
    # Dynamic membership: a worker that stops leaves the group at once (a static member
    # would hold its partitions until its session times out).
    return settings.replace(catalogue=str(catalogue), instance_id="",
                            metrics_addr=f"127.0.0.1:{free_port()}")  # fmt: skip


def _slo_series(addr: str) -> list[tuple[str, str]]:
    samples = scrape(addr)
    return [
        (labels["service"], labels["slo"])
        for (name, pairs), _ in samples.items()
        if name == "slipstream_slo_objective_ratio"
        for labels in [dict(pairs)]
    ]


def _ready(*addrs: str) -> bool:
    """Every worker's assigned partitions restored and shown, all partitions owned."""
    ready = 0
    for addr in addrs:
        samples = scrape(addr)
        assigned = samples.get(("slipstream_partitions_assigned", ()))
        shown = samples.get(("slipstream_partitions_ready", ()))
        if assigned is None or shown != assigned:
            return False
        ready += int(shown)
    return ready == PARTITIONS


def test_repeated_rebalances_keep_counts_exact(settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(5)
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    first = Worker(_dynamic(settings, catalogue), tmp_path / "first.log")
    second = Worker(_dynamic(settings, catalogue), tmp_path / "second.log")
    start = now_ms() - EVENTS * 1000 // EVENTS_PER_S
    load = preload(first.settings, "batched", EVENTS, SERVICES, 21,
                   records=replay_records(EVENTS, SERVICES, 21, start))  # fmt: skip
    started = time.monotonic()
    joins: list[float] = []
    with first.running():
        wait_for(lambda: consumed(first.addr) > 0, 120, "the first worker to consume", first)
        for i in range(REBALANCES):
            with second.running():
                t0 = time.monotonic()
                wait_for(lambda: bool(scrape(second.addr)), 60, "the second worker", second)
                wait_for(lambda: consumed(second.addr) > 0 or drained(first.settings)(), 120,
                         "the second worker to take partitions", second)  # fmt: skip
                joins.append(time.monotonic() - t0)
                time.sleep(rng.uniform(0.5, 2.0))
                if i == REBALANCES - 1:
                    wait_for(drained(first.settings), 600, "both workers to drain", second)
                    wait_for(lambda: _ready(first.addr, second.addr), 120,
                             "both workers ready", second)  # fmt: skip
                    both = _slo_series(first.addr) + _slo_series(second.addr)
            # Leaving: SIGTERM, a clean stop, hands the partitions back to the first.
        wait_for(drained(first.settings), 600, "the first worker to drain", first)
    result = reckon(first.settings)
    c = result.comparison
    record(
        "two workers, repeated rebalances",
        events=EVENTS,
        messages=load.messages,
        rebalances=2 * REBALANCES,
        events_lost=c.lost,
        events_double_counted=c.doubled,
        lost_by_partition=c.lost_by_partition,
        buckets_bad_count_off=c.wrong_bad,
        alert_transitions=result.transitions_expected,
        alerts_missing=len(result.transitions_missing),
        alerts_unexpected=len(result.transitions_unexpected),
        offset_jumps=first.offset_jumps() + second.offset_jumps(),
        offset_rewinds=first.offset_rewinds() + second.offset_rewinds(),
        slo_series_across_both=len(both),
        distinct_slos_across_both=len(set(both)),
        join_to_first_message_s=[round(s, 2) for s in joins],
        seconds=round(time.monotonic() - started, 1),
    )
    assert c.events == 2 * EVENTS
    assert (c.lost, c.doubled, c.wrong_bad) == (0, 0, 0), c
    assert not c.missing_keys and not c.extra_keys, c
    assert result.alerts_identical, result
    assert sorted(both) == sorted(set(both)) and len(both) == 2 * SERVICES, both
