"""Alert consumers: an SDK subscriber and `slipstream alerts --follow`, started before a
scenario runs, receive every alert transition exactly as `slipstream alerts --json`
lists them afterwards."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from slipstream.bench.load import preload
from slipstream.client.subscribe import BurnRateAlert, Subscriber
from slipstream.settings import Settings, settings_env
from slipstream.stack.process import free_port
from slipstream.streams.read_cli import read_alerts
from slipstream.streams.supervise import worker_process
from slipstream.streams.topics import ensure_topics

from helpers import incident_traffic, one_tier_catalogue, poll


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["event_time_ms"], r["service"], r["slo"], r["state"])


def test_sdk_subscribers_and_follow_see_every_transition(
    settings: Settings, tmp_path: Path
) -> None:
    catalogue = one_tier_catalogue(tmp_path / "catalogue.yaml", "shop")
    settings = settings.replace(catalogue=str(catalogue), metrics_addr=f"127.0.0.1:{free_port()}")
    ensure_topics(settings)
    received: list[Any] = []
    sub = Subscriber(settings.kafka_bootstrap, group=f"test-{uuid.uuid4().hex[:8]}",
                     namespace=settings.namespace, from_beginning=True)  # fmt: skip
    thread = threading.Thread(target=lambda: received.extend(sub), daemon=True)
    thread.start()
    env = {**os.environ, **settings_env(settings)}
    follow_out = tmp_path / "follow.jsonl"
    with follow_out.open("wb") as out:
        follow = subprocess.Popen(
            [sys.executable, "-m", "slipstream.streams.cli", "alerts", "--follow", "--json",
             "--since", "0"], env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        start = int(time.time() * 1000) - 40 * 60_000
        traffic = incident_traffic("shop", start, 10, 4, "bad")  # a page ...
        traffic += incident_traffic("shop", start + 10 * 60_000, 20, 0, "good")  # ... resolved
        with worker_process(settings, tmp_path / "worker.log"):
            preload(settings, "batched", len(traffic), 1, 1, records=traffic)
            listed = poll(lambda: read_alerts(settings),
                          lambda rows: any(r["state"] == "resolved" for r in rows),
                          timeout_s=120, what="the incident to open and resolve")  # fmt: skip
        expected = sorted(listed, key=_key)

        def as_rows() -> list[dict[str, Any]]:
            alerts = [dataclasses.asdict(a) for a in list(received)
                      if isinstance(a, BurnRateAlert)]  # fmt: skip
            return sorted(alerts, key=_key)

        got = poll(as_rows, lambda rows: len(rows) >= len(expected), timeout_s=30,
                   what="the subscriber to receive every transition")  # fmt: skip
        assert got == expected
        followed = poll(
            lambda: [json.loads(line) for line in follow_out.read_text().splitlines()
                     if line.startswith("{")],
            lambda rows: len(rows) >= len(expected), timeout_s=30,
            what="--follow to print every transition",
        )  # fmt: skip
        assert sorted(followed, key=_key) == expected
        assert {r["state"] for r in expected} >= {"firing", "resolved"}
    finally:
        sub.stop()
        thread.join(timeout=10)
        sub.close()
        follow.send_signal(signal.SIGINT)
        follow.wait(timeout=30)
