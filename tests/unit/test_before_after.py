"""Before/after judgement of a change that never splits traffic (a config push): the rise
must be the change's, not something that hit the services around it at the same time."""

from __future__ import annotations

from collections.abc import Callable

from slipstream.slo.correlation import ControlShift, control_shift, rise_start
from slipstream.slo.deploys import DeployTracker, Impact
from slipstream.slo.events import Deploy
from slipstream.slo.windows import FINE_MS, WindowCounts

T0 = 1_790_000_000_000 // 3_600_000 * 3_600_000
MINUTE = 60_000
BUCKETS_PER_MIN = MINUTE // FINE_MS


def counts(per_bucket: int, bad_every: Callable[[int], int]) -> WindowCounts:
    """Two hours before the change and one after: ``per_bucket`` events every 10 s, one
    of them bad every ``bad_every(minute since the change)`` buckets (0: none)."""
    w = WindowCounts([3_600_000])
    first = (T0 - 2 * 3_600_000) // FINE_MS
    for i, index in enumerate(range(first, (T0 + 3_600_000) // FINE_MS)):
        every = bad_every((index * FINE_MS - T0) // MINUTE)
        w.add(FINE_MS, index, int(every > 0 and i % every == 0), per_bucket, 0)
    return w


def steady(minute: int) -> int:
    return 100  # 1 bad in 100 buckets: 0.1 % at 10 events per bucket


def rises_at_3_min(minute: int) -> int:
    return 5 if minute >= 3 else 100  # 20 times the rate from 3 min after the change


def judge(controls: dict[str, WindowCounts], minutes: int = 20) -> list[Impact]:
    tracker = DeployTracker()
    for phase in ("started", "finished"):
        tracker.on_deploy(Deploy("api-cfg-7", "api", "cfg-7", "cfg-6", "config", phase, 1.0,
                                 T0, "ci"))  # fmt: skip
    slo = counts(10, rises_at_3_min)
    impacts = []
    for clock in range(T0 + FINE_MS, T0 + minutes * MINUTE, FINE_MS):
        impact = tracker.evaluate("api", "api/availability", clock, 10**7, 0.001, slo,
                                  lambda: controls)  # fmt: skip
        if impact is not None:
            impacts.append(impact)
    return impacts


def test_a_late_rise_waits_for_controls_that_could_have_seen_an_incident() -> None:
    quiet = {f"q{i}/availability": counts(1, lambda m: 1000) for i in range(4)}
    impacts = judge(quiet)
    assert impacts, "a strong rise is at least suspected"
    assert all(i.verdict.verdict != "ATTRIBUTED" for i in impacts)
    assert impacts[-1].evidence["note"] == "waiting for controls"
    assert impacts[-1].evidence["controls"]["rise_from_ms"] == T0 + 3 * MINUTE


def test_busy_steady_controls_let_a_late_rise_be_attributed() -> None:
    busy = {f"b{i}/availability": counts(100, lambda m: 10) for i in range(3)}
    verdicts = [i.verdict.verdict for i in judge(busy)]
    assert verdicts[-1] == "ATTRIBUTED"


def test_controls_rising_with_the_slo_keep_the_change_unblamed() -> None:
    incident = {f"b{i}/availability": counts(100, lambda m: 1 if m >= 3 else 10)
                for i in range(3)}  # fmt: skip
    impacts = judge(incident)
    assert all(i.verdict.verdict != "ATTRIBUTED" for i in impacts)


def test_rise_start_finds_the_change_point() -> None:
    steps = [(1, 1000)] * 10 + [(20, 1000)] * 5
    assert rise_start(steps, 0.001) == 10
    assert rise_start([(1, 1000)] * 10, 0.001) == 0  # nothing rose


def test_pooled_controls_see_a_rise_no_single_control_can() -> None:
    # Each control: 2 bad of 1 000 before, 3 of 200 after (7.5x, but 3 bad events alone).
    shift = control_shift([((2, 1000), (3, 200))] * 4, min_ratio=2.0)
    assert shift == ControlShift(usable=4, degraded=0, factor=1.0, pooled_rose=True)
    assert shift.shared
    assert not control_shift([((2, 1000), (0, 200))] * 4, min_ratio=2.0).shared
