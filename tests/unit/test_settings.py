from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from slipstream.settings import Settings, SettingsError, load_settings, settings_env


def test_defaults_match_the_design() -> None:
    s = load_settings(environ={})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.metrics_addr == "127.0.0.1:9464"
    assert s.namespace == ""


def test_flags_beat_environment_beat_defaults() -> None:
    env = {"SLIPSTREAM_NAMESPACE": "from-env", "SLIPSTREAM_REDIS_URL": "redis://127.0.0.1:7000/1"}
    s = load_settings({"namespace": "from-flag", "redis_url": None}, environ=env)
    assert s.namespace == "from-flag"
    assert s.redis_url == "redis://127.0.0.1:7000/1"
    assert s.kafka_bootstrap == "127.0.0.1:9092"


def test_environment_integers_are_parsed_and_checked() -> None:
    assert load_settings(environ={"SLIPSTREAM_PARTITIONS": "8"}).partitions == 8
    with pytest.raises(SettingsError, match="partitions: expected an integer"):
        load_settings(environ={"SLIPSTREAM_PARTITIONS": "eight"})
    with pytest.raises(SettingsError, match="partitions must be >= 1"):
        load_settings({"partitions": 0}, environ={})


@pytest.mark.parametrize("bad", ["a.b", "has space", "-lead", "x" * 49, "ns/slash", "ns:colon"])
def test_namespaces_that_would_break_topics_or_keys_are_refused(bad: str) -> None:
    with pytest.raises(SettingsError, match="namespace"):
        load_settings({"namespace": bad}, environ={})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kafka_bootstrap", "localhost", "kafka_bootstrap: expected HOST:PORT"),
        ("metrics_addr", "127.0.0.1:99999", "metrics_addr: expected HOST:PORT"),
        ("redis_url", "127.0.0.1:6379", "redis_url: expected a redis://"),
        ("prometheus_url", "http://127.0.0.1:notaport", "prometheus_url: bad port"),
    ],
)
def test_addresses_are_validated_with_the_setting_named(
    field: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({field: value}, environ={})


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(SettingsError, match="unknown setting 'kafka'"):
        load_settings({"kafka": "x"}, environ={})


def test_host_ports_are_derived_from_urls() -> None:
    s = load_settings(
        {"kafka_bootstrap": "127.0.0.1:19092,127.0.0.2:19092", "redis_url": "rediss://h:7/0"},
        environ={},
    )
    assert s.kafka_host_port == ("127.0.0.1", 19092)
    assert s.redis_host_port == ("h", 7)
    assert s.prometheus_host_port == ("127.0.0.1", 9090)


def test_settings_env_reproduces_the_same_settings_in_a_child() -> None:
    s = load_settings({"namespace": "ns1", "partitions": 3}, environ={})
    assert load_settings(environ=settings_env(s)) == s


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.namespace = "x"  # type: ignore[misc]


def test_every_settings_flag_of_the_cli_reaches_the_settings() -> None:
    from slipstream.streams.cli import SETTINGS_KEYS, build_parser

    parser = build_parser()
    args = parser.parse_args(["worker", "--consumer-group", "team.slo", "--instance-id", "w-0"])
    s = load_settings({k: getattr(args, k, None) for k in SETTINGS_KEYS}, environ={})
    assert (s.consumer_group, s.instance_id) == ("team.slo", "w-0")
    # No flag named after a setting may be left out of what main() passes on.
    settings_names = {f.name for f in dataclasses.fields(Settings)}
    flags = set(vars(args)) & settings_names
    assert flags <= set(SETTINGS_KEYS), flags - set(SETTINGS_KEYS)


def test_secrets_never_show_in_a_dump_and_urls_lose_their_password() -> None:
    env = {"SLIPSTREAM_KAFKA_PASSWORD": "kafka-s3cret", "SLIPSTREAM_REDIS_PASSWORD": "redis-s3cret",
           "SLIPSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SLIPSTREAM_KAFKA_USERNAME": "u",
           "SLIPSTREAM_REDIS_URL": "rediss://user:url-s3cret@127.0.0.1:6380/0"}  # fmt: skip
    s = load_settings(environ=env)
    assert s.kafka_password == "kafka-s3cret"  # usable ...
    for shown in (repr(s), str(s), str(s.shown())):  # ... but never shown
        assert "s3cret" not in shown
        assert "***" in shown
    assert s.shown()["redis_url"] == "rediss://user:***@127.0.0.1:6380/0"


def test_a_password_file_is_read_and_kept_out_of_a_childs_environment(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("from-a-file\n")
    s = load_settings({"kafka_security_protocol": "SASL_SSL", "kafka_username": "u",
                       "kafka_password_file": str(secret)}, environ={})  # fmt: skip
    assert s.kafka_password == "from-a-file"
    env = settings_env(s)
    assert env["SLIPSTREAM_KAFKA_PASSWORD"] == ""
    assert load_settings(environ=env).kafka_password == "from-a-file"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_username and a password"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol 'TLS' is not one of"),
        ({"kafka_sasl_mechanism": "MD5"}, "kafka_sasl_mechanism 'MD5' is not one of"),
        ({"kafka_password_file": "/nonexistent/pw"}, "kafka_password_file: cannot read"),
        ({"metrics_tls_cert": "/x.pem"}, "metrics_tls_cert and metrics_tls_key go together"),
        ({"session_timeout_s": 2.0}, "session_timeout_s must be within 6..1800"),
    ],
)
def test_security_settings_are_checked(changes: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(changes, environ={})


def test_servers_bind_loopback_by_default() -> None:
    s = load_settings(environ={})
    assert s.metrics_host_port[0] == "127.0.0.1"
    assert s.kafka_host_port[0] == "127.0.0.1"
    assert s.redis_host_port[0] == "127.0.0.1"
