"""A brute-force reference for the SLO engine: recompute every window from the raw events.

Every window is counted afresh from the sorted list of all absorbed event times
(no buckets, no running sums, no resolutions other than the window's start).

It follows the engine's evaluation schedule (its specification: per-SLO clocks in
10 s steps, firing inside the open tick at FAST_MS steps, the idle rule, window starts)
but shares none of its counting code.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass, field

from slipstream.slo.alerts import AlertMachine, Transition, budget_remaining
from slipstream.slo.catalogue import Slo
from slipstream.slo.engine import windows_for
from slipstream.slo.events import Request
from slipstream.slo.tally import FAST_MS
from slipstream.slo.windows import FINE_MS, window_start_ms


@dataclass
class _OracleSlo:
    slo: Slo
    all_ts: list[int] = field(default_factory=list)  # every absorbed event time, sorted
    bad_ts: list[int] = field(default_factory=list)  # those of bad events, sorted
    clock: int | None = None
    first: int | None = None
    machine: AlertMachine = field(default_factory=AlertMachine)
    evaluations: list[tuple[int, dict[int, tuple[int, int]]]] = field(default_factory=list)
    fast: int = 0

    def windows(self, clock: int) -> dict[int, tuple[int, int]]:
        out = {}
        for w in windows_for(self.slo):
            start = window_start_ms(w, clock)
            total = bisect_left(self.all_ts, clock) - bisect_left(self.all_ts, start)
            bad = bisect_left(self.bad_ts, clock) - bisect_left(self.bad_ts, start)
            out[w] = (bad, total)
        return out

    def absorb(self, ts: int, bad: bool) -> None:
        insort(self.all_ts, ts)
        if bad:
            insort(self.bad_ts, ts)

    def fire_inside_tick(self, step: int, transitions: list[Transition]) -> None:
        """The first event past a FAST_MS step inside the open tick: may a tier fire?"""
        if step <= self.fast:
            return
        self.fast = step
        assert self.clock is not None and self.first is not None
        lo, hi = self.clock, self.clock + FINE_MS
        open_total = bisect_left(self.all_ts, hi) - bisect_left(self.all_ts, lo)
        open_bad = bisect_left(self.bad_ts, hi) - bisect_left(self.bad_ts, lo)
        if not open_bad:
            return
        windows = {w: (b + open_bad, t + open_total) for w, (b, t) in self.windows(lo).items()}
        t = self.machine.evaluate(self.slo, step, windows, step - self.first, may_clear=False)
        if t is not None:
            transitions.append(t)

    def advance(self, target: int, transitions: list[Transition]) -> None:
        if self.clock is None:
            self.clock = self.first = target
            return
        step = self.clock + FINE_MS
        while step <= target:
            self.clock = step
            windows = self.windows(step)
            self.evaluations.append((step, windows))
            assert self.first is not None
            t = self.machine.evaluate(self.slo, step, windows, step - self.first)
            if t is not None:
                transitions.append(t)
            step += FINE_MS


def oracle(
    slos: Sequence[Slo], messages: Sequence[Sequence[Request]], idle_lateness_ms: int = 300_000
) -> tuple[list[Transition], dict[tuple[str, str], _OracleSlo]]:
    state = {(s.service, s.name): _OracleSlo(s) for s in slos}
    transitions: list[Transition] = []
    watermark: int | None = None
    idle_clock = 0
    for message in messages:
        for r in message:
            watermark = r.timestamp_ms if watermark is None else max(watermark, r.timestamp_ms)
            for o in state.values():
                if o.slo.service != r.service:
                    continue
                boundary = r.timestamp_ms // FINE_MS * FINE_MS
                if o.clock is None or boundary > o.clock:
                    o.advance(boundary, transitions)
                    o.fast = r.timestamp_ms // FAST_MS * FAST_MS
                elif r.timestamp_ms >= o.clock:
                    o.fire_inside_tick(r.timestamp_ms // FAST_MS * FAST_MS, transitions)
                o.absorb(r.timestamp_ms, o.slo.sli.is_bad(r))
        if watermark is not None:
            idle = (watermark - idle_lateness_ms) // FINE_MS * FINE_MS
            if idle > idle_clock:
                idle_clock = idle
                for o in state.values():
                    if o.clock is not None and o.clock < idle:
                        o.advance(idle, transitions)
    return transitions, state


def oracle_budget(o: _OracleSlo) -> tuple[int, int, float]:
    """(good, total, budget remaining) over the period as of the SLO's last evaluation."""
    _, windows = o.evaluations[-1]
    bad, total = windows[o.slo.period_ms]
    return total - bad, total, budget_remaining(bad, total, o.slo.error_budget)
