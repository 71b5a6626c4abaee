"""Consecutive single-request messages counted as one (``MessageRun``) against one by one:
on the seeded traffic of test_tally (single events and batches, deploys, invalid events,
duplicates, late events, unknown services) with crashes and replays, every count, alert
and table entry is the same; only a bucket's recorded offset may be a later one of the
same run, and the offset guard skips the same replayed events."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from test_tally import CODEC, Pipeline, catalogue, traffic

from slipstream.schemas.codec import CodecError
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
        self.slis = pipeline.ingestor.slis
        self.open: dict[int, MessageRun] = {}
        self.multi = 0  # runs closed with more than one message's requests in them

    def run(self, partition: int) -> MessageRun:
        run = self.open.get(partition)
        if run is None:
            engine = self.pipeline.engines.get(partition)
            if engine is None:
                engine = self.pipeline.engines[partition] = PartitionEngine(partition, self.cat)
            run = self.open[partition] = MessageRun(engine, self.slis)
        return run

    def absorb(self, partition: int, offset: int, result: Ingested) -> None:
        if result.accepted:
            self.run(partition).absorb(result, offset)

    def ingest(self, topic: str, partition: int, value: bytes, now: int, offset: int) -> Ingested:
        """The worker's way: the run ingests the message, single events straight into it."""
        return self.run(partition).ingest(self.pipeline.ingestor, topic, partition, value,
                                          now, offset)  # fmt: skip

    def close(self, partition: int) -> PartitionEngine | None:
        run = self.open.pop(partition, None)
        if run is None:
            return None
        held = len(run.requests) + (run.tally.accepted if run.tally else 0)
        self.multi += held > 1
        run.close()
        return run.engine


def as_singles(msgs: list[tuple[str, int, bytes, int]]) -> list[tuple[str, int, bytes, int]]:
    """The same traffic with every SDK batch sent as one RequestEvent message per event."""
    out = []
    for topic, partition, value, now in msgs:
        try:
            decoded = CODEC.decode(value)
        except CodecError:  # damaged on the way (traffic's bit flips): sent as it is
            out.append((topic, partition, value, now))
            continue
        if decoded.schema != "RequestBatch":
            out.append((topic, partition, value, now))
            continue
        for event in decoded.record["events"]:
            out.append((topic, partition, CODEC.encode("RequestEvent", event), now))
    return out


@pytest.mark.parametrize("light", [False, True], ids=["requests", "added-events"])
@pytest.mark.parametrize(("seed", "singles"), [(0, False), (1, False), (2, False),
                                              (3, True), (4, True), (5, True)])  # fmt: skip
def test_runs_of_messages_count_exactly_as_one_by_one(
    seed: int, singles: bool, light: bool
) -> None:
    """``light``: messages ingested by the run, single events added straight to its Tally
    (the worker's way); otherwise as Requests through absorb_many. ``singles``: the SDK
    batches' events sent one per message."""
    cat = catalogue()
    msgs = traffic(seed, n_messages=150 if singles else 400).messages
    msgs = as_singles(msgs) if singles else msgs
    ref, fused = Pipeline(cat, tallied=False), Pipeline(cat, tallied=light)
    runs = Runs(fused, cat)
    rng = random.Random(seed + 2000)
    crashes = sorted(rng.sample(range(len(msgs) // 4, len(msgs)), 2))
    offsets = [0, 0, 0]
    seen = {"joined": 0, "transitions": 0, "skipped": 0, "late": 0}
    marks: list[tuple[int, list[int], Any, Any]] = []  # where each batch began
    i = 0
    while i < len(msgs):
        marks.append((i, list(offsets), ingest_state(ref), ingest_state(fused)))
        batch = msgs[i : i + rng.choice([1, 5, 40, 120])]
        touched: dict[int, PartitionEngine] = {}
        for topic, partition, value, now in batch:
            offset = offsets[partition]
            offsets[partition] += 1
            a = ref.ingest(topic, partition, value, now)
            if light:
                b = runs.ingest(topic, partition, value, now, offset)
            else:
                b = fused.ingestor.ingest(topic, partition, value, now)
                runs.absorb(partition, offset, b)
            assert a.dead == b.dead
            assert (a.duplicates, a.accepted) == (b.duplicates, b.accepted)
            engine = ref.absorb(partition, offset, a)
            if engine is not None:
                touched[partition] = engine
            run = runs.open.get(partition)
            seen["joined"] += bool(run and (run.requests or (run.tally and run.tally.accepted)))
        for partition, ea in touched.items():
            eb = runs.close(partition)
            assert eb is not None
            ra, rb = ref.end(ea), fused.end(eb)
            assert_same(ra, rb)
            seen["transitions"] += len(ra.transitions)
            seen["skipped"] += ra.skipped_replayed
            seen["late"] += ra.late_events
        for partition in list(runs.open):  # a run that counted nothing: no end(), as the worker
            assert runs.close(partition) is not None
            assert not fused.engines[partition]._touched  # it held nothing to count
        assert not runs.open
        assert without_offsets(ref.table) == without_offsets(fused.table)
        for key, value in fused.table.items():
            if "|b|" in key:  # a run's buckets carry its last offset: never an earlier one
                assert value[2] >= ref.table[key][2]
        i += len(batch)
        if crashes and i >= crashes[0]:
            # Crash and replay the last batches: the engines restored from the table, the
            # ingestors as they were when those batches began (so the replay accepts and
            # drops what the first pass did); the offset guard must skip every event.
            crashes.pop(0)
            back = max(0, len(marks) - rng.choice([1, 2, 3]))
            i, offsets, ref_state, fused_state = marks[back]
            del marks[back:]
            restart(ref, ref_state)
            restart(fused, fused_state)
    if singles:
        seen["multi"] = runs.multi
    assert all(seen.values()), seen


def ingest_state(pipeline: Pipeline) -> Any:
    """What an ingestor remembers: stream times and recent event ids, per partition."""
    return copy.deepcopy((pipeline.ingestor._stream_time, pipeline.ingestor._recent))


def restart(pipeline: Pipeline, state: Any) -> None:
    """A crash: engines restored from the table, the ingestor given ``state``. (A fresh
    ingestor may accept a replayed event the first pass dropped - a duplicate, an event
    late for the stream time it lost - which the guard counts when its bucket's offset
    lies below it: one by one more often than in runs. That is not what is compared.)"""
    pipeline.restart()
    pipeline.ingestor._stream_time, pipeline.ingestor._recent = copy.deepcopy(state)


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
    run = MessageRun(engine, None)
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
