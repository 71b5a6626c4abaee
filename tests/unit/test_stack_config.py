"""What the stack writes and runs, checked without starting anything heavy."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from slipstream.settings import load_settings
from slipstream.stack.kafka import ensure_jars, new_cluster_id, server_properties
from slipstream.stack.process import (
    ManagedProcess,
    StackError,
    port_is_free,
    process_start_ticks,
)
from slipstream.stack.servers import acl_config, prometheus_config
from slipstream.stack.tls import ensure_tls


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


def test_a_sasl_ssl_broker_has_no_plaintext_client_listener(tmp_path: Path) -> None:
    s = load_settings({"kafka_bootstrap": "127.0.0.1:19092", "kafka_controller_port": 19093,
                       "kafka_security_protocol": "SASL_SSL", "kafka_username": "u",
                       "kafka_password_file": str(_secret(tmp_path))}, environ={})  # fmt: skip
    tls = ensure_tls(tmp_path / "tls")
    props = _props(server_properties(s, Path("/data"), tls, "broker-pw"))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["ssl.keystore.location"] == str(tls.bundle)
    jaas = props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert "ScramLoginModule required" in jaas and 'password="broker-pw"' in jaas


def _secret(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text("pw\n")
    return path


def test_the_redis_acl_holds_the_user_to_its_keys_and_stores_no_password() -> None:
    s = load_settings({"redis_username": "slip", "redis_url": "rediss://127.0.0.1:6380/0"},
                      environ={"SLIPSTREAM_REDIS_PASSWORD": "hunter2"})  # fmt: skip
    conf = acl_config(s)
    assert "user default off" in conf
    assert "user slip on #" in conf and "~slipstream:*" in conf and "-@dangerous" in conf
    assert "hunter2" not in conf


def test_issued_certificates_name_loopback_and_keep_keys_private(tmp_path: Path) -> None:
    from cryptography import x509

    files = ensure_tls(tmp_path / "tls")
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert files.key.stat().st_mode & 0o077 == 0
    assert ensure_tls(tmp_path / "tls") == files  # issued once, then reused
    assert files.cert.read_bytes() == cert.public_bytes(Encoding.PEM) + files.ca.read_bytes()
