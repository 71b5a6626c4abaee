"""Consecutive single-request messages counted as one (``MessageRun``) against one by one:
on the seeded traffic of test_tally (single events and batches, deploys, invalid events,
duplicates, late events, unknown services) with crashes and replays, every count, alert
and table entry is the same; only a bucket's recorded offset may be a later one of the
same run, and the offset guard skips the same replayed events."""

from __future__ import annotations

import random
from typing import Any

import pytest
from test_tally import Pipeline, catalogue, traffic

from slipstream.slo.catalogue import Catalogue
from slipstream.slo.engine import MessageResult, PartitionEngine
from slipstream.streams.ingest import Ingested, MessageRun


def without_offsets(writes: dict[str, Any]) -> dict[str, Any]:
    """Table entries with each bucket's recorded offset left out (``bad, total, offset``)."""
    return {k: v[:2] if "|b|" in k else v for k, v in writes.items()}


class Runs:
    """Open runs per partition over a ``Pipeline``'s engines (the worker's handle_batch)."""

    def __init__(self, pipeline: Pipeline, cat: Catalogue) -> None:
        self.pipeline, self.cat = pipeline, cat
        self.open: dict[int, MessageRun] = {}

    def absorb(self, partition: int, offset: int, result: Ingested) -> None:
        if not result.accepted:
            return
        run = self.open.get(partition)
        if run is None:
            engine = self.pipeline.engines.get(partition)
            if engine is None:
                engine = self.pipeline.engines[partition] = PartitionEngine(partition, self.cat)
            run = self.open[partition] = MessageRun(engine)
        run.absorb(result, offset)

    def close(self, partition: int) -> PartitionEngine | None:
        run = self.open.pop(partition, None)
        if run is None:
            return None
        run.close()
        return run.engine


@pytest.mark.parametrize("seed", range(8))
def test_runs_of_messages_count_exactly_as_one_by_one(seed: int) -> None:
    cat = catalogue()
    msgs = traffic(seed, n_messages=400).messages
    ref, fused = Pipeline(cat, tallied=False), Pipeline(cat, tallied=False)
    runs = Runs(fused, cat)
    rng = random.Random(seed + 2000)
    crashes = sorted(rng.sample(range(len(msgs) // 4, len(msgs)), 2))
    offsets = [0, 0, 0]
    seen = {"joined": 0, "transitions": 0, "skipped": 0, "late": 0}
    i = 0
    while i < len(msgs):
        batch = msgs[i : i + rng.choice([1, 5, 40, 120])]
        touched: dict[int, PartitionEngine] = {}
        for topic, partition, value, now in batch:
            a = ref.ingest(topic, partition, value, now)
            b = fused.ingest(topic, partition, value, now)
            offset = offsets[partition]
            offsets[partition] += 1
            engine = ref.absorb(partition, offset, a)
            if engine is not None:
                touched[partition] = engine
            runs.absorb(partition, offset, b)
            seen["joined"] += bool(runs.open.get(partition) and runs.open[partition].requests)
        for partition, ea in touched.items():
            eb = runs.close(partition)
            assert eb is not None
            ra, rb = ref.end(ea), fused.end(eb)
            assert_same(ra, rb)
            seen["transitions"] += len(ra.transitions)
            seen["skipped"] += ra.skipped_replayed
            seen["late"] += ra.late_events
        assert not runs.open
        assert without_offsets(ref.table) == without_offsets(fused.table)
        for key, value in fused.table.items():
            if "|b|" in key:  # a run's buckets carry its last offset: never an earlier one
                assert value[2] >= ref.table[key][2]
        i += len(batch)
        if crashes and i >= crashes[0]:
            # Crash and replay the last messages: the offset guard skips the same events.
            crashes.pop(0)
            back = min(i, rng.choice([3, 30, 90]))
            i -= back
            for _, partition, *_ in msgs[i : i + back]:
                offsets[partition] -= 1
            ref.restart()
            fused.restart()
    assert all(seen.values()), seen


def assert_same(a: MessageResult, b: MessageResult) -> None:
    assert without_offsets(a.writes) == without_offsets(b.writes)
    assert a.deletes == b.deletes
    assert a.transitions == b.transitions
    assert a.latest == b.latest and a.snapshots == b.snapshots
    assert (a.late_events, a.skipped_replayed, a.unknown_service_events) == (
        b.late_events,
        b.skipped_replayed,
        b.unknown_service_events,
    )
    assert a.impacts == b.impacts and a.policy == b.policy
    assert (a.suspects, a.causes) == (b.suspects, b.causes)


def test_a_message_at_or_below_the_newest_offset_is_counted_alone() -> None:
    cat = catalogue()
    engine = PartitionEngine(0, cat)
    engine.newest_offset = 10  # restored buckets hold offsets up to 10: 9 may be a replay
    run = MessageRun(engine)
    msgs = traffic(3).messages
    pipeline = Pipeline(cat, tallied=False)
    singles = [
        r
        for topic, partition, value, now in msgs
        if (r := pipeline.ingest(topic, partition, value, now)).requests and not r.deploys
    ]
    run.absorb(singles[0], 9)
    assert not run.requests  # counted alone, through the offset guard
    run.absorb(singles[1], 11)
    run.absorb(singles[2], 12)
    assert run.requests and run.offset == 12
    run.close()
    assert not run.requests and engine.newest_offset == 12


def test_a_restored_engine_knows_the_newest_offset_its_buckets_hold() -> None:
    cat = catalogue()
    source = PartitionEngine(0, cat)
    pipeline = Pipeline(cat, tallied=False)
    offset = 0
    for topic, partition, value, now in traffic(5).messages[:80]:
        result = pipeline.ingest(topic, partition, value, now)
        if result.accepted and topic == "slo.requests":
            result.absorb_into(source, offset)
            offset += 1
    writes = source.end().writes
    held = max(v[2] for k, v in writes.items() if "|b|" in k)
    keys = sorted(writes)
    one_by_one, batched = PartitionEngine(0, cat), PartitionEngine(0, cat)
    one_by_one.restore((k, writes[k]) for k in keys)
    batched.load_entries(keys, [writes[k] for k in keys])
    assert one_by_one.newest_offset == batched.newest_offset == held
