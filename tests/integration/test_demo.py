"""`slipstream demo` against the session's services: traffic in, everything consumed."""

from __future__ import annotations

import os
import subprocess
import sys

from slipstream.settings import Settings, settings_env
from slipstream.stack.process import free_port


def test_demo_runs_end_to_end_and_drains(settings: Settings) -> None:
    settings = settings.replace(metrics_addr=f"127.0.0.1:{free_port()}")
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run(
        [sys.executable, "-m", "slipstream.streams.cli", "demo", "--no-stack",
         "--duration", "8", "--rate", "150"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo done: all" in result.stdout
    assert "deploy checkout v43: rolled out" in result.stdout
    assert "1 deploys consumed" in result.stdout
