"""The configuration files we ship and generate pass the real tools' own checks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from slipstream.settings import load_settings
from slipstream.stack.servers import ALERTMANAGER_CONFIG, prometheus_config

ROOT = Path(__file__).resolve().parents[2]


def _check(*cmd: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_both_prometheus_configs(tmp_path: Path) -> None:
    _check("promtool", "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml"))
    generated = tmp_path / "prometheus.yml"
    generated.write_text(json.dumps(prometheus_config(load_settings(environ={}), tmp_path)))
    _check("promtool", "check", "config", str(generated))


def test_amtool_accepts_both_alertmanager_configs(tmp_path: Path) -> None:
    _check("amtool", "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml"))
    generated = tmp_path / "alertmanager.yml"
    generated.write_text(json.dumps(ALERTMANAGER_CONFIG))
    _check("amtool", "check-config", str(generated))
