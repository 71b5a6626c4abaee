"""Exact windowed counts from tumbling buckets at three resolutions, with running sums.

Every event is counted in a 10 s, a 5 min and a 1 h bucket. The evaluation
clock ``B`` moves in 10 s steps (event time). A window of length ``W`` whose
resolution is ``R`` (10 s up to 1 h, 5 min up to 1 d, 1 h beyond) covers

    [floor(B / R) · R - W, B)

that is, ``W`` of whole ``R``-buckets plus the part of the current
``R``-bucket that has passed, built from coarse buckets for the old part and
finer buckets for the recent part. Each window is a running sum updated as
``B`` steps and as late events arrive, so evaluating is O(number of windows).

Every bucket carries the highest source offset it has absorbed (the offset
guard of RELIABILITY.md); the engine decides with it whether a replayed
message is already counted.

A bucket also counts, of its bad events, those that named the called service they failed
on (the request's ``callee``): the deploy correlation judges a service on its own
failures. Most services never name one, so that count has an array of its own, made at
the first such event.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

FINE_MS: Final = 10_000
MEDIUM_MS: Final = 300_000
COARSE_MS: Final = 3_600_000
RESOLUTIONS_MS: Final = (FINE_MS, MEDIUM_MS, COARSE_MS)
# Up to 1 h (the fast tiers' windows) exact to 10 s, up to 1 d to 5 min, beyond to 1 h: a
# window at most ~1.4 % longer than asked for from 6 h on (4 % for 2 h), and ~1 750 buckets
# per SLO with a 30-day period instead of ~4 100 (10 s buckets for 6 h, 5 min for 3 d).
FINE_MAX_WINDOW_MS: Final = 3_600_000
MEDIUM_MAX_WINDOW_MS: Final = 86_400_000
RES_CODE: Final = {FINE_MS: "f", MEDIUM_MS: "m", COARSE_MS: "c"}


def resolution_for(window_ms: int) -> int:
    if window_ms <= FINE_MAX_WINDOW_MS and window_ms % FINE_MS == 0:
        return FINE_MS
    if window_ms <= MEDIUM_MAX_WINDOW_MS and window_ms % MEDIUM_MS == 0:
        return MEDIUM_MS
    if window_ms % COARSE_MS == 0:
        return COARSE_MS
    raise ValueError(f"window of {window_ms} ms fits no bucket resolution")


def window_start_ms(window_ms: int, clock_ms: int) -> int:
    """Where the window of ``window_ms`` evaluated at ``clock_ms`` begins (see module doc)."""
    res = resolution_for(window_ms)
    return clock_ms // res * res - window_ms


_EMPTY: Final = (0, 0, -1)  # bad, total, offset of a bucket that holds nothing
HEADROOM: Final = 2  # indexes a restore may find ahead of the clock (a crash mid-batch)


@dataclass(frozen=True)
class SeriesImage:
    """A series' ring as a checkpoint holds it: the flat cell array and where it is filled,
    and the per-slot counts of bad events that named a callee, if any did."""

    res_ms: int
    floor: int
    newest: int | None
    evicted: list[int]
    cells: array[int]
    via: array[int] | None = None

    @property
    def held(self) -> int:
        """Buckets holding something (a count of restored entries, not a check)."""
        totals = self.cells[1::3]
        return len(totals) - totals.count(0)


class Series:
    """The buckets of one resolution back to ``keep`` buckets before the newest, in a ring.

    Index ``i`` lives in slot ``i % size`` of one flat array of 64-bit integers
    (bad, total, offset): 24 bytes per bucket whatever it holds, instead of a dict entry
    and a Python object per bucket (about 240 bytes). Every slot outside ``[floor,
    newest]`` holds ``_EMPTY``. ``via`` (None until a bad event names a callee) holds per
    slot how many of its bad events did: 8 bytes more per bucket, for those SLOs only.
    """

    __slots__ = ("_evicted", "cells", "floor", "keep", "newest", "res_ms", "size", "via")

    def __init__(self, res_ms: int, keep: int) -> None:
        self.res_ms = res_ms
        self.keep = keep
        self.size = keep + 1 + HEADROOM
        self.cells = array("q", _EMPTY) * self.size
        self.via: array[int] | None = None
        self.newest: int | None = None
        self.floor = 0  # no non-empty bucket below this index
        self._evicted: list[int] = []  # pushed out by an index far ahead; reported by expire

    def _holds(self, index: int) -> bool:
        return self.newest is not None and self.floor <= index <= self.newest

    def cell(self, index: int) -> tuple[int, int, int] | None:
        """(bad, total, offset) of a bucket that holds something, else None."""
        if not self._holds(index):
            return None
        at = index % self.size * 3
        cells = self.cells
        bad, total, offset = cells[at], cells[at + 1], cells[at + 2]
        if total == 0 and offset < 0 and bad == 0:
            return None
        return bad, total, offset

    def offset(self, index: int) -> int:
        """The highest source offset the bucket absorbed; -1 when it holds nothing."""
        newest = self.newest  # _holds, inline: the offset guard asks for every count
        if newest is None or not self.floor <= index <= newest:
            return -1
        return self.cells[index % self.size * 3 + 2]

    def counts(self, index: int) -> tuple[int, int]:
        if not self._holds(index):
            return 0, 0
        at = index % self.size * 3
        return self.cells[at], self.cells[at + 1]

    def via_count(self, index: int) -> int:
        """Of the bucket's bad events, those that named a callee."""
        if self.via is None or not self._holds(index):
            return 0
        return self.via[index % self.size]

    def via_sum(self, lo: int, hi: int) -> int:
        """``via_count`` summed over the buckets in [lo, hi)."""
        via = self.via
        if via is None or self.newest is None:
            return 0
        lo, hi = max(lo, self.floor), min(hi, self.newest + 1)
        total = 0
        while lo < hi:
            slot = lo % self.size
            n = min(hi - lo, self.size - slot)
            total += sum(via[slot : slot + n])
            lo += n
        return total

    def sum(self, lo: int, hi: int) -> tuple[int, int]:
        """(bad, total) of the buckets in [lo, hi), summed over slices of the ring (the
        correlation code asks for an hour of 10 s buckets per control at every tick)."""
        if self.newest is None:
            return 0, 0
        lo, hi = max(lo, self.floor), min(hi, self.newest + 1)
        bad = total = 0
        cells = self.cells
        while lo < hi:
            slot = lo % self.size
            n = min(hi - lo, self.size - slot)
            bad += sum(cells[slot * 3 : (slot + n) * 3 : 3])
            total += sum(cells[slot * 3 + 1 : (slot + n) * 3 : 3])
            lo += n
        return bad, total

    def oldest_kept(self, newest_index: int) -> int:
        return newest_index - self.keep

    def add(self, index: int, bad: int, total: int, offset: int, via: int = 0) -> bool:
        """Count into a bucket (``via`` of the ``bad`` events named a callee); False when
        the index is too old for the ring."""
        newest = self.newest  # the common case first: a bucket already in the ring
        if (newest is None or not self.floor <= index <= newest) and not self._make_room(index):
            return False
        slot = index % self.size
        at = slot * 3
        cells = self.cells
        cells[at] += bad
        cells[at + 1] += total
        cells[at + 2] = max(cells[at + 2], offset)
        if via:
            self._via()[slot] += via
        return True

    def put(self, index: int, bad: int, total: int, offset: int, via: int = 0) -> bool:
        """Set a bucket (restoring it); False when the index is too old for the ring."""
        if not self._make_room(index):
            return False
        slot = index % self.size
        self.cells[slot * 3 : slot * 3 + 3] = array("q", (bad, total, offset))
        if via or self.via is not None:
            self._via()[slot] = via
        return True

    def _via(self) -> array[int]:
        if self.via is None:
            self.via = array("q", (0,)) * self.size
        return self.via

    def drop(self, index: int) -> None:
        if self._holds(index):
            self._clear(index)

    def _make_room(self, index: int) -> bool:
        if self.newest is None:
            self.newest = self.floor = index
            return True
        if index > self.newest:
            self._move_newest(index)
        elif index < self.floor:
            if index <= self.newest - self.size:
                return False
            self.floor = index  # the slots between are empty (see the class doc)
        return True

    def _move_newest(self, index: int) -> None:
        """Make ``index`` the newest: the slots it and the indexes before it take over held
        the oldest buckets, which are cleared (and reported by the next ``expire``)."""
        assert self.newest is not None
        first_reused = max(self.floor, self.newest + 1 - self.size)
        for old in range(first_reused, min(self.newest + 1, index + 1 - self.size)):
            if self.cell(old) is not None:
                self._evicted.append(old)
            self._clear(old)
        self.newest = index
        self.floor = max(self.floor, index + 1 - self.size)

    def _clear(self, index: int) -> None:
        slot = index % self.size
        self.cells[slot * 3 : slot * 3 + 3] = array("q", _EMPTY)
        if self.via is not None:
            self.via[slot] = 0

    def image(self) -> SeriesImage:
        """The ring as it stands (the array itself, not a copy: serialise it at once)."""
        return SeriesImage(
            self.res_ms, self.floor, self.newest, list(self._evicted), self.cells, self.via
        )

    def take_image(self, image: SeriesImage) -> bool:
        """Become the ring of ``image`` (a checkpoint of this series); False when its size
        differs (the SLO's windows changed since: its buckets must come from the changelog)."""
        if image.res_ms != self.res_ms or len(image.cells) != len(self.cells):
            return False
        if image.via is not None and len(image.via) != self.size:
            return False
        self.cells, self.via = image.cells, image.via
        self.floor, self.newest, self._evicted = image.floor, image.newest, list(image.evicted)
        return True

    def expire(self, newest_index: int) -> list[int]:
        """Drop buckets older than the retention; return the indexes of those that held
        something."""
        if self.newest is not None and newest_index > self.newest:
            self._move_newest(newest_index)
        gone, self._evicted = self._evicted, []
        if self.newest is None:
            return gone
        limit = self.oldest_kept(newest_index)
        for index in range(self.floor, min(limit, self.newest + 1)):
            if self.cell(index) is not None:
                gone.append(index)
            self._clear(index)
        self.floor = max(self.floor, limit)
        return gone


