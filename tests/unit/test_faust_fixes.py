"""faust's commit bookkeeping with our two fixes: duplicates no longer stall commits, and a
seek never records a gap that would count unprocessed offsets as done."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from slipstream.streams import faust_fixes

TOPIC = TP("ns.slo.requests", 0)


def _bookkeeping(acked: list[int], committed: int) -> Any:
    return SimpleNamespace(
        _acked=defaultdict(list, {TOPIC: list(acked)}),
        _acked_index=defaultdict(set, {TOPIC: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {TOPIC: committed}),
    )


def test_duplicate_acks_commit_the_whole_run() -> None:
    faust_fixes.apply()
    # Offsets 5..8, some acknowledged twice (a gap entry and the message itself).
    state = _bookkeeping([5, 6, 6, 7, 7, 8], committed=4)
    assert faust_consumer.Consumer._new_offset(state, TOPIC) == 9
    assert state._acked[TOPIC] == []


def test_a_missing_offset_still_stops_the_commit_before_it() -> None:
    faust_fixes.apply()
    state = _bookkeeping([5, 6, 8, 9], committed=4)
    assert faust_consumer.Consumer._new_offset(state, TOPIC) == 7  # 7 is not done yet
    assert state._acked[TOPIC] == [8, 9]


def test_a_seek_records_no_gap() -> None:
    faust_fixes.apply()
    state = _bookkeeping([], committed=4)
    asyncio.run(faust_consumer.Consumer._add_gap(state, TOPIC, 5, 40))
    assert not state._gap[TOPIC]
    state._acked[TOPIC] = [41]
    # Without a gap, 5..40 are not taken as done: nothing past them commits.
    assert faust_consumer.Consumer._new_offset(state, TOPIC) is None


def test_apply_twice_patches_once() -> None:
    faust_fixes.apply()
    patched = faust_consumer.Consumer._new_offset
    faust_fixes.apply()
    assert faust_consumer.Consumer._new_offset is patched
