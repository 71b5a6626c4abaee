"""Apache Kafka (KRaft, one node) run from Maven Central jars on the machine's Java.

The jars are resolved once with ``mvn dependency:copy-dependencies`` into a
versioned cache folder; a marker file written last makes a later ``stack up``
use the cache without calling Maven.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from slipstream.connect import kafka_options
from slipstream.settings import Settings
from slipstream.stack.process import ManagedProcess, StackError, port_accepts, require_binary
from slipstream.stack.tls import TlsFiles, ensure_tls

# Pinned: kafka-python 3.0 and aiokafka 0.14 (under faust-streaming 0.15)
# both produce, consume, commit and administer topics against it
# (tests/integration/test_kafka_clients.py proves it on every run).
KAFKA_VERSION = "4.1.1"
# The SCRAM user the broker itself connects as over a SASL listener.
BROKER_USER = "slipstream-broker"
LOG4J_VERSION = "2.24.3"  # the log4j2 that kafka 4.1.1 itself depends on

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.slipstream.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <!-- ConsumerPerformance and the other command-line tools -->
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <!-- routes the slf4j logging of Kafka's Java modules into log4j2 -->
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""

RESOLVED_MARKER = "resolved.txt"


def jar_dir(settings: Settings) -> Path:
    return Path(settings.cache_dir) / f"kafka-{settings.kafka_version}" / "libs"


def jars_cached(settings: Settings) -> bool:
    return (jar_dir(settings).parent / RESOLVED_MARKER).is_file()


def ensure_jars(settings: Settings, log: Path | None = None) -> Path:
    """Return the folder of Kafka's jars, resolving them with Maven only if not cached."""
    libs = jar_dir(settings)
    if jars_cached(settings):
        return libs
    mvn = shutil.which(settings.mvn)
    if mvn is None:
        raise StackError(
            f"Maven ({settings.mvn!r}) is not installed and the Kafka {settings.kafka_version} "
            f"jars are not cached in {libs.parent}; run `make install` (installs maven)"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=libs.parent, prefix="resolve-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(kafka=settings.kafka_version, log4j=LOG4J_VERSION))
        out = Path(tmp) / "libs"
        cmd = [
            mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={out}", "-DincludeScope=runtime",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(result.stdout + result.stderr)
        if result.returncode != 0 or not any(out.glob("kafka_2.13-*.jar")):
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise StackError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{settings.kafka_version} "
                f"(exit {result.returncode}):\n{tail}"
            )
        if libs.exists():
            shutil.rmtree(libs)
        out.rename(libs)
    jars = sorted(p.name for p in libs.glob("*.jar"))
    # Written last: a half-finished resolution is never taken for a cache.
    (libs.parent / RESOLVED_MARKER).write_text("\n".join(jars) + "\n")
    return libs


def server_properties(
    settings: Settings, data_dir: Path, tls: TlsFiles | None = None, broker_password: str = ""
) -> str:
    host, port = settings.kafka_host_port
    ctrl = settings.kafka_controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.voters": f"1@{host}:{ctrl}",
        "log.dirs": str(data_dir),
        "num.partitions": str(settings.partitions),
        # Topics are created by slipstream with the partition count it needs.
        "auto.create.topics.enable": "false",
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Small machine: fewer threads, a small cleaner buffer, no rebalance delay.
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.segment.bytes": str(256 * 1024 * 1024),
        "log.retention.hours": "168",
    }
    if settings.kafka_security_protocol != "PLAINTEXT":
        props.update(secure_listener_properties(settings, tls, broker_password))
    return "".join(f"{k}={v}\n" for k, v in props.items())


