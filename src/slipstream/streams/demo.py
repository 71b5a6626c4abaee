"""``slipstream demo``: the local stack, a worker and a live scenario, with a live table.

The scenario (``bad-deploy`` by default) is sent through the producer SDK at ``--speed``
times its own pace, ending at the present, so event times stay real. With
``worker_running`` (the docker compose stack) it feeds a worker that is already running
and reads that worker's /metrics at the configured metrics address. The table shows, per
SLO, the error budget left and the burn rates the worker publishes to Redis, the alert
transitions it publishes to slo.alerts as they fire and resolve, the deploys, and what
the input side accepted.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import redis
from kafka import KafkaConsumer, TopicPartition

from slipstream import conventions
from slipstream.client.emit import EmitStats, emit
from slipstream.client.producer import producer_from_settings
from slipstream.client.trace import TraceEvent
from slipstream.connect import kafka_options
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings
from slipstream.simulate.generator import generate
from slipstream.simulate.scenario import load_scenario
from slipstream.slo.events import Deploy
from slipstream.stack.manager import StackManager
from slipstream.stack.process import StackError, port_is_free
from slipstream.streams.read_cli import read_status
from slipstream.streams.supervise import Samples, scrape, worker_process
from slipstream.streams.topics import ensure_topics

REFRESH_S = 2.0
DRAIN_TIMEOUT_S = 60.0


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


def _check_metrics_port_free(settings: Settings) -> None:
    host, port = settings.metrics_host_port
    if not port_is_free(host, port):
        raise StackError(
            f"metrics port {port} on {host} is taken (another worker?); stop it or pass "
            "--metrics-addr"
        )


def _wait_for_worker(settings: Settings, timeout_s: float) -> None:
    """A worker started alongside the demo (compose starts both at once) answers on its
    metrics address once it runs; the demo's counts come from there."""
    deadline = time.monotonic() + timeout_s
    while not scrape(settings.metrics_addr):
        if time.monotonic() > deadline:
            raise StackError(
                f"no worker answers at http://{settings.metrics_addr}/metrics after "
                f"{timeout_s:.0f} s; start one (`slipstream worker`) or drop --worker-running"
            )
        time.sleep(1.0)


def _sum(samples: Samples, name: str, topic: str) -> int:
    return int(
        sum(v for (n, labels), v in samples.items() if n == name and ("topic", topic) in labels)
    )


class _AlertTail:
    """New records of slo.alerts since the demo started, without blocking."""

    def __init__(self, settings: Settings) -> None:
        topic = conventions.topic_name(settings.namespace, conventions.ALERTS_TOPIC)
        self.consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)  # fix the start now, not at the first poll
        self.codec = AvroCodec()
        self.lines: list[str] = []
        self.counts: dict[str, int] = {}

    def poll(self) -> None:
        for records in self.consumer.poll(timeout_ms=0).values():
            for rec in records:
                a = self.codec.decode(rec.value, {"BurnRateAlert"}).record
                self.counts[a["state"]] = self.counts.get(a["state"], 0) + 1
                when = time.strftime("%H:%M:%S", time.gmtime(a["event_time_ms"] / 1000))
                self.lines.append(
                    f"{when}Z {a['state']:<9} {a['severity']:<6} {a['service']}/{a['slo']} "
                    f"burn {a['burn_rate_long']:.1f}x/{a['burn_rate_short']:.1f}x "
                    f"({a['long_window_s'] // 60}m/{a['short_window_s'] // 60}m, "
                    f"factor {a['factor']:g})"
                )

    def close(self) -> None:
        self.consumer.close()


