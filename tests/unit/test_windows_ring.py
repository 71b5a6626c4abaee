"""The ring of buckets behaves as a plain dict of buckets with a retention would, the bad
events that named a callee included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from slipstream.slo.windows import HEADROOM, Series

KEEP = 12

# ("add", index relative to the clock, bad, total, of the bad those naming a callee) or
# ("advance", steps)
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(-KEEP, HEADROOM),
            st.integers(0, 3),
            st.integers(1, 5),
            st.sampled_from((0, 0, 1, 3)),
        ),
        st.tuples(st.just("advance"), st.integers(0, 3 * KEEP), st.just(0), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(-50, 50), ops=OPS)
def test_the_ring_keeps_what_a_dict_with_retention_keeps(
    start: int, ops: list[tuple[str, int, int, int, int]]
) -> None:
    ring = Series(10_000, KEEP)
    model: dict[int, list[int]] = {}  # index -> [bad, total, offset, via]
    clock = start
    for offset, (op, value, bad, total, via) in enumerate(ops):
        if op == "add":
            index = clock + value  # the engine never counts older than the retention
            named = min(via, bad)
            assert ring.add(index, bad, total, offset, named)
            cell = model.setdefault(index, [0, 0, -1, 0])
            cell[0] += bad
            cell[1] += total
            cell[2] = max(cell[2], offset)
            cell[3] += named
        else:
            clock += value
            limit = clock - KEEP
            gone = sorted(i for i in model if i < limit)
            for i in gone:
                del model[i]
            assert sorted(ring.expire(clock)) == gone
        for index in range(clock - 3 * KEEP, clock + HEADROOM + 2):
            expected = model.get(index)
            assert ring.cell(index) == (tuple(expected[:3]) if expected else None)
            assert ring.via_count(index) == (expected[3] if expected else 0)
            assert ring.counts(index) == ((expected[0], expected[1]) if expected else (0, 0))
            assert ring.offset(index) == (expected[2] if expected else -1)
        lo = clock - 2 * KEEP
        for hi in range(lo, clock + HEADROOM + 2):  # every span, wrapping round the ring
            for first in (lo, hi - KEEP // 2, hi - 1):
                span = [model.get(i, [0, 0, -1, 0]) for i in range(first, hi)]
                assert ring.sum(first, hi) == (sum(c[0] for c in span), sum(c[1] for c in span))
                assert ring.via_sum(first, hi) == sum(c[3] for c in span)


def test_an_index_far_ahead_pushes_the_oldest_out_and_they_are_reported_as_expired() -> None:
    ring = Series(10_000, KEEP)
    for index in range(100, 100 + KEEP + 1):
        ring.put(index, 1, 2, index)
    ring.put(100 + KEEP + 5, 1, 1, 999)  # a bucket written just before a crash, say
    assert ring.cell(100) is None
    assert ring.cell(101 + HEADROOM) == (1, 2, 101 + HEADROOM)
    assert sorted(ring.expire(100 + KEEP)) == [100, 101, 102]


def test_an_index_older_than_the_ring_is_refused_not_wrapped_onto_a_newer_one() -> None:
    ring = Series(10_000, KEEP)
    ring.put(500, 1, 1, 0)
    assert not ring.add(500 - KEEP - HEADROOM - 1, 1, 1, 1)
    assert ring.cell(500) == (1, 1, 0)
    assert ring.add(500 - KEEP - HEADROOM, 2, 3, 4)
    assert ring.cell(500 - KEEP - HEADROOM) == (2, 3, 4)


def test_a_restore_keeps_the_bucket_value_that_absorbed_the_most() -> None:
    from slipstream.slo.windows import FINE_MS, WindowCounts

    windows = WindowCounts([3_600_000])
    windows.load(FINE_MS, 100, bad=3, total=50, offset=40)  # the newer state
    windows.load(FINE_MS, 100, bad=1, total=20, offset=12)  # a paused worker's, sent later
    assert windows.series[FINE_MS].counts(100) == (3, 50)
    assert windows.series[FINE_MS].offset(100) == 40
    windows.load(FINE_MS, 100, bad=4, total=60, offset=41)  # newer still: taken
    assert windows.series[FINE_MS].counts(100) == (4, 60)
