"""Exact windowed counts from tumbling buckets at three resolutions, with running sums.

Every event is counted in a 10 s, a 5 min and a 1 h bucket. The evaluation
clock ``B`` moves in 10 s steps (event time). A window of length ``W`` whose
resolution is ``R`` (10 s up to 6 h, 5 min up to 3 d, 1 h beyond) covers

    [floor(B / R) · R - W, B)

that is, ``W`` of whole ``R``-buckets plus the part of the current
``R``-bucket that has passed, built from coarse buckets for the old part and
finer buckets for the recent part. Each window is a running sum updated as
``B`` steps and as late events arrive, so evaluating is O(number of windows).

Every bucket carries the highest source offset it has absorbed (the offset
guard of RELIABILITY.md); the engine decides with it whether a replayed
message is already counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

FINE_MS: Final = 10_000
MEDIUM_MS: Final = 300_000
COARSE_MS: Final = 3_600_000
RESOLUTIONS_MS: Final = (FINE_MS, MEDIUM_MS, COARSE_MS)
FINE_MAX_WINDOW_MS: Final = 6 * 3_600_000
MEDIUM_MAX_WINDOW_MS: Final = 3 * 86_400_000
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


@dataclass
class Bucket:
    bad: int = 0
    total: int = 0
    offset: int = -1  # highest source offset absorbed


class Series:
    """Sparse buckets of one resolution, forgetting those older than ``keep`` buckets."""

    def __init__(self, res_ms: int, keep: int) -> None:
        self.res_ms = res_ms
        self.keep = keep
        self.buckets: dict[int, Bucket] = {}
        self._floor = None  # type: int | None  # lowest index that may still exist

    def get(self, index: int) -> Bucket | None:
        return self.buckets.get(index)

    def counts(self, index: int) -> tuple[int, int]:
        b = self.buckets.get(index)
        return (b.bad, b.total) if b else (0, 0)

    def oldest_kept(self, newest_index: int) -> int:
        return newest_index - self.keep

    def expire(self, newest_index: int) -> list[int]:
        """Drop buckets older than the retention; return their indexes."""
        limit = self.oldest_kept(newest_index)
        if self._floor is None:
            self._floor = min(self.buckets, default=limit)
        if limit <= self._floor:
            return []
        gone = []
        if limit - self._floor > len(self.buckets):
            gone = [i for i in self.buckets if i < limit]
        else:
            gone = [i for i in range(self._floor, limit) if i in self.buckets]
        for i in gone:
            del self.buckets[i]
        self._floor = limit
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

    def late(self, index: int, bad: int, total: int) -> None:
        if self.lo <= index < self.hi:
            self.bad += bad
            self.total += total


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
        self.ranges = {w: RangeSum(self.series[resolution_for(w)]) for w in self.windows_ms}
        # Recent parts shared by coarser windows: fine since the last 5 min boundary,
        # medium since the last 1 h boundary.
        self.fine_tail = RangeSum(self.series[FINE_MS])
        self.medium_tail = RangeSum(self.series[MEDIUM_MS])
        self.clock_ms: int | None = None

    # -- counting ---------------------------------------------------------------------

    def add(self, res_ms: int, index: int, bad: int, total: int, offset: int) -> None:
        """Count into one bucket; running sums that already cover it see it at once."""
        series = self.series[res_ms]
        if self.clock_ms is not None and index < series.oldest_kept(self.clock_ms // res_ms):
            return  # older than every window of this resolution can reach
        bucket = series.buckets.get(index)
        if bucket is None:
            bucket = series.buckets[index] = Bucket()
        bucket.bad += bad
        bucket.total += total
        bucket.offset = max(bucket.offset, offset)
        for w in self.by_res[res_ms]:
            self.ranges[w].late(index, bad, total)
        if res_ms == FINE_MS:
            self.fine_tail.late(index, bad, total)
        elif res_ms == MEDIUM_MS:
            self.medium_tail.late(index, bad, total)

    def load(self, res_ms: int, index: int, bucket: Bucket) -> None:
        """Restore a bucket from the changelog (before the clock is set)."""
        self.series[res_ms].buckets[index] = bucket

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
            res = resolution_for(w)
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
        series = self.series[FINE_MS]
        bad = total = 0
        for index in range(start_ms // FINE_MS, end_ms // FINE_MS):
            b, t = series.counts(index)
            bad += b
            total += t
        return bad, total

    def window(self, window_ms: int) -> tuple[int, int]:
        """(bad, total) of the window at the current clock."""
        rs = self.ranges[window_ms]
        bad, total = rs.bad, rs.total
        res = resolution_for(window_ms)
        if res >= MEDIUM_MS:
            bad += self.fine_tail.bad
            total += self.fine_tail.total
        if res == COARSE_MS:
            bad += self.medium_tail.bad
            total += self.medium_tail.total
        return bad, total