class _Table:
    def __init__(self, settings: Settings, scenario: str, tty: bool) -> None:
        self.settings = settings
        self.scenario = scenario
        self.tty = tty
        self.deploys: list[str] = []
        self.alerts = _AlertTail(settings)

    def accounted(self) -> tuple[int, int]:
        """(requests, deploys) the worker has accepted, dead-lettered or found duplicate."""
        s = scrape(self.settings.metrics_addr)
        return tuple(  # type: ignore[return-value]
            _sum(s, "slipstream_input_events_total", t)
            + _sum(s, "slipstream_dead_letters_total", t)
            + _sum(s, "slipstream_duplicate_events_total", t)
            for t in conventions.SOURCE_TOPICS
        )

    def render(self, stats: EmitStats) -> None:
        s = scrape(self.settings.metrics_addr)
        rows = [
            f"slipstream demo — scenario {self.scenario} — {stats.elapsed_s:6.1f}s — "
            f"namespace {self.settings.namespace or '(none)'}",
            f"  {'topic':<14}{'sent':>10}{'accepted':>10}{'dead':>7}{'dup':>6}",
        ]
        for topic, sent in zip(
            conventions.SOURCE_TOPICS, (stats.requests, stats.deploys), strict=True
        ):
            rows.append(
                f"  {topic:<14}{sent:>10}{_sum(s, 'slipstream_input_events_total', topic):>10}"
                f"{_sum(s, 'slipstream_dead_letters_total', topic):>7}"
                f"{_sum(s, 'slipstream_duplicate_events_total', topic):>6}"
            )
        rows.append(f"  prometheus: {_prometheus_sees_worker(self.settings)}")
        rows.append("")
        rows.append(f"  {'SLO':<24}{'objective':>10}{'budget left':>13}{'burn 5m':>9}"
                    f"{'1h':>7}{'6h':>7}{'1d':>7}  alert")  # fmt: skip
        try:
            status = read_status(self.settings)
        except redis.RedisError as exc:
            status = []
            rows.append(f"  (Redis: {exc})")
        for r in status:
            b = r["burn_rates"]
            rows.append(
                f"  {r['service'] + '/' + r['slo']:<24}{r['objective']:>9}%"
                f"{r['budget_remaining_ratio']:>12.1%} {b['5m']:>8.2f}{b['1h']:>7.2f}"
                f"{b['6h']:>7.2f}{b['1d']:>7.2f}  {','.join(r['active_alerts']) or '-'}"
            )
        self.alerts.poll()
        rows.append("")
        rows += [f"  deploy: {d}" for d in self.deploys[-6:]]
        rows += [f"  alert:  {line}" for line in self.alerts.lines[-8:]]
        if self.tty:
            sys.stdout.write("\x1b[H\x1b[2J")
        print("\n".join(rows), flush=True)


def run_demo(
    settings: Settings,
    *,
    start_stack: bool,
    duration_s: float,
    scenario_name: str = "bad-deploy",
    speed: float = 30.0,
    worker_running: bool = False,
    worker_wait_s: float = 120.0,
) -> int:
    if start_stack:
        StackManager(settings).up()
    ensure_topics(settings)
    if worker_running:
        _wait_for_worker(settings, worker_wait_s)
    else:
        _check_metrics_port_free(settings)
    scenario = load_scenario(scenario_name)
    # The compressed scenario ends at the present, so every event time is a real past time.
    now_ms = time.time_ns() // 1_000_000
    start_ms = now_ms - scenario.duration_ms + int(scenario.duration_ms / speed)
    table = _Table(settings, scenario.name, sys.stdout.isatty())
    log = Path(settings.stack_dir) / "logs" / f"worker-{settings.namespace or 'default'}.log"
    where = (f"the worker at {settings.metrics_addr}" if worker_running
             else f"worker log: {log}")  # fmt: skip
    print(f"{where}\nCtrl-C stops the demo; the stack keeps running "
          "(`slipstream stack down` stops it).", flush=True)  # fmt: skip
    t0 = time.monotonic()

    def events() -> Iterator[TraceEvent]:
        for event in generate(scenario, start_ms):
            if duration_s > 0 and time.monotonic() - t0 >= duration_s:
                return
            if isinstance(event, Deploy):
                table.deploys.append(
                    f"{event.service} {event.version} {event.phase} "
                    f"({event.rollout_fraction:.0%}, {event.change_type})"
                )
            yield event

    producer = producer_from_settings(settings, register_atexit=False)
    stats = EmitStats()
    # A running worker has counted other traffic before ours.
    before = table.accounted() if worker_running else (0, 0)
    with contextlib.ExitStack() as stack:
        worker = None if worker_running else stack.enter_context(
            worker_process(settings, log, loglevel="warning"))  # fmt: skip
        try:
            emit(events(), producer, speed=speed, on_progress=table.render,
                 progress_every_s=REFRESH_S, stats=stats)  # fmt: skip
        except KeyboardInterrupt:
            print("\nstopping…", flush=True)
        finally:
            producer.close()
        if worker is not None and worker.poll() is not None:
            raise StackError(f"the worker exited ({worker.returncode}); see {log}")
        sent = (producer.stats.events_sent, stats.deploys)

        def accounted_now() -> tuple[int, int]:
            now = table.accounted()
            return (now[0] - before[0], now[1] - before[1])

        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while accounted_now() < sent and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(2.5)  # one Redis flush and one alert poll after the last event
        stats.elapsed_s = time.monotonic() - t0
        table.render(stats)
        accounted = accounted_now()
        table.alerts.close()
    counts = table.alerts.counts
    print(f"alerts: {counts.get('firing', 0)} fired, {counts.get('escalated', 0)} escalated, "
          f"{counts.get('resolved', 0)} resolved")  # fmt: skip
    if accounted != sent:
        print(f"the worker accounted for {accounted} of {sent} events", file=sys.stderr)
        return 1
    print(f"demo done: all {sent[0]} requests and {sent[1]} deploys accounted for")
    return 0
