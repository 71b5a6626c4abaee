"""The streaming engine against the brute-force oracle, on random out-of-order traffic.

Also: message boundaries never change the result (determinism), and a crash
followed by a replay of already-counted offsets changes nothing (idempotence).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slo_oracle import oracle, oracle_budget

from slipstream.slo.catalogue import Catalogue, parse_catalogue
from slipstream.slo.engine import MessageResult, PartitionEngine
from slipstream.slo.events import Request
from slipstream.slo.windows import FINE_MS, MEDIUM_MS

T0 = 1_795_000_000_000 // 3_600_000 * 3_600_000

FAST_TIERS = {
    "fast": {"severity": "page", "long": "2m", "short": "30s", "factor": 2},
    "slow": {"severity": "ticket", "long": "10m", "short": "1m", "factor": 1},
}


def catalogue(min_events: int) -> Catalogue:
    slo: dict[str, Any] = {"objective": 99, "period": "7d",
                           "alerting": {"min_events": min_events, "tiers": FAST_TIERS}}  # fmt: skip
    return parse_catalogue({"services": {
        "a": {"slos": [{"name": "avail", "sli": {"kind": "availability"}, **slo},
                       {"name": "fast", "sli": {"kind": "latency", "threshold_ms": 100}, **slo}]},
        "b": {"slos": [{"name": "avail", "sli": {"kind": "availability"}, **slo}]},
    }}, "oracle")  # fmt: skip


@st.composite
def traffic(draw: st.DrawFn, max_gap_ms: int = 20_000) -> list[Request]:
    n = draw(st.integers(30, 300))
    gaps = draw(st.lists(st.integers(0, max_gap_ms), min_size=n, max_size=n))
    bad_ratio = draw(st.sampled_from([0.0, 0.03, 0.3, 0.9]))
    events = []
    ts = T0 + draw(st.integers(0, 3_600_000))
    for i, gap in enumerate(gaps):
        ts += gap
        service = "b" if draw(st.integers(0, 9)) == 0 else "a"
        bad = draw(st.floats(0, 1)) < bad_ratio
        latency = draw(st.sampled_from([5.0, 99.0, 100.0, 100.5, 900.0]))
        callee = "b" if service == "a" and draw(st.integers(0, 2)) == 0 else None
        events.append(Request(f"e{i}", service, "GET /", 503 if bad else 200, latency, ts,
                              callee=callee))  # fmt: skip
    # Out of order: some events arrive later than their successors, a few by minutes.
    for _ in range(draw(st.integers(0, n // 4))):
        i = draw(st.integers(0, n - 1))
        j = min(n - 1, i + draw(st.sampled_from([1, 3, 20, 100])))
        events.insert(j, events.pop(i))
    return events


def group(events: Sequence[Request], sizes: Sequence[int]) -> list[list[Request]]:
    out, i, k = [], 0, 0
    while i < len(events):
        size = sizes[k % len(sizes)] if sizes else 1
        out.append(list(events[i : i + size]))
        i += size
        k += 1
    return out


def run(
    cat: Catalogue,
    messages: Sequence[Sequence[Request]],
    engine: PartitionEngine | None = None,
    start: int = 0,
    table: dict[str, Any] | None = None,
    flush_every: int = 1,
    many: bool = False,
    changelog: list[tuple[str, Any]] | None = None,
) -> tuple[list[tuple[Any, ...]], PartitionEngine, dict[str, Any]]:
    """Feed the messages; ``end()`` after every ``flush_every`` of them (a worker's
    micro-batch) and after the last. ``changelog`` gets every write and delete in order."""
    engine = engine or PartitionEngine(0, cat)
    table = {} if table is None else table
    transitions = []
    for offset in range(start, len(messages)):
        engine.begin(offset)
        if many:
            engine.absorb_many(messages[offset])
        else:
            for r in messages[offset]:
                engine.absorb(r)
        if (offset - start + 1) % flush_every and offset < len(messages) - 1:
            continue
        result: MessageResult = engine.end()
        for key in result.deletes:
            table.pop(key, None)
        table.update(result.writes)
        if changelog is not None:
            changelog += [(key, None) for key in result.deletes]
            changelog += [(key, json.loads(json.dumps(v))) for key, v in result.writes.items()]
        transitions += [key_of(t) for t, _ in result.transitions]
    return transitions, engine, table


def own_counts(engine: PartitionEngine) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Per SLO, its own failures and its events in all its 10 s and 5 min buckets."""
    return {key: [rt.windows.own_range(res, 0, 2**62) for res in (FINE_MS, MEDIUM_MS)]
            for key, rt in engine.runtimes.items()}  # fmt: skip


