"""OpenSLO and Sloth specs to catalogues: what is carried over, and what is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from slipstream.slo.catalogue import parse_catalogue
from slipstream.spec_import.openslo import import_openslo
from slipstream.spec_import.promql import guess_sli, status_ranges
from slipstream.spec_import.sloth import import_sloth
from slipstream.streams.cli import main

SPECS = Path(__file__).resolve().parents[1] / "fixtures" / "specs"


def _docs(name: str) -> list[Any]:
    return [d for d in yaml.safe_load_all((SPECS / name).read_text()) if d]


@pytest.mark.parametrize(
    ("pattern", "ranges"),
    [
        ("5..", [[500, 599]]),
        ("(5..|429)", [[500, 599], [429, 429]]),
        ("5xx", [[500, 599]]),
        ("503|504", [[503, 503], [504, 504]]),
        ("5[0-9][0-9]", [[500, 599]]),
        ("[45]..", None),
        ("", None),
    ],
)
def test_status_regexes_become_ranges(pattern: str, ranges: list[list[int]] | None) -> None:
    assert status_ranges(pattern) == ranges


def test_a_good_query_that_excludes_codes_makes_the_rest_bad() -> None:
    guess = guess_sli(good='sum(rate(x{code!~"5.."}[1m]))')
    assert guess.sli == {"kind": "availability", "bad_status": [[500, 599]]}
    guess = guess_sli(good='sum(rate(x{code=~"2..|3.."}[1m]))')
    assert guess.sli == {"kind": "availability", "bad_status": [[100, 199], [400, 599]]}


def test_histogram_bounds_become_latency_thresholds_in_milliseconds() -> None:
    assert guess_sli(good='x_seconds_bucket{le="0.3"}').sli == {
        "kind": "latency", "threshold_ms": 300.0}  # fmt: skip
    assert guess_sli(good='x_milliseconds_bucket{le="250"}').sli == {
        "kind": "latency", "threshold_ms": 250.0}  # fmt: skip
    assert guess_sli(bad="rate(queue_dropped_total[5m])").sli is None


def test_sloth_spec_imports_objectives_slis_labels_runbooks_and_disabled_alerts() -> None:
    result = import_sloth(_docs("sloth.yml"), "sloth.yml")
    catalogue = parse_catalogue(result.catalogue, "imported")  # loads as the worker loads it
    slos = {s.name: s for s in catalogue.all_slos()}
    assert set(slos) == {"requests-availability", "requests-latency", "raw-availability"}
    avail = slos["requests-availability"]
    assert (avail.service, avail.objective_percent, avail.period_days) == ("checkout", 99.9, 30)
    assert avail.sli.bad_status == ((500, 599), (429, 429))
    assert avail.runbook_url == "https://runbooks.example.com/checkout/availability"
    assert avail.labels == {"owner": "payments-team", "tier": "1", "category": "availability"}
    assert slos["requests-latency"].sli.threshold_ms == 250.0
    assert {t.severity for t in slos["requests-latency"].tiers} == {"ticket"}  # page disabled
    assert [t.name for t in avail.tiers] == ["page-1h", "page-6h", "ticket-1d", "ticket-3d"]
    assert slos["raw-availability"].objective_percent == 99.5
    skipped = "\n".join(result.skipped)
    assert "slos[3] (plugin-sli).sli.plugin" in skipped
    assert "slos[4] (queue-depth).sli" in skipped
    unsupported = "\n".join(result.unsupported)
    for field in ("alerting.name", "alerting.annotations.summary", "alerting.labels",
                  "alerting.page_alert.labels", "alerting.ticket_alert.labels"):  # fmt: skip
        assert f"(requests-availability).{field}:" in unsupported, field


def test_openslo_documents_import_windows_targets_and_burn_rate_conditions() -> None:
    result = import_openslo(_docs("openslo.yml"), "openslo.yml")
    catalogue = parse_catalogue(result.catalogue, "imported")
    slos = {s.name: s for s in catalogue.all_slos()}
    assert set(slos) == {"payments-availability", "payments-latency"}
    avail = slos["payments-availability"]
    assert (avail.objective_percent, avail.period_days) == (99.9, 28)
    assert avail.sli.bad_status == ((500, 599),)
    assert avail.labels == {"team": "payments"}
    tiers = {t.name: t for t in avail.tiers}
    assert set(tiers) == {"fast-burn", "slow-burn"}  # the policy's, not the defaults
    fast = tiers["fast-burn"]
    assert (fast.severity, fast.factor, fast.long_window_ms, fast.short_window_ms) == (
        "page", 14.4, 3_600_000, 300_000)  # fmt: skip
    assert tiers["slow-burn"].long_window_ms == 3 * 86_400_000
    latency = slos["payments-latency"]
    assert (latency.objective_percent, latency.period_days) == (99.0, 7)  # 1w
    assert latency.sli.threshold_ms == 400.0
    skipped = "\n".join(result.skipped)
    assert "(SLO payments-calendar).spec.timeWindow: calendar" in skipped
    assert "(SLO payments-timeslices).spec.budgetingMethod: Timeslices" in skipped
    unsupported = "\n".join(result.unsupported)
    for field in ("kind Service", "kind AlertNotificationTarget", "spec.notificationTargets",
                  "spec.alertWhenNoData", "spec.condition.alertAfter"):  # fmt: skip
        assert field in unsupported, field


def test_the_cli_writes_a_catalogue_that_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "catalogue.yaml"
    assert main(["import", "openslo", str(SPECS / "openslo.yml"), "--out", str(out)]) == 0
    assert "imported 2 SLO(s)" in capsys.readouterr().err
    assert main(["validate", str(out)]) == 0
    assert "valid: 1 service(s), 2 SLO(s)" in capsys.readouterr().out


def test_validate_names_the_problem_and_import_refuses_an_empty_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  svc:\n    slos:\n      - {name: a, objective: 120, sli: "
                   "{kind: availability}}\n")  # fmt: skip
    assert main(["validate", str(bad)]) == 1
    assert "services.svc.slos[0] (a).objective" in capsys.readouterr().err
    spec = tmp_path / "plugin.yml"
    spec.write_text('version: "prometheus/v1"\nservice: s\nslos:\n  - name: x\n    objective: 99\n'
                    "    sli: {plugin: {id: foo}}\n")  # fmt: skip
    assert main(["import", "sloth", str(spec)]) == 1
    assert "nothing could be imported" in capsys.readouterr().err