def secure_listener_properties(
    settings: Settings, tls: TlsFiles | None, broker_password: str
) -> dict[str, str]:
    """The client listener speaking ``kafka_security_protocol`` (SASL_SSL with SCRAM in
    production), the broker's own connections included; the controller listener stays
    plaintext on loopback, where only the broker itself talks to it."""
    host, port = settings.kafka_host_port
    protocol = settings.kafka_security_protocol
    props = {
        "listeners": f"{protocol}://{host}:{port},CONTROLLER://{host}:{settings.kafka_controller_port}",
        "advertised.listeners": f"{protocol}://{host}:{port}",
        "inter.broker.listener.name": protocol,
        "listener.security.protocol.map": f"{protocol}:{protocol},CONTROLLER:PLAINTEXT",
    }
    if settings.kafka_tls:
        if tls is None:
            raise StackError(f"{protocol} needs the stack's certificates")
        props |= {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls.bundle),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "ssl.client.auth": "none",
        }
    if settings.kafka_sasl:
        mechanism = settings.kafka_sasl_mechanism
        module = (
            "org.apache.kafka.common.security.plain.PlainLoginModule"
            if mechanism == "PLAIN"
            else "org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        props |= {
            "sasl.enabled.mechanisms": mechanism,
            "sasl.mechanism.inter.broker.protocol": mechanism,
            f"listener.name.{protocol.lower()}.{mechanism.lower()}.sasl.jaas.config": (
                f'{module} required username="{BROKER_USER}" password="{broker_password}";'
            ),
        }
    return props


def new_cluster_id() -> str:
    # The form StorageTool's random-uuid prints: 16 random bytes, base64url, unpadded; and
    # like Kafka's Uuid.randomUuid, never one that starts with "-", which StorageTool's
    # argument parser would take for an option (1 format in 64 failed).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaServer:
    name = "kafka"

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self.settings = settings
        self.home = run_dir / "kafka"
        self.props = self.home / "server.properties"
        self.data = self.home / "data"
        self.log4j = self.home / "log4j2.properties"
        self.process = ManagedProcess(self.name, self._argv(), run_dir)

    def _java(self, main: str, *args: str, heap: str = "768m") -> list[str]:
        return [
            "java", f"-Xmx{heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.log4j}",
            "-cp", str(jar_dir(self.settings) / "*"), main, *args,
        ]  # fmt: skip

    def _argv(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.props))

    @property
    def address(self) -> str:
        host, port = self.settings.kafka_host_port
        return f"{host}:{port}"

    def ports(self) -> list[int]:
        return [self.settings.kafka_host_port[1], self.settings.kafka_controller_port]

    def prepare(self) -> None:
        require_binary("java", "openjdk-17-jre-headless")
        ensure_jars(self.settings, log=self.home / "maven.log")
        self.home.mkdir(parents=True, exist_ok=True)
        self.log4j.write_text(_LOG4J2.format(log=self.home / "server.log"))
        settings = self.settings
        tls = ensure_tls(self.home / "tls") if settings.kafka_tls else None
        password = self._broker_password() if settings.kafka_sasl else ""
        props = server_properties(settings, self.data, tls, password)
        self.props.touch(mode=0o600)  # it holds the broker's own SCRAM password
        self.props.write_text(props)
        if not (self.data / "meta.properties").is_file():
            self._format(password)

    def _broker_password(self) -> str:
        """The broker's password for its own connections, made once per stack."""
        path = self.home / "broker-password"
        if not path.is_file():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _format(self, broker_password: str) -> None:
        users: list[str] = []
        settings = self.settings
        if settings.kafka_sasl and settings.kafka_sasl_mechanism.startswith("SCRAM-"):
            # KRaft creates SCRAM users when it formats its storage: the broker's own and
            # the one the settings name.
            mechanism = settings.kafka_sasl_mechanism
            for name, password in (
                (BROKER_USER, broker_password),
                (settings.kafka_username, settings.kafka_password),
            ):
                users += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(self.props),
            *users, heap="256m",
        )  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(
                f"formatting Kafka storage in {self.data} failed:\n{result.stdout}{result.stderr}"
            )

    def is_ready(self) -> bool:
        host, port = self.settings.kafka_host_port
        return port_accepts(host, port) and kafka_answers_metadata(self.settings)


def kafka_answers_metadata(settings: Settings, timeout_ms: int = 3000) -> bool:
    """True when the broker answers a metadata request and has a controller."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            **kafka_options(settings),
            request_timeout_ms=timeout_ms,
            client_id="slipstream-stack-probe",
        )
    except (KafkaError, OSError):
        return False
    try:
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) != -1
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
