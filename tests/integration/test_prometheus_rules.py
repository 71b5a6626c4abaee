"""The Prometheus rules file: promtool checks it and runs its unit tests, and the
session's Prometheus has loaded it (the local stack's configuration names it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from slipstream.settings import Settings
from slipstream.stack.servers import rules_file

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool (Debian package prometheus) is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    promtool = _promtool()
    rules = rules_file()
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 2 rules found" in check.stdout
    tests = rules.with_name("slipstream.rules.test.yml")
    run = subprocess.run([promtool, "test", "rules", tests.name], cwd=tests.parent,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_the_unit_tests_fail_when_a_rule_loses_sloths_labels(tmp_path: Path) -> None:
    """The unit tests can fail: without sloth_severity the expected alerts do not match."""
    promtool = _promtool()
    broken = rules_file().read_text().replace("sloth_severity: page", "severity_of_ours: page")
    (tmp_path / "slipstream.rules.yml").write_text(broken)
    shutil.copy(rules_file().with_name("slipstream.rules.test.yml"), tmp_path)
    run = subprocess.run([promtool, "test", "rules", "slipstream.rules.test.yml"],
                         cwd=tmp_path, capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode != 0 and "FAILED" in run.stdout + run.stderr


def test_the_sessions_prometheus_has_loaded_the_rules(settings: Settings) -> None:
    with urllib.request.urlopen(f"{settings.prometheus_url}/api/v1/rules", timeout=10) as resp:
        groups = json.load(resp)["data"]["groups"]
    rules = {r["name"] for g in groups if g["name"] == "slipstream-slo-alerts" for r in g["rules"]}
    assert rules == {"SlipstreamErrorBudgetBurnPage", "SlipstreamErrorBudgetBurnTicket"}