class RangeSum:
    """The running (bad, total) over bucket indexes [lo, hi) of one series."""

    __slots__ = ("bad", "hi", "lo", "series", "total")

    def __init__(self, series: Series) -> None:
        self.series = series
        self.lo = self.hi = 0
        self.bad = self.total = 0

    def move(self, lo: int, hi: int) -> None:
        if lo >= self.hi or hi <= self.lo or (hi - lo) < (abs(lo - self.lo) + abs(hi - self.hi)):
            # Disjoint or a big jump: sum afresh.
            self.lo, self.hi = lo, hi
            self.bad = self.total = 0
            for i in range(lo, hi):
                bad, total = self.series.counts(i)
                self.bad += bad
                self.total += total
            return
        counts = self.series.counts
        for i in range(self.lo, lo):  # leaving at the old end
            bad, total = counts(i)
            self.bad -= bad
            self.total -= total
        for i in range(lo, self.lo):  # (never in practice: windows only move forward)
            bad, total = counts(i)
            self.bad += bad
            self.total += total
        for i in range(self.hi, hi):  # entering at the new end
            bad, total = counts(i)
            self.bad += bad
            self.total += total
        self.lo, self.hi = lo, hi


class WindowCounts:
    """All the windows one SLO needs, over the three series, at clock ``clock_ms``."""

    def __init__(self, windows_ms: Iterable[int], margin_ms: int = 3_600_000) -> None:
        self.windows_ms = sorted(set(windows_ms))
        by_res: dict[int, list[int]] = {r: [] for r in RESOLUTIONS_MS}
        for w in self.windows_ms:
            by_res[resolution_for(w)].append(w)
        self.by_res = by_res
        # Each series keeps what its windows and the finer tails of coarser windows reach.
        fine_reach = max([*by_res[FINE_MS], MEDIUM_MS])
        medium_reach = max([*by_res[MEDIUM_MS], COARSE_MS])
        coarse_reach = max([*by_res[COARSE_MS], COARSE_MS])
        self.series = {
            FINE_MS: Series(FINE_MS, (fine_reach + margin_ms) // FINE_MS),
            MEDIUM_MS: Series(MEDIUM_MS, (medium_reach + margin_ms) // MEDIUM_MS),
            COARSE_MS: Series(COARSE_MS, (coarse_reach + margin_ms) // COARSE_MS),
        }
        self.res_of = {w: resolution_for(w) for w in self.windows_ms}
        self.ranges = {w: RangeSum(self.series[self.res_of[w]]) for w in self.windows_ms}
        # Recent parts shared by coarser windows: fine since the last 5 min boundary,
        # medium since the last 1 h boundary.
        self.fine_tail = RangeSum(self.series[FINE_MS])
        self.medium_tail = RangeSum(self.series[MEDIUM_MS])
        # Per resolution, the running sums a count into one of its buckets may fall in.
        self._sums_of: dict[int, list[RangeSum]] = {
            res: [self.ranges[w] for w in by_res[res]] for res in RESOLUTIONS_MS
        }
        self._sums_of[FINE_MS].append(self.fine_tail)
        self._sums_of[MEDIUM_MS].append(self.medium_tail)
        self.clock_ms: int | None = None

    # -- counting ---------------------------------------------------------------------

    def add(self, res_ms: int, index: int, bad: int, total: int, offset: int, via: int = 0) -> None:
        """Count into one bucket (``via`` of the ``bad`` events named a callee); running
        sums that already cover it see it at once."""
        series = self.series[res_ms]
        clock = self.clock_ms
        if clock is not None and index < clock // res_ms - series.keep:  # series.oldest_kept
            return  # older than every window of this resolution can reach
        if not series.add(index, bad, total, offset, via):
            return
        for sums in self._sums_of[res_ms]:
            if sums.lo <= index < sums.hi:  # RangeSum.late, inline: once per count
                sums.bad += bad
                sums.total += total

    def load(
        self, res_ms: int, index: int, bad: int, total: int, offset: int, via: int = 0
    ) -> None:
        """Restore a bucket from the changelog (before the clock is set). A value that
        absorbed less of the source than the one already restored is a stale write (a
        paused worker's, sent after its partition had moved on) and is ignored: a
        bucket's offset only grows, so the highest one is its newest state."""
        series = self.series[res_ms]
        if series.offset(index) > offset:
            return
        series.put(index, bad, total, offset, via)

    def unload(self, res_ms: int, index: int) -> None:
        """Forget a bucket the changelog deleted (before the clock is set)."""
        self.series[res_ms].drop(index)

    # -- the clock --------------------------------------------------------------------

    def advance(self, clock_ms: int) -> list[tuple[int, int]]:
        """Move the clock forward to ``clock_ms`` (a 10 s boundary); return expired buckets
        as (resolution, index)."""
        if clock_ms % FINE_MS:
            raise ValueError(f"clock {clock_ms} is not on a 10 s boundary")
        if self.clock_ms is not None and clock_ms < self.clock_ms:
            raise ValueError("the clock never goes back")
        self.clock_ms = clock_ms
        f, m, c = clock_ms // FINE_MS, clock_ms // MEDIUM_MS, clock_ms // COARSE_MS
        for w, rs in self.ranges.items():
            res = self.res_of[w]
            hi = clock_ms // res
            rs.move(hi - w // res, hi)
        self.fine_tail.move(m * (MEDIUM_MS // FINE_MS), f)
        self.medium_tail.move(c * (COARSE_MS // MEDIUM_MS), m)
        expired = []
        for res, series in self.series.items():
            expired += [(res, i) for i in series.expire(clock_ms // res)]
        return expired

    def fine_range(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """(bad, total) of the 10 s buckets in [start, end), within the fine retention."""
        return self.range(FINE_MS, start_ms, end_ms)

    def range(self, res_ms: int, start_ms: int, end_ms: int) -> tuple[int, int]:
        """(bad, total) of the buckets of resolution ``res_ms`` in [start, end), within its
        retention."""
        return self.series[res_ms].sum(start_ms // res_ms, end_ms // res_ms)

    def names_callees(self) -> bool:
        """Whether a bad event counted here named the called service it failed on: since
        these buckets were made, or in those they were restored from."""
        return self.series[MEDIUM_MS].via is not None

    def own_range(self, res_ms: int, start_ms: int, end_ms: int) -> tuple[int, int]:
        """``range`` without the bad events that named a callee: the service's own."""
        series = self.series[res_ms]
        lo, hi = start_ms // res_ms, end_ms // res_ms
        bad, total = series.sum(lo, hi)
        return bad - series.via_sum(lo, hi), total

    def window(self, window_ms: int) -> tuple[int, int]:
        """(bad, total) of the window at the current clock."""
        rs = self.ranges[window_ms]
        bad, total = rs.bad, rs.total
        res = self.res_of[window_ms]
        if res >= MEDIUM_MS:
            bad += self.fine_tail.bad
            total += self.fine_tail.total
        if res == COARSE_MS:
            bad += self.medium_tail.bad
            total += self.medium_tail.total
        return bad, total


class Counts(Protocol):
    """What the deploy correlation reads of an SLO's buckets."""

    def fine_range(self, start_ms: int, end_ms: int) -> tuple[int, int]: ...

    def range(self, res_ms: int, start_ms: int, end_ms: int) -> tuple[int, int]: ...


class OwnCounts:
    """An SLO's counts as its service's own failures: the bad events that named the called
    service they failed on left out (what the deploy correlation reads)."""

    __slots__ = ("windows",)

    def __init__(self, windows: WindowCounts) -> None:
        self.windows = windows

    def fine_range(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        return self.windows.own_range(FINE_MS, start_ms, end_ms)

    def range(self, res_ms: int, start_ms: int, end_ms: int) -> tuple[int, int]:
        return self.windows.own_range(res_ms, start_ms, end_ms)
