"""A brute-force reference for the SLO engine: recompute every window from the raw events.

It follows the engine's evaluation schedule (its specification: per-SLO clocks in
10 s steps, the idle rule, window starts) but shares none of its counting code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from slipstream.slo.alerts import AlertMachine, Transition, budget_remaining
from slipstream.slo.catalogue import Slo
from slipstream.slo.engine import windows_for
from slipstream.slo.events import Request
from slipstream.slo.windows import FINE_MS, window_start_ms


@dataclass
class _OracleSlo:
    slo: Slo
    events: list[tuple[int, int]] = field(default_factory=list)  # (ts, bad) absorbed so far
    clock: int | None = None
    first: int | None = None
    machine: AlertMachine = field(default_factory=AlertMachine)
    evaluations: list[tuple[int, dict[int, tuple[int, int]]]] = field(default_factory=list)

    def windows(self, clock: int) -> dict[int, tuple[int, int]]:
        out = {}
        for w in windows_for(self.slo):
            start = window_start_ms(w, clock)
            inside = [bad for ts, bad in self.events if start <= ts < clock]
            out[w] = (sum(inside), len(inside))
        return out

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
                o.events.append((r.timestamp_ms, 1 if o.slo.sli.is_bad(r) else 0))
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
