"""The incident report's lines on deploys: the evidence behind a verdict, and deploys with no
decision."""

from __future__ import annotations

from slipstream.slo.deploys import JUDGING_ENDED
from slipstream.streams.report_cli import evidence_line, undecided_line


def test_an_ambiguous_deploy_names_what_it_could_not_be_told_apart_from() -> None:
    impact = {"deploy_id": "api-v7", "slo": "availability", "verdict": "AMBIGUOUS",
              "evidence": {"ambiguous_with": ["db-v9"]}}  # fmt: skip
    assert undecided_line(impact) == (
        "- api-v7 on availability: cannot be told apart from db-v9, whose rollout moved with "
        "it; together they explain the rise."
    )


def test_an_inconclusive_deploy_has_no_decision_yet() -> None:
    impact = {"deploy_id": "api-v7", "slo": "availability", "verdict": "INCONCLUSIVE",
              "evidence": {}}  # fmt: skip
    assert "no decision yet" in undecided_line(impact)


def test_a_deploy_judged_to_its_last_look_says_no_decision_will_come() -> None:
    impact = {"deploy_id": "api-v7", "slo": "availability", "verdict": "INCONCLUSIVE",
              "evidence": {"note": JUDGING_ENDED}}  # fmt: skip
    line = undecided_line(impact)
    assert "left undecided" in line and "no decision will come" in line
    assert "no decision yet" not in line


def test_a_before_after_verdict_is_shown_with_the_slo_before_and_after_the_change() -> None:
    # A config change has no version split: its verdict rests on the SLO's own rates.
    evidence = {"method": "before_after", "pre": [36, 360000], "post": [120, 120000],
                "rate_ratio": 10.0, "p_value": 1.2e-40, "onset": "at the switch",
                "controls": {"usable": 7, "degraded": 0}, "bad_new": 0, "total_new": 0}  # fmt: skip
    assert evidence_line(evidence) == (
        "  Evidence (before/after): bad rate 0.100% (120/120000) after the change against "
        "0.010% (36/360000) before it; rate ratio 10.0x (p = 1.2e-40); onset at the switch; "
        "7 control services, 0 degraded."
    )


def test_a_before_after_verdict_beyond_the_services_around_says_by_how_much() -> None:
    evidence = {"method": "before_after", "pre": [10, 10000], "post": [60, 10000],
                "rate_ratio": 2.5, "p_value": 1e-5, "adjusted_rate_ratio": 2.5}  # fmt: skip
    assert ", 2.5x beyond the rise of the services around it." in evidence_line(evidence)


def test_a_version_split_verdict_is_shown_with_the_versions_side_by_side() -> None:
    evidence = {"method": "version_split", "bad_new": 30, "total_new": 1000, "bad_old": 10,
                "total_old": 10000, "bad_rate_new": 0.03, "bad_rate_old": 0.001,
                "rate_ratio": 30.0, "rate_ratio_ci95": [14.6, 61.5], "e_value": 2.5e6}  # fmt: skip
    assert evidence_line(evidence) == (
        "  Evidence (version_split): bad rate 3.000% on the new version against 0.100% on the "
        "old (30/1000 vs 10/10000); rate ratio 30.0x (95% interval 14.6 to 61.5); "
        "e-value 2.5e+06."
    )
