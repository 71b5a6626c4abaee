"""Dose-response: overlapping changes told apart by when their new versions took traffic."""

from __future__ import annotations

import random

import pytest

from slipstream.slo.dose_response import _chi2_sf, dose_response, fraction_at

BASE = 0.001  # the usual bad rate
PER_MINUTE = 2000


def minutes(rate_ratio: list[float], seed: int = 7) -> list[tuple[int, int]]:
    """(bad, total) per minute at ``BASE`` times each minute's ratio (Poisson counts)."""
    rng = random.Random(seed)
    out = []
    for ratio in rate_ratio:
        mean, bad, t = PER_MINUTE * BASE * ratio, 0, rng.expovariate(1.0)
        while t < mean:
            bad, t = bad + 1, t + rng.expovariate(1.0)
        out.append((bad, PER_MINUTE))
    return out


def step(at: int, span: int = 60, level: float = 1.0) -> list[float]:
    return [level if m >= at else 0.0 for m in range(span)]


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [(3.841, 1, 0.05), (5.991, 2, 0.05), (7.815, 3, 0.05), (9.488, 4, 0.05), (6.635, 1, 0.01)],
)
def test_chi_square_tail_matches_the_tables(x: float, df: int, p: float) -> None:
    assert _chi2_sf(x, df) == pytest.approx(p, rel=1e-3)


def test_the_fraction_is_the_latest_phase_and_nothing_before_the_first() -> None:
    phases = [(100, 0.05), (200, 0.5), (300, 1.0), (400, 0.0)]  # ... rolled back at 400
    assert [fraction_at(phases, t) for t in (99, 100, 250, 300, 399, 400)] == [
        0.0, 0.05, 0.5, 1.0, 1.0, 0.0
    ]  # fmt: skip


def test_the_change_whose_switch_the_rise_follows_is_named() -> None:
    # A called service switched at minute 20, this service's change at minute 30; the rate
    # rose 10x at 30. The ten minutes between them clear the called service.
    own, called = step(30), step(20)
    fit = dose_response(minutes([10.0 if m >= 30 else 1.0 for m in range(60)]),
                        {"own": own, "called": called}, BASE)  # fmt: skip
    assert fit.ratios["own"] == pytest.approx(10.0, rel=0.2)
    assert fit.p_values["own"] < 1e-6
    assert fit.p_values["called"] > 0.01
    # ... and the rise that came with the called service's switch is its, not this change's.
    fit = dose_response(minutes([10.0 if m >= 20 else 1.0 for m in range(60)]),
                        {"own": own, "called": called}, BASE)  # fmt: skip
    assert fit.p_values["called"] < 1e-6
    assert fit.p_values["own"] > 0.01


def test_changes_that_switched_together_cannot_be_told_apart() -> None:
    both = step(30)
    fit = dose_response(minutes([10.0 if m >= 30 else 1.0 for m in range(60)]),
                        {"own": both, "called": both}, BASE)  # fmt: skip
    assert fit.joint_p_value < 1e-6  # something changed ...
    assert fit.p_values["own"] > 0.01 and fit.p_values["called"] > 0.01  # ... but which?


def test_a_canary_is_weighed_by_its_share_of_the_traffic() -> None:
    # 5 % of the traffic on a version failing 20x for 30 min: the service fails 1.95x.
    canary = [0.0] * 10 + [0.05] * 30 + [1.0] * 20
    ratio = [1.0 + 19.0 * f for f in canary]
    fit = dose_response(minutes(ratio, seed=3), {"canary": canary}, BASE)
    assert fit.ratios["canary"] == pytest.approx(20.0, rel=0.15)
    # Its 5 % alone already shows it: a rate linear in the share of the traffic.
    fit = dose_response(minutes(ratio[:40], seed=3), {"canary": canary[:40]}, BASE)
    assert fit.p_values["canary"] < 1e-4
    assert fit.ratios["canary"] > 10.0


def test_no_change_in_the_rate_gives_no_evidence() -> None:
    fits = [dose_response(minutes([1.0] * 60, seed=s), {"own": step(30), "called": step(20)},
                          BASE) for s in range(20)]  # fmt: skip
    # One-sided tests at the 1 % level: at most a stray rejection in 40.
    assert sum(p < 0.01 for f in fits for p in f.p_values.values()) <= 1
    assert all(f.joint_p_value > 1e-4 for f in fits)


def test_no_traffic_gives_no_evidence() -> None:
    fit = dose_response([(0, 0)] * 10, {"own": step(5, 10)}, BASE)
    assert fit.ratios == {"own": 1.0}
    assert fit.p_values == {"own": 1.0}
    assert fit.joint_p_value == 1.0