def key_of(t: Any) -> tuple[Any, ...]:
    return (t.event_time_ms, t.service, t.slo, t.state, t.severity, t.tier.name,
            round(t.burn_rate_long, 9), round(t.burn_rate_short, 9), t.alert_id)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(), st.lists(st.integers(1, 40), min_size=1, max_size=5), st.integers(0, 8))
def test_engine_matches_the_oracle(
    events: list[Request], sizes: list[int], min_events: int
) -> None:
    cat = catalogue(min_events)
    messages = group(events, sizes)
    got, engine, _ = run(cat, messages)
    expected, state = oracle(cat.all_slos(), messages)
    assert got == [key_of(t) for t in expected]
    for key, o in state.items():
        rt = engine.runtimes.get(key)
        if o.clock is None:
            assert rt is None
            continue
        assert rt is not None and rt.clock_ms == o.clock
        # Every window at the final clock, and the budget, exactly.
        assert {w: rt.windows.window(w) for w in rt.windows.windows_ms} == o.windows(o.clock)
        if rt.latest is not None:
            good, total, remaining = oracle_budget(o)
            assert (rt.latest.good, rt.latest.total) == (good, total)
            assert rt.latest.budget_remaining_ratio == remaining


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(), st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_message_boundaries_do_not_change_the_result(
    events: list[Request], sizes: list[int]
) -> None:
    cat = catalogue(2)
    one_by_one, _, table_a = run(cat, group(events, [1]))
    batched, _, table_b = run(cat, group(events, sizes))
    assert one_by_one == batched
    strip = {k: v[:2] if isinstance(v, list) else v for k, v in table_a.items() if "|p" not in k}
    assert strip == {k: v[:2] if isinstance(v, list) else v
                     for k, v in table_b.items() if "|p" not in k}  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(), st.lists(st.integers(1, 30), min_size=1, max_size=4), st.data())
def test_a_crash_and_replay_counts_nothing_twice(
    events: list[Request], sizes: list[int], data: st.DataObject
) -> None:
    cat = catalogue(2)
    messages = group(events, sizes)
    expected, whole, final_table = run(cat, messages)
    crash_after = data.draw(st.integers(0, len(messages) - 1))
    committed = data.draw(st.integers(-1, crash_after))  # offsets commit behind the changelog
    before, _, table = run(cat, messages[: crash_after + 1])
    restarted = PartitionEngine(0, cat)
    restarted.restore(table.items())
    after, _, table = run(cat, messages, engine=restarted, start=committed + 1, table=table)
    # Transitions already published are not published again; nothing is counted twice.
    assert before + after == expected
    assert table == final_table
    assert own_counts(restarted) == own_counts(whole)  # failures that named a callee too


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(), st.lists(st.integers(1, 10), min_size=1, max_size=4), st.integers(2, 25),
       st.data())  # fmt: skip
def test_micro_batches_change_nothing_and_survive_a_crash(
    events: list[Request], sizes: list[int], flush_every: int, data: st.DataObject
) -> None:
    """Several messages per end() (the worker's micro-batch): the same transitions and
    table as one end() per message; a crash after a flush, with offsets committed anywhere
    behind it, replays without counting anything twice."""
    cat = catalogue(2)
    messages = group(events, sizes)
    expected, _, final_table = run(cat, messages)
    batched, _, table = run(cat, messages, flush_every=flush_every)
    assert batched == expected
    assert table == final_table
    crash_after = data.draw(st.integers(0, len(messages) - 1))
    committed = data.draw(st.integers(-1, crash_after))
    before, _, table = run(cat, messages[: crash_after + 1], flush_every=flush_every)
    restarted = PartitionEngine(0, cat)
    restarted.restore(table.items())
    after, _, table = run(cat, messages, engine=restarted, start=committed + 1, table=table,
                          flush_every=flush_every)  # fmt: skip
    assert before + after == expected
    assert table == final_table


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(), st.lists(st.integers(1, 40), min_size=1, max_size=4), st.integers(1, 8))
def test_a_message_counted_as_runs_is_counted_as_its_events_one_by_one(
    events: list[Request], sizes: list[int], flush_every: int
) -> None:
    cat = catalogue(2)
    messages = group(events, sizes)
    expected, engine_a, table_a = run(cat, messages)
    got, engine_b, table_b = run(cat, messages, flush_every=flush_every, many=True)
    assert got == expected
    assert table_b == table_a
    assert {k: rt.latest for k, rt in engine_b.runtimes.items()} == {
        k: rt.latest for k, rt in engine_a.runtimes.items()
    }


