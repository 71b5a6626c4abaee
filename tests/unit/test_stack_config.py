"""What the stack writes and runs, checked without starting anything heavy."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from slipstream.settings import load_settings
from slipstream.stack.kafka import ensure_jars, new_cluster_id, server_properties
from slipstream.stack.process import (
    ManagedProcess,
    StackError,
    port_is_free,
    process_start_ticks,
)
from slipstream.stack.servers import prometheus_config


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_kafka_listens_only_where_the_settings_say() -> None:
    s = load_settings({"kafka_bootstrap": "127.0.0.1:19092", "kafka_controller_port": 19093},
                      environ={})  # fmt: skip
    props = _props(server_properties(s, Path("/data")))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == "/data"


def test_cluster_id_has_the_form_storage_tool_expects() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)
    # StorageTool's parser takes "-t -abc" for two options: one id in 64 would fail to format.
    assert not any(i.startswith("-") for i in ids)


def test_prometheus_scrapes_the_worker_and_a_file_sd_folder(tmp_path: Path) -> None:
    s = load_settings({"metrics_addr": "127.0.0.1:9555"}, environ={})
    cfg = prometheus_config(s, tmp_path)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}  # type: ignore[attr-defined]
    assert jobs["slipstream"]["static_configs"] == [{"targets": ["127.0.0.1:9555"]}]
    assert jobs["slipstream-targets"]["file_sd_configs"][0]["files"] == [f"{tmp_path}/*.json"]


def test_missing_maven_is_a_clear_error(tmp_path: Path) -> None:
    s = load_settings({"stack_dir": str(tmp_path), "mvn": "no-such-mvn"}, environ={})
    s = s.replace(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(StackError, match=r"Maven .*not installed.*make install"):
        ensure_jars(s)


def test_a_failed_resolution_is_reported_and_never_cached(tmp_path: Path) -> None:
    s = load_settings({"mvn": "false"}, environ={}).replace(cache_dir=str(tmp_path))
    with pytest.raises(StackError, match=r"could not resolve org\.apache\.kafka:kafka_2\.13"):
        ensure_jars(s)
    assert not list(tmp_path.rglob("resolved.txt"))


def test_managed_process_start_stop_and_identity(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", ["sleep", "30"], tmp_path)
    rec = proc.start()
    assert proc.is_running() and process_start_ticks(rec.pid) == rec.start_ticks
    assert proc.stop(timeout_s=5)
    assert process_start_ticks(rec.pid) is None
    assert not proc.pid_file.exists()
    assert not proc.stop()


def test_a_pid_file_naming_someone_else_is_not_ours(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        proc = ManagedProcess("redis", ["redis-server"], tmp_path)
        proc.pid_file.write_text(f'{{"pid": {other.pid}, "start_ticks": 7, "argv0": "x"}}')
        assert not proc.is_running()
        assert not proc.stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_port_is_free_sees_a_listener() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.listen()
        assert not port_is_free("127.0.0.1", port)
