"""``slipstream demo``: the local stack, a worker and live synthetic traffic, with a live table.

At this stage of the project the worker counts what it consumes, so the demo
shows the plumbing end to end: events produced, consumed, lag, and whether
Prometheus scrapes the worker. The events are the JSON Lines trace format of
DESIGN.md until the Avro SDK replaces it.
"""

from __future__ import annotations

import json
import random
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer

from slipstream import conventions
from slipstream.settings import Settings
from slipstream.stack.manager import StackManager
from slipstream.stack.process import StackError, port_is_free
from slipstream.streams.supervise import scrape, worker_process
from slipstream.streams.topics import ensure_topics

REFRESH_S = 2.0
DRAIN_TIMEOUT_S = 30.0

# service -> (share of traffic, baseline error ratio)
SERVICES = {"checkout": (0.4, 0.001), "payments": (0.3, 0.002), "auth": (0.2, 0.0005),
            "search": (0.1, 0.003)}  # fmt: skip
BAD_DEPLOY_AFTER_S = 20.0  # checkout v43 rolls out and fails 8 % of its requests


@dataclass
class Traffic:
    """Seeded synthetic request and deploy events in the trace format of DESIGN.md."""

    seed: int = 42
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    deployed: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.names = list(SERVICES)
        self.weights = [SERVICES[s][0] for s in self.names]

    def request(self, now_ms: int) -> tuple[bytes, bytes]:
        service = self.rng.choices(self.names, self.weights)[0]
        bad_deploy = self.deployed and service == "checkout"
        error_ratio = 0.08 if bad_deploy else SERVICES[service][1]
        status = 503 if self.rng.random() < error_ratio else 200
        event = {
            "type": "request", "event_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "service": service, "operation": "GET /", "status_code": status,
            "latency_ms": round(self.rng.lognormvariate(3.5, 0.6), 1), "timestamp": now_ms,
            "version": "v43" if bad_deploy else "v42",
        }  # fmt: skip
        return service.encode(), json.dumps(event).encode()

    def deploy(self, now_ms: int) -> tuple[bytes, bytes]:
        self.deployed = True
        event = {
            "type": "deploy", "deploy_id": f"checkout-v43-{self.started_ms}", "service": "checkout",
            "version": "v43", "previous_version": "v42", "change_type": "code",
            "phase": "started", "rollout_fraction": 1.0, "timestamp": now_ms, "actor": "demo",
        }  # fmt: skip
        return b"checkout", json.dumps(event).encode()


def _prometheus_sees_worker(settings: Settings) -> str:
    query = urllib.parse.urlencode({"query": f'up{{instance="{settings.metrics_addr}"}}'})
    try:
        with urllib.request.urlopen(
            f"{settings.prometheus_url}/api/v1/query?{query}", timeout=2
        ) as r:
            result = json.load(r)["data"]["result"]
    except (OSError, ValueError, KeyError):
        return "unreachable"
    if not result:
        return "not scraping this worker"
    return "scraping (up=1)" if any(s["value"][1] == "1" for s in result) else "target down"


def _consumed(settings: Settings) -> tuple[float, float]:
    samples = scrape(settings.metrics_addr)
    name = "slipstream_input_messages_total"
    return (
        samples.get((name, (("topic", conventions.REQUESTS_TOPIC),)), 0.0),
        samples.get((name, (("topic", conventions.DEPLOYS_TOPIC),)), 0.0),
    )


def run_demo(settings: Settings, *, start_stack: bool, duration_s: float, rate_per_s: float) -> int:
    if start_stack:
        StackManager(settings).up()
    created = ensure_topics(settings)
    if created:
        print(f"created {len(created)} topics")
    host, port = settings.metrics_host_port
    if not port_is_free(host, port):
        raise StackError(
            f"metrics port {port} on {host} is taken (another worker?); stop it or pass "
            "--metrics-addr"
        )
    log = Path(settings.stack_dir) / "logs" / f"worker-{settings.namespace or 'default'}.log"
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all", linger_ms=20
    )
    ns = settings.namespace
    requests_topic = conventions.topic_name(ns, conventions.REQUESTS_TOPIC)
    deploys_topic = conventions.topic_name(ns, conventions.DEPLOYS_TOPIC)
    traffic = Traffic()
    # A short demo still shows the bad deploy, half-way through.
    deploy_after_s = (
        min(BAD_DEPLOY_AFTER_S, duration_s / 2) if duration_s > 0 else BAD_DEPLOY_AFTER_S
    )
    produced = [0, 0]
    tty = sys.stdout.isatty()
    print(f"worker log: {log}\nCtrl-C stops the demo; the stack keeps running "
          "(`slipstream stack down` stops it).", flush=True)  # fmt: skip
    with worker_process(settings, log, loglevel="warning") as worker:
        t0 = time.monotonic()
        next_refresh = t0
        try:
            while duration_s <= 0 or time.monotonic() - t0 < duration_s:
                if worker.poll() is not None:
                    raise StackError(f"the worker exited ({worker.returncode}); see {log}")
                elapsed = time.monotonic() - t0
                now_ms = int(time.time() * 1000)
                if not traffic.deployed and elapsed >= deploy_after_s:
                    key, value = traffic.deploy(now_ms)
                    producer.send(deploys_topic, key=key, value=value)
                    produced[1] += 1
                # Open loop: send what is due by now, whatever the worker does.
                due = int(elapsed * rate_per_s) - produced[0]
                for _ in range(due):
                    key, value = traffic.request(now_ms)
                    producer.send(requests_topic, key=key, value=value)
                produced[0] += max(due, 0)
                if time.monotonic() >= next_refresh:
                    _render(settings, produced, elapsed, traffic.deployed, tty)
                    next_refresh += REFRESH_S
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("\nstopping…", flush=True)
        producer.flush(timeout=30)
        producer.close()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while _consumed(settings) != tuple(produced) and time.monotonic() < deadline:
            time.sleep(0.25)
        consumed = _render(settings, produced, time.monotonic() - t0, traffic.deployed, tty=False)
    if consumed != tuple(produced):
        print(f"the worker consumed {consumed} of {tuple(produced)} events", file=sys.stderr)
        return 1
    print(f"demo done: all {produced[0]} requests and {produced[1]} deploys consumed")
    return 0


def _render(
    settings: Settings, produced: list[int], elapsed: float, deployed: bool, tty: bool
) -> tuple[int, int]:
    consumed = _consumed(settings)
    rows = [
        f"slipstream demo — {elapsed:6.1f}s — namespace {settings.namespace or '(none)'}",
        f"  {'topic':<16}{'produced':>10}{'consumed':>10}{'lag':>8}",
        f"  {'slo.requests':<16}{produced[0]:>10}{int(consumed[0]):>10}"
        f"{produced[0] - int(consumed[0]):>8}",
        f"  {'slo.deploys':<16}{produced[1]:>10}{int(consumed[1]):>10}"
        f"{produced[1] - int(consumed[1]):>8}",
        f"  deploy checkout v43: {'rolled out' if deployed else 'pending'}   "
        f"prometheus: {_prometheus_sees_worker(settings)}",
    ]
    if tty:
        sys.stdout.write("\x1b[H\x1b[2J")
    print("\n".join(rows), flush=True)
    return int(consumed[0]), int(consumed[1])
