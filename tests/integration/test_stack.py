"""`slipstream stack`: a second, private stack on free ports in a temporary folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipstream.settings import Settings, load_settings, settings_env
from slipstream.stack.manager import StackManager
from slipstream.stack.process import StackError, free_port, port_is_free, process_start_ticks

pytestmark = pytest.mark.stack


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    # A stand-in for Maven that records each call: the jars are cached, so it must stay silent.
    calls = tmp_path / "mvn-calls"
    fake_mvn = tmp_path / "mvn"
    fake_mvn.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    fake_mvn.chmod(0o755)
    settings = load_settings(
        {
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "kafka_controller_port": free_port(),
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "prometheus_url": f"http://127.0.0.1:{free_port()}",
            "alertmanager_url": f"http://127.0.0.1:{free_port()}",
            "metrics_addr": f"127.0.0.1:{free_port()}",
            "stack_dir": str(tmp_path / "stack"),
            "mvn": str(fake_mvn),
        },
        environ={},
    )
    yield settings, calls
    StackManager(settings).down(report=lambda _: None)


def _pids(manager: StackManager) -> dict[str, int]:
    return {s.name: s.pid for s in manager.status() if s.pid is not None}


def test_up_twice_is_harmless_and_down_leaves_nothing(private_stack: tuple[Settings, Path]) -> None:
    settings, mvn_calls = private_stack
    manager = StackManager(settings)
    lines: list[str] = []
    assert manager.up(report=lines.append) == ["kafka", "redis", "prometheus", "alertmanager"]
    assert manager.all_running()
    first = _pids(manager)

    assert manager.up(report=lines.append) == []
    assert _pids(manager) == first
    assert sum("already running" in line for line in lines) == 4
    assert not mvn_calls.exists(), "stack up called Maven although the jars are cached"

    # The CLI reports the same through `status`, exit 0 when all run.
    env = {**os.environ, **settings_env(settings)}
    status = subprocess.run(
        [sys.executable, "-m", "slipstream.streams.cli", "stack", "status"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("running") == 4

    assert sorted(manager.down(report=lines.append)) == sorted(first)
    for name, pid in first.items():
        assert process_start_ticks(pid) is None, f"{name} (pid {pid}) still runs after down"
    host = settings.kafka_host_port[0]
    ports = [p for comp in manager.components for p in comp.ports()]
    assert all(port_is_free(host, p) for p in ports)
    assert manager.down(report=lines.append) == []


def test_a_taken_port_is_named_and_nothing_starts(private_stack: tuple[Settings, Path]) -> None:
    settings, _ = private_stack
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0")
        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 \\(redis\\)"):
            StackManager(settings).up(report=lambda _: None)
        assert all(s.state == "stopped" for s in StackManager(settings).status())

        env = {**os.environ, **settings_env(settings)}
        cli = subprocess.run(
            [sys.executable, "-m", "slipstream.streams.cli", "stack", "up"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
    assert cli.returncode == 2
    assert f"port {port}" in cli.stderr and "SLIPSTREAM_REDIS_URL" in cli.stderr


def test_down_never_signals_a_process_it_did_not_start(
    private_stack: tuple[Settings, Path],
) -> None:
    settings, _ = private_stack
    manager = StackManager(settings)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        # A stale pid file naming an unrelated process (as after a reboot reuses the pid).
        pid_file = manager.component("redis").process.pid_file
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(
            f'{{"pid": {bystander.pid}, "start_ticks": 1, "argv0": "redis-server"}}'
        )
        assert manager.down(report=lambda _: None) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
