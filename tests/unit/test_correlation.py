"""The version-split e-value, its mirror, the exact tail, the CUSUM, the ramp-or-step
likelihood and the verdict rules."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest

from slipstream.slo import correlation
from slipstream.slo.correlation import (
    E_THRESHOLD,
    Cusum,
    VersionSplitTest,
    binomial_upper_tail,
    ramp_over_step_llr,
    split_verdict,
    timing_weight,
)


def simulate(ratio: float, rho: float, base: float, ticks: int, per_tick: int,
             seed: int) -> VersionSplitTest:  # fmt: skip
    rng = random.Random(seed)
    test = VersionSplitTest()
    for _ in range(ticks):
        n_new = sum(rng.random() < rho for _ in range(per_tick))
        n_old = per_tick - n_new
        b_new = sum(rng.random() < base * ratio for _ in range(n_new))
        b_old = sum(rng.random() < base for _ in range(n_old))
        test.update(b_new, n_new, b_old, n_old)
    return test


def test_a_tenfold_regression_on_a_tenth_of_traffic_is_attributed() -> None:
    test = simulate(ratio=10, rho=0.1, base=0.01, ticks=60, per_tick=100, seed=1)
    assert test.e_harm >= E_THRESHOLD
    verdict = split_verdict(test, bad_rate_per_s=1.0)
    assert verdict.verdict == "ATTRIBUTED" and verdict.confidence >= 0.9
    rr = test.rate_ratio()
    assert rr is not None and rr[1] < 10 < rr[2]


def test_a_harmless_deploy_is_cleared() -> None:
    test = simulate(ratio=1.0, rho=0.5, base=0.02, ticks=200, per_tick=100, seed=2)
    assert split_verdict(test, 1.0).verdict == "CLEARED"


@pytest.mark.parametrize("minutes_per_tick", [None, 1.2])
def test_the_e_value_keeps_its_type_one_error_under_continuous_monitoring(
    minutes_per_tick: float | None,
) -> None:
    # Under "no effect", the e-value must cross 1/alpha in at most ~alpha of the runs,
    # even though it is checked after every tick (and with the ticks' times, over the
    # two judged hours: every late-onset test begins on the way).
    crossings = 0
    runs = 200
    for seed in range(runs):
        rng = random.Random(seed)
        test = VersionSplitTest()
        for i in range(1, 101):
            n_new = sum(rng.random() < 0.3 for _ in range(50))
            b_new = sum(rng.random() < 0.02 for _ in range(n_new))
            b_old = sum(rng.random() < 0.02 for _ in range(50 - n_new))
            elapsed = None if minutes_per_tick is None else int(i * minutes_per_tick * 60_000)
            test.update(b_new, n_new, b_old, 50 - n_new, elapsed_ms=elapsed)
            if test.e_harm >= E_THRESHOLD:
                crossings += 1
                break
    assert crossings / runs <= 0.02


def _attributed_at(
    seed: int, ratio_at: Callable[[float], float], new_share: float, clocked: bool = True
) -> float:
    """A deploy whose new version takes ``new_share`` of 10 events/s (0.2 % bad) and fails
    ``ratio_at(minutes since its start)`` times as often: minutes from its start until the
    split attributes it."""
    rng = random.Random(seed)
    test = VersionSplitTest()
    for i in range(1, 721):
        now = i * 10_000
        ratio = ratio_at(now / 60_000)
        n_new = sum(rng.random() < new_share for _ in range(100))
        b_new = sum(rng.random() < 0.002 * ratio for _ in range(n_new))
        b_old = sum(rng.random() < 0.002 for _ in range(100 - n_new))
        test.update(b_new, n_new, b_old, 100 - n_new, elapsed_ms=now if clocked else None)
        if split_verdict(test, 1.0).verdict == "ATTRIBUTED":
            return now / 60_000
    return math.inf


def _minutes_to_attribute(seed: int, onset_min: int, clocked: bool) -> float:
    """A canary (a tenth of the traffic) whose harm, 20x, begins ``onset_min`` minutes
    after its start: minutes from the onset until the split attributes it."""
    step = _attributed_at(seed, lambda m: 20.0 if m > onset_min else 1.0, 0.1, clocked)
    return step - onset_min


def test_a_harm_that_begins_late_is_attributed_from_its_onset() -> None:
    # Twenty minutes of the old version's everyday failures (nine in ten of them, by its
    # share) weigh against every large ratio; the test begun at the onset's minute does not
    # carry them.
    late = [_minutes_to_attribute(seed, 20, clocked=True) for seed in range(8)]
    from_start_only = [_minutes_to_attribute(seed, 20, clocked=False) for seed in range(8)]
    assert max(late) < 5
    assert sum(late) / 8 < sum(from_start_only) / 8 - 1.0
    # An immediate onset is attributed as soon either way.
    assert [_minutes_to_attribute(seed, 0, clocked=True) for seed in range(8)] == [
        _minutes_to_attribute(seed, 0, clocked=False) for seed in range(8)
    ]


def test_a_harm_that_grows_from_the_start_is_attributed_sooner_by_the_ramps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its first minutes' bad events, at a ratio of 2 or 3, weigh against every large fixed
    # ratio; a ramp that grows as the harm does carries them. Without the ramps (their share
    # back on the tests begun at the start: the mixture before them) it comes later.
    seeds = range(12)  # a rolling deploy: its new version takes half of the traffic
    growing, immediate = (lambda m: min(1.0 + m, 30.0)), (lambda m: 20.0)
    with_ramps = [_attributed_at(s, growing, 0.5) for s in seeds]
    immediate_with = [_attributed_at(s, immediate, 0.5) for s in seeds]
    monkeypatch.setattr(correlation, "RAMP_SHARE", 0.0)
    monkeypatch.setattr(correlation, "FROM_START_SHARE", 2 / 3)
    without = [_attributed_at(s, growing, 0.5) for s in seeds]
    immediate_without = [_attributed_at(s, immediate, 0.5) for s in seeds]
    assert all(a <= b for a, b in zip(with_ramps, without, strict=True))
    assert sum(with_ramps) / 12 < sum(without) / 12 - 0.25
    # An immediate step pays for the ramps' share: a tick or a few, never a minute.
    assert all(0 <= a - b < 1.0 for a, b in zip(immediate_with, immediate_without, strict=True))


def test_a_suspicion_stays_while_harm_is_the_likelier() -> None:
    leaning_away = _small_split(bad_new=6, total_new=300, bad_old=7, total_old=700)
    assert 0.47 < leaning_away.e_harm < 1.0
    assert split_verdict(leaning_away, 1.0).verdict == "INCONCLUSIVE"
    assert split_verdict(leaning_away, 1.0, suspected=True).verdict == "SUSPECTED"
    # Evidence against harm (every bad event on the old version since) ends a suspicion.
    for i in range(1, 31):
        leaning_away.update(0, 30, 1, 70, elapsed_ms=i * 10_000)
    assert leaning_away.e_harm < 0.47
    assert split_verdict(leaning_away, 1.0, suspected=True).verdict != "SUSPECTED"


def _published_verdicts(seed: int, ratio: float, hysteresis: bool) -> list[tuple[int, str]]:
    """(tick, verdict) of each change the deploy tracker would publish for a rolling deploy
    (three tenths of 5 events/s, 1 % bad) whose new version fails ``ratio`` times as often."""
    rng = random.Random(seed)
    test = VersionSplitTest()
    published: list[tuple[int, str]] = []
    previous = None
    for i in range(1, 721):
        n_new = sum(rng.random() < 0.3 for _ in range(50))
        b_new = sum(rng.random() < 0.01 * ratio for _ in range(n_new))
        b_old = sum(rng.random() < 0.01 for _ in range(50 - n_new))
        test.update(b_new, n_new, b_old, 50 - n_new, elapsed_ms=i * 10_000)
        verdict = split_verdict(test, 1.0, suspected=hysteresis and previous == "SUSPECTED")
        # As the tracker: a clearance is not withdrawn for want of evidence, an attribution
        # is final.
        if verdict.verdict == previous or (previous == "CLEARED" and verdict.verdict not in
                                           ("SUSPECTED", "ATTRIBUTED")):  # fmt: skip
            continue
        previous = verdict.verdict
        published.append((i, previous))
        if previous == "ATTRIBUTED":
            break
    return published


@pytest.mark.parametrize("ratio", [1.0, 1.5])
def test_a_suspicion_does_not_flap_with_each_bad_event(ratio: float) -> None:
    # A weak harm's (or none's) e-value wavers about 1 for many minutes: each crossing was a
    # record on slo.deploy-impact. Once SUSPECTED, a deploy stays so while harm is the
    # likelier; attributions come at the same tick, and suspicions still end.
    runs = [(_published_verdicts(s, ratio, False), _published_verdicts(s, ratio, True))
            for s in range(40)]  # fmt: skip
    flapping = sum(len(a) for a, _ in runs)
    steady = sum(len(b) for _, b in runs)
    assert steady < flapping * (0.5 if ratio > 1 else 0.9)
    for a, b in runs:
        attributed = [t for t, v in a if v == "ATTRIBUTED"]
        assert attributed == [t for t, v in b if v == "ATTRIBUTED"]
    ended = sum(("SUSPECTED", "INCONCLUSIVE") in itertools.pairwise(v for _, v in b)
                for _, b in runs)  # fmt: skip
    assert ratio > 1 or ended > 0


def test_too_little_evidence_is_inconclusive_with_an_eta() -> None:
    test = VersionSplitTest()
    test.update(2, 10, 1, 90)
    verdict = split_verdict(test, bad_rate_per_s=0.5)
    assert verdict.verdict == "INCONCLUSIVE"
    assert verdict.decision_eta_s == pytest.approx(14.0)


def _small_split(bad_new: int, total_new: int, bad_old: int, total_old: int) -> VersionSplitTest:
    """A split seen tick by tick: one bad event per tick, new-version ones first."""
    test = VersionSplitTest()
    ticks = bad_new + bad_old
    for i in range(ticks):
        on_new = i < bad_new
        test.update(int(on_new), total_new // ticks, int(not on_new), total_old // ticks)
    return test


def test_few_split_events_decide_with_the_hour_before_as_second_witness() -> None:
    # A canary's first four bad events, all on its 10 % (the seed-38 world's numbers): the
    # e-value crosses 1/alpha, but four events are too few on their own.
    test = _small_split(bad_new=4, total_new=64, bad_old=0, total_old=608)
    assert test.e_harm >= E_THRESHOLD
    assert split_verdict(test, 1.0).verdict == "INCONCLUSIVE"
    # The calm hour before: 16 bad of 11 660; four of 64 on the new version are far beyond.
    verdict = split_verdict(test, 1.0, reference=(16, 11_660))
    assert verdict.verdict == "ATTRIBUTED"
    # Counts that vary more than a binomial's weaken the witness (four events count as one).
    assert split_verdict(test, 1.0, reference=(16, 11_660), dispersion=4.0).verdict == (
        "INCONCLUSIVE"
    )


def test_the_hour_before_does_not_witness_a_rate_it_makes_likely() -> None:
    # Four of 583 on the new version (three of 10 191 on the old) where the hour before failed
    # 30 times in 95 996: a fluke of the split (e over 1/alpha) the hour before does not back.
    test = _small_split(bad_new=4, total_new=583, bad_old=3, total_old=10_191)
    assert test.e_harm >= E_THRESHOLD
    assert split_verdict(test, 1.0, reference=(30, 95_996)).verdict == "INCONCLUSIVE"
    # ... nor an hour that holds too few bad events to complete the evidence.
    few = _small_split(bad_new=4, total_new=64, bad_old=0, total_old=608)
    assert split_verdict(few, 1.0, reference=(5, 11_660)).verdict == "INCONCLUSIVE"


def test_state_round_trips() -> None:
    test = simulate(ratio=3, rho=0.2, base=0.02, ticks=10, per_tick=100, seed=3)
    test.update(5, 100, 1, 400, elapsed_ms=300_000, via_old=1)
    again = VersionSplitTest.from_list(test.to_list())
    assert again.e_harm == test.e_harm and again.bad_events == test.bad_events
    assert again.slots_begun == 5 and again.ramp_log_lr == test.ramp_log_lr
    assert again.own_old == (test.bad_old - 1, test.total_old)
    # State written before the late-onset tests existed reads as none begun.
    old = VersionSplitTest.from_list(test.to_list()[:6])
    assert old.slots_begun == 0 and old.log_lr == test.log_lr
    # ... and state written before the ramps, as ramps that never bet.
    no_ramps = VersionSplitTest.from_list(test.to_list()[:8])
    assert no_ramps.ramp_log_lr == [0.0] * len(test.ramp_log_lr)
    assert no_ramps.late_log == test.late_log
    # ... and state written before the callees were told apart, as none named.
    unnamed = VersionSplitTest.from_list(test.to_list()[:9])
    assert unnamed.own_old == (test.bad_old, test.total_old)


def test_binomial_tail_is_exact() -> None:
    assert binomial_upper_tail(0, 5, 0.3) == 1.0
    assert binomial_upper_tail(5, 5, 0.5) == pytest.approx(1 / 32)
    assert binomial_upper_tail(2, 3, 0.5) == pytest.approx(0.5)
    assert binomial_upper_tail(6, 5, 0.5) == 0.0


def test_cusum_alarms_and_estimates_the_onset() -> None:
    cusum = Cusum(p0=0.001, p1=0.01)
    rng = random.Random(4)
    alarm_at = None
    for tick in range(400):
        p = 0.001 if tick < 200 else 0.02
        bad = sum(rng.random() < p for _ in range(100))
        if cusum.update(bad, 100, tick * 10_000):
            alarm_at = tick
            break
    assert alarm_at is not None and 200 <= alarm_at <= 215
    assert cusum.onset_ms is not None and abs(cusum.onset_ms - 200 * 10_000) <= 60_000


def test_timing_weight_window() -> None:
    assert timing_weight(3_600_000, 0) == pytest.approx(0.1353, abs=1e-3)
    assert timing_weight(0, 60_000) == 1.0  # deployed 1 min after the onset estimate
    assert timing_weight(0, 300_000) == 0.0
    assert timing_weight(4_000_000, 0) == 0.0


def test_an_episode_everyone_shares_is_external() -> None:
    from slipstream.slo.correlation import Candidate, episode_verdict

    controls = [((10, 10_000), (400, 2_000)), ((5, 8_000), (300, 1_500))]
    v = episode_verdict(3_600_000, [Candidate("d1", 3_500_000, None)], (10, 10_000),
                        (400, 2_000), controls)  # fmt: skip
    assert v.verdict == "EXTERNAL" and v.evidence["method"] == "controls"


def test_an_episode_without_candidates_is_external() -> None:
    from slipstream.slo.correlation import episode_verdict

    v = episode_verdict(3_600_000, [], (10, 10_000), (400, 2_000), [])
    assert v.verdict == "EXTERNAL" and v.evidence["method"] == "no_candidate"


def test_an_episode_is_attributed_only_by_a_deploys_own_test() -> None:
    """The onset is chosen by the data, so the episode's own before/after proves nothing
    about a deploy: the deploy's test (split or anchored before/after) must have spoken."""
    from slipstream.slo.correlation import Candidate, episode_verdict

    onset = 7_200_000
    controls = [((20, 20_000), (4, 4_000))]
    untested = episode_verdict(onset, [Candidate("cfg-1", onset - 60_000, None)],
                               (10, 20_000), (150, 4_000), controls)  # fmt: skip
    assert (untested.verdict, untested.deploy_id) == ("INCONCLUSIVE", "cfg-1")
    own = episode_verdict(onset, [Candidate("d2", onset - 60_000, "ATTRIBUTED")],
                          (10, 20_000), (150, 4_000), [])  # fmt: skip
    assert (own.verdict, own.deploy_id, own.evidence["method"]) == (
        "ATTRIBUTED",
        "d2",
        "deploy_test",
    )
    callee = episode_verdict(onset, [Candidate("dep-1", onset - 60_000, "ATTRIBUTED", hops=1),
                                     Candidate("mine", onset - 30 * 60_000, None)],
                             (10, 20_000), (150, 4_000), [])  # fmt: skip
    assert (callee.verdict, callee.deploy_id, callee.evidence["method"]) == (
        "ATTRIBUTED",
        "dep-1",
        "propagated",
    )
    cleared = episode_verdict(onset, [Candidate("d3", onset - 60_000, "CLEARED")],
                              (10, 20_000), (150, 4_000), [])  # fmt: skip
    assert cleared.verdict == "EXTERNAL"


def test_two_deploys_at_the_same_moment_are_ambiguous() -> None:
    from slipstream.slo.correlation import Candidate, episode_verdict

    onset = 7_200_000
    pair = [Candidate("a", onset - 60_000, None), Candidate("b", onset - 60_000, None)]
    v = episode_verdict(onset, pair, (10, 20_000), (150, 4_000), [])
    assert v.verdict == "AMBIGUOUS"


def test_a_ramp_from_the_first_step_beats_a_late_step_only_when_it_is_one() -> None:
    # 1 % of 1 000 at first; a ramp adds 0.5 % a step, a step jumps to 5 % at the fifth.
    ramp = [(10 + 5 * i, 1000) for i in range(10)]
    step = [(10, 1000)] * 4 + [(50, 1000)] * 6
    assert ramp_over_step_llr(ramp, 0.01) > math.log(100)
    assert ramp_over_step_llr(step, 0.01) < 0
    assert ramp_over_step_llr([(10, 1000)] * 10, 0.01) == 0.0  # nothing rose
