"""The Alertmanager sink against a real Alertmanager: a scenario's burn-rate alert appears
in GET /api/v2/alerts with the documented labels and annotations, a webhook receiver
configured in Alertmanager is notified, and both see it resolved when traffic recovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from slipstream.bench.load import preload
from slipstream.settings import Settings, settings_env
from slipstream.stack.process import free_port
from slipstream.stack.servers import AlertmanagerServer
from slipstream.streams.supervise import worker_process

from helpers import incident_traffic, one_tier_catalogue, poll

RUNBOOK = "https://runbooks.example.com/shop/availability"


class Webhook:
    """An HTTP receiver Alertmanager notifies: keeps every notification it gets."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def statuses(self) -> list[tuple[str, str]]:
        return [(n["status"], a["labels"].get("slo", "")) for n in self.received
                for a in n["alerts"]]  # fmt: skip


@pytest.fixture
def alertmanager(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Webhook]]:
    webhook = Webhook()
    mine = settings.replace(alertmanager_url=f"http://127.0.0.1:{free_port()}")
    config: dict[str, object] = {
        "route": {"receiver": "hook", "group_by": ["alertname", "service", "slo"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [
            {"url": webhook.url, "send_resolved": True}]}],
    }  # fmt: skip
    server = AlertmanagerServer(mine, tmp_path / "stack", config)
    server.prepare()
    server.process.start()
    try:
        poll(server.is_ready, bool, timeout_s=60, what="the test's Alertmanager")
        yield mine, webhook
    finally:
        server.process.stop()
        webhook.server.shutdown()


def _alerts(settings: Settings) -> list[dict[str, Any]]:
    url = f"{settings.alertmanager_url}/api/v2/alerts?filter=namespace%3D%22{settings.namespace}%22"
    with urllib.request.urlopen(url, timeout=5) as resp:
        alerts: list[dict[str, Any]] = json.load(resp)
    return alerts


def _active(settings: Settings) -> list[dict[str, Any]]:
    return [a for a in _alerts(settings) if a["status"]["state"] == "active"]


def test_burn_rate_alerts_reach_alertmanager_and_its_webhook(
    alertmanager: tuple[Settings, Webhook], tmp_path: Path
) -> None:
    settings, webhook = alertmanager
    catalogue = one_tier_catalogue(tmp_path / "catalogue.yaml", "shop", RUNBOOK)
    settings = settings.replace(catalogue=str(catalogue), metrics_addr=f"127.0.0.1:{free_port()}")
    start = int(time.time() * 1000) - 30 * 60_000
    bad = incident_traffic("shop", start, 10, 4, "bad")  # 25 % errors: a page
    preload(settings, "batched", len(bad), 1, 1, records=bad)
    env = {**os.environ, **settings_env(settings)}
    log = tmp_path / "forwarder.log"
    with worker_process(settings, tmp_path / "worker.log"), log.open("wb") as out:
        forwarder = subprocess.Popen(
            [sys.executable, "-m", "slipstream.streams.cli", "alertmanager"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def active() -> list[dict[str, Any]]:
            assert forwarder.poll() is None, log.read_text()[-3000:]
            return _active(settings)

        try:
            firing = poll(active, bool, timeout_s=120,
                          what="the alert in Alertmanager")  # fmt: skip
            alert = firing[0]
            labels, notes = alert["labels"], alert["annotations"]
            assert {k: labels[k] for k in ("alertname", "service", "slo", "severity", "namespace",
                                           "team")} == {
                "alertname": "SlipstreamErrorBudgetBurn", "service": "shop",
                "slo": "availability", "severity": "page", "namespace": settings.namespace,
                "team": "storefront"}  # fmt: skip
            assert labels["tier"] == "page-1h"
            assert notes["runbook_url"] == RUNBOOK
            assert float(notes["burn_rate_long"]) > 14.4
            assert float(notes["budget_remaining_ratio"]) < 0  # overspent: 25 % errors on 99.9 %
            assert {"summary", "description", "suspected_deploy", "alert_id"} <= set(notes)
            poll(webhook.statuses, lambda s: ("firing", "availability") in s, timeout_s=30,
                 what="the webhook's firing notification")  # fmt: skip

            good = incident_traffic("shop", start + 10 * 60_000, 20, 0, "good")  # recovery
            preload(settings, "batched", len(good), 1, 2, records=good)
            poll(active, lambda alerts: not alerts, timeout_s=120,
                 what="the alert to resolve")  # fmt: skip
            poll(webhook.statuses, lambda s: ("resolved", "availability") in s, timeout_s=30,
                 what="the webhook's resolved notification")  # fmt: skip
        finally:
            forwarder.send_signal(signal.SIGTERM)
            code = forwarder.wait(timeout=30)
    assert code == 0, log.read_text()
