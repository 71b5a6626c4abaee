"""The incident report's lines on deploys with no decision."""

from __future__ import annotations

from slipstream.streams.report_cli import undecided_line


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