def test_an_alert_fires_inside_the_tick_at_the_step_after_the_tipping_event() -> None:
    """Sub-second alerts. After 10 min of good traffic (1/s), bad events every 100 ms from
    1 s into a tick: the "fast" tier (2 min / 30 s, 2x a 1 % budget) holds with the 3rd
    (3 / 123 over 2 min), so the 4th, at the next 100 ms step and still inside the same
    10 s tick, carries the firing record."""
    cat = catalogue(0)
    history = [Request(f"h{i}", "a", "GET /", 200, 5.0, T0 + i * 1000) for i in range(600)]
    start = T0 + 600_000 + 1_000  # 1 s into a tick
    burst = [Request(f"b{i}", "a", "GET /", 503, 5.0, start + i * 100) for i in range(60)]
    engine = PartitionEngine(0, cat)
    fired: list[tuple[int, int]] = []
    for offset, r in enumerate(history + burst):
        engine.begin(offset)
        engine.absorb(r)
        for t, _ in engine.end().transitions:
            if t.state == "firing" and t.slo == "avail":
                fired.append((offset - len(history), t.event_time_ms))
    assert fired, "no alert"
    index, event_time = fired[0]
    assert index == 3
    assert event_time == burst[3].timestamp_ms < start // 10_000 * 10_000 + 10_000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(max_gap_ms=150_000), st.integers(1, 25), st.data())
def test_a_restore_from_the_whole_changelog_equals_one_from_the_compacted_table(
    events: list[Request], flush_every: int, data: st.DataObject
) -> None:
    """The worker's store hands the engine every changelog record in order, superseded
    values and tombstones included (compaction may not have run): the same engine as
    from the table, whatever comes next. Gaps of minutes take buckets past retention."""
    cat = catalogue(2)
    messages = group(events, [1])
    crash_after = data.draw(st.integers(0, len(messages) - 1))
    changelog: list[tuple[str, Any]] = []
    _, _, table = run(cat, messages[: crash_after + 1], flush_every=flush_every,
                      changelog=changelog)  # fmt: skip
    from_table = PartitionEngine(0, cat)
    from_table.restore(table.items())
    from_log = PartitionEngine(0, cat)
    for key, value in changelog:
        from_log.load_entry(key, value)
    from_log.finish_restore()
    # The worker's own changelog read hands the same entries over in batches.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(changelog)), max_size=6)))
    from_batches = PartitionEngine(0, cat)
    for lo, hi in zip([0, *cuts], [*cuts, len(changelog)], strict=True):
        chunk = changelog[lo:hi]
        from_batches.load_entries([k for k, _ in chunk], [v for _, v in chunk])
    from_batches.finish_restore()
    start = crash_after + 1
    after_table, _, table_a = run(cat, messages, from_table, start, dict(table), flush_every)
    after_log, _, table_b = run(cat, messages, from_log, start, dict(table), flush_every)
    after_batches, _, table_c = run(cat, messages, from_batches, start, dict(table), flush_every)
    assert after_log == after_table
    assert after_batches == after_log
    assert table_b == table_a
    assert table_c == table_b


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(max_gap_ms=150_000), st.integers(1, 25), st.data())
def test_a_restore_from_a_checkpoint_and_the_changelog_after_it_equals_one_from_the_changelog(
    events: list[Request], flush_every: int, data: st.DataObject
) -> None:
    """A local checkpoint: the live engine's bucket rings and the partition's other table
    entries at some point of its changelog, then the changelog after that point. The
    same engine as from the whole changelog, whatever comes next."""
    cat = catalogue(2)
    messages = group(events, [1])
    crash_after = data.draw(st.integers(0, len(messages) - 1))
    checkpoint_after = data.draw(st.integers(0, crash_after))
    changelog: list[tuple[str, Any]] = []
    _, live, table = run(cat, messages[: checkpoint_after + 1], flush_every=flush_every,
                         changelog=changelog)  # fmt: skip
    image = copy.deepcopy(live.bucket_image())
    entries = {k: copy.deepcopy(v) for k, v in table.items() if not k.startswith("0|b|")}
    at = len(changelog)
    run(cat, messages[: crash_after + 1], live, checkpoint_after + 1, table, flush_every,
        changelog=changelog)  # fmt: skip
    from_log = PartitionEngine(0, cat)
    from_log.load_entries([k for k, _ in changelog], [v for _, v in changelog])
    from_log.finish_restore()
    hot = PartitionEngine.from_bucket_image(0, cat, image)
    assert hot is not None
    hot.load_entries(list(entries), list(entries.values()))
    tail = changelog[at:]
    hot.load_entries([k for k, _ in tail], [v for _, v in tail])
    hot.finish_restore()
    assert {k: rt.latest for k, rt in hot.runtimes.items()} == {
        k: rt.latest for k, rt in from_log.runtimes.items()
    }
    assert own_counts(hot) == own_counts(from_log)
    start = crash_after + 1
    after_log, _, table_a = run(cat, messages, from_log, start, dict(table), flush_every)
    after_hot, _, table_b = run(cat, messages, hot, start, dict(table), flush_every)
    assert after_hot == after_log
    assert table_b == table_a


