"""`slipstream demo` against the session's services: traffic in, everything consumed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from slipstream.settings import Settings, settings_env
from slipstream.stack.process import free_port
from slipstream.streams.supervise import worker_process


def test_demo_runs_end_to_end_and_drains(settings: Settings) -> None:
    settings = settings.replace(metrics_addr=f"127.0.0.1:{free_port()}")
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run(
        [sys.executable, "-m", "slipstream.streams.cli", "demo", "--no-stack",
         "--duration", "8", "--speed", "100"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo done: all" in result.stdout
    assert "deploys accounted for" in result.stdout
    assert "deploy: checkout v43 started (10%, code)" in result.stdout
    assert "deploy: payments v18 started (100%, config)" in result.stdout
    # Every event the demo sends is valid: nothing on the dead-letter topics.
    last_table = result.stdout.rsplit("slipstream demo", 1)[-1]
    for line in last_table.splitlines():
        if line.strip().startswith("slo."):
            sent, accepted, dead, dup = (int(x) for x in line.split()[1:])
            assert sent == accepted and dead == 0 and dup == 0, line


def test_demo_feeds_a_worker_already_running(settings: Settings, tmp_path: Path) -> None:
    # The compose stack's way: the worker is its own container, the demo feeds it.
    settings = settings.replace(metrics_addr=f"127.0.0.1:{free_port()}")
    env = {**os.environ, **settings_env(settings)}
    command = [sys.executable, "-m", "slipstream.streams.cli", "demo", "--no-stack",
               "--worker-running", "--duration", "8", "--speed", "100"]  # fmt: skip
    with worker_process(settings, tmp_path / "worker.log"):
        first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180,
                               check=False)  # fmt: skip
        # Run again on the same worker: its counters already hold the first run's events.
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180,
                                check=False)  # fmt: skip
    for result in (first, second):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "demo done: all" in result.stdout
        assert "deploy: checkout v43 started (10%, code)" in result.stdout
        assert f"the worker at {settings.metrics_addr}" in result.stdout


def test_demo_without_a_running_worker_says_so(settings: Settings) -> None:
    settings = settings.replace(metrics_addr=f"127.0.0.1:{free_port()}")
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run(
        [sys.executable, "-m", "slipstream.streams.cli", "demo", "--no-stack",
         "--worker-running", "--worker-wait", "2", "--duration", "5"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"no worker answers at http://{settings.metrics_addr}/metrics" in result.stderr