def test_a_checkpoint_of_other_windows_is_refused() -> None:
    """An SLO whose windows changed since the checkpoint has rings of another size: the
    partition is read from its changelog instead."""
    cat = catalogue(2)
    engine = PartitionEngine(0, cat)
    engine.begin(0)
    engine.absorb(Request("r0", "a", "GET /", 200, 5.0, T0))
    engine.end()
    image = copy.deepcopy(engine.bucket_image())
    key = next(iter(image.slos))
    ring = image.slos[key][0]
    image.slos[key][0] = dataclasses.replace(ring, cells=ring.cells[:-3])
    assert PartitionEngine.from_bucket_image(0, cat, image) is None
    assert image.held == 3 * len(image.slos)  # one bucket per resolution and SLO


def test_good_events_that_meet_min_events_inside_a_tick_let_an_alert_fire_there() -> None:
    """Inside a tick, a look that finds too few events (min_events) is no reason to skip
    later looks until the next bad event: six good events over 40 s, then one bad event
    1 s into a tick and good ones every 100 ms. The "fast" tier trips once the 2 min window
    holds 10 events (three good ones after the bad one), at the 4th good one's step, inside
    the tick."""
    cat = catalogue(10)
    history = [Request(f"h{i}", "a", "GET /", 200, 5.0, T0 + i * 8_000) for i in range(6)]
    start = T0 + 60_000 + 1_000  # 1 s into a tick
    bad = [Request("b", "a", "GET /", 503, 5.0, start)]
    after = [Request(f"g{i}", "a", "GET /", 200, 5.0, start + (i + 1) * 100) for i in range(30)]
    messages = [[r] for r in history + bad + after]
    got, _, _ = run(cat, messages)
    expected, _ = oracle(cat.all_slos(), messages)
    assert got == [key_of(t) for t in expected]
    firing = [t for t in expected if t.state == "firing" and t.slo == "avail"]
    assert firing and firing[0].event_time_ms < start // 10_000 * 10_000 + 10_000


def test_late_bad_events_inside_a_tick_let_an_alert_fire_there() -> None:
    """Late bad events land in closed buckets, not the open tick: they too must make the
    next step inside the tick look again. After 10 min of good traffic (1/s), one bad event
    1 s into a tick is not enough for the "fast" tier (2 % of 2 min); two late ones for the
    tick before are, and the next good event's step carries the firing record."""
    cat = catalogue(0)
    history = [Request(f"h{i}", "a", "GET /", 200, 5.0, T0 + i * 1000) for i in range(600)]
    start = T0 + 600_000 + 1_000  # 1 s into a tick
    first = [Request("b0", "a", "GET /", 503, 5.0, start),
             Request("g0", "a", "GET /", 200, 5.0, start + 100)]  # fmt: skip
    late = [Request(f"l{i}", "a", "GET /", 503, 5.0, start - 3_000 + i * 500) for i in range(2)]
    after = [Request(f"a{i}", "a", "GET /", 200, 5.0, start + 100 * (i + 2)) for i in range(5)]
    messages = [[r] for r in history + first + late + after]
    got, _, _ = run(cat, messages)
    expected, _ = oracle(cat.all_slos(), messages)
    assert got == [key_of(t) for t in expected]
    firing = [t for t in expected if t.state == "firing" and t.slo == "avail"]
    assert firing and firing[0].event_time_ms == after[0].timestamp_ms
