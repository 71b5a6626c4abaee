"""End to end on the real broker: a bad deploy and a good one at almost the same time.

The verdicts on slo.deploy-impact name the bad deploy and clear the good one; the
alert names the suspect; the gate freezes the service whose budget ran out and
lets it release after a recorded override.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from slipstream import conventions
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings, settings_env
from slipstream.stack.process import free_port
from slipstream.streams.read_cli import read_alerts, read_impacts, read_records, read_status
from slipstream.streams.supervise import scrape, worker_process

from helpers import poll, read_topic

CATALOGUE = """
services:
  shop:
    slos:
      - {name: availability, objective: 99.5, period: 7d, sli: {kind: availability},
         alerting: {min_events: 50}}
  cart:
    slos:
      - {name: availability, objective: 95, period: 7d, sli: {kind: availability},
         alerting: {min_events: 50}}
"""
SCENARIO = """
name: two-deploys
seed: 21
duration: 60m
services:
  shop: {rate_per_s: 20, error_ratio: 0.002, version: v1}
  cart: {rate_per_s: 20, error_ratio: 0.02, version: v5}
deploys:
  - {service: shop, version: v2, at: 20m, effect: {error_ratio: 0.06},
     rollout: [{at: 0s, fraction: 0.2}, {at: 8m, fraction: 0.5}], rollback_after: 15m}
  - {service: cart, version: v6, at: 1230s, rollout: [{at: 0s, fraction: 0.5}]}
incidents:
  - {at: 45m, duration: 10m, services: [shop, cart], error_ratio: 0.4}
"""


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings)}
    cmd = [sys.executable, "-m", "slipstream.streams.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_verdicts_alerts_and_gate(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "catalogue.yaml").write_text(CATALOGUE)
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    settings = settings.replace(catalogue=str(tmp_path / "catalogue.yaml"),
                                metrics_addr=f"127.0.0.1:{free_port()}")  # fmt: skip
    start_ms = (int(time.time()) - 3600 - 120) * 1000
    log = tmp_path / "worker.log"
    with worker_process(settings, log):
        sim = _cli(settings, "simulate", "--scenario", str(tmp_path / "scenario.yaml"), "--max",
                   "--start", str(start_ms))  # fmt: skip
        assert sim.returncode == 0, sim.stderr
        sent = int(sim.stdout.split("sent ")[1].split(" requests")[0])

        def processed() -> float:
            samples = scrape(settings.metrics_addr)
            return samples.get(("slipstream_input_events_total", (("topic", "slo.requests"),)), 0)

        poll(processed, lambda n: n == sent, timeout_s=180, what="every event to be processed")
        time.sleep(1.5)  # the last outputs are sent and the Redis sink flushes every second

        def verdicts() -> dict[str, str]:
            return {r["deploy_id"]: r["verdict"] for r in read_impacts(settings)}

        try:
            final = poll(verdicts, lambda v: {"ATTRIBUTED", "CLEARED"} <= set(v.values()),
                         timeout_s=180, what="a verdict on both deploys")  # fmt: skip
        except AssertionError:
            print(log.read_text()[-4000:])
            raise
    shop = next(d for d in final if d.startswith("shop-"))
    cart = next(d for d in final if d.startswith("cart-"))
    assert {d: v for d, v in final.items() if not d.startswith("episode:")} == {
        shop: "ATTRIBUTED",
        cart: "CLEARED",
    }
    # The later incident hit both services at once: external, for both.
    episodes = {r["service"]: r for r in read_impacts(settings)
                if r["deploy_id"].startswith("episode:")}  # fmt: skip
    assert {s: r["verdict"] for s, r in episodes.items()} == {
        "shop": "EXTERNAL",
        "cart": "EXTERNAL",
    }
    # Controls are the other services of the same partition; with none degraded in view,
    # an episode without a live candidate deploy is external all the same.
    assert {r["evidence"]["method"] for r in episodes.values()} <= {
        "controls",
        "no_candidate",
        "all_cleared",
    }
    assert episodes["cart"]["onset_ms"] >= start_ms + 45 * 60_000 - 60_000

    impacts = {r["deploy_id"]: r for r in read_impacts(settings)}
    history = read_records(settings, conventions.DEPLOY_IMPACT_TOPIC, "DeployImpact")
    split = [json.loads(r["evidence_json"]) for r in history
             if r["deploy_id"] == shop and r["verdict"] == "ATTRIBUTED"
             and json.loads(r["evidence_json"])["method"] == "version_split"]  # fmt: skip
    evidence = split[0]
    assert evidence["e_value"] >= 100
    low, high = evidence["rate_ratio_ci95"]
    assert low <= 30 <= high  # 6 % on the new version against 0.2 % on the old
    assert impacts[shop]["budget_consumed_ratio"] > 0
    assert impacts[shop]["verdict"] == "ATTRIBUTED"
    # It burns fast: a rollback is recommended, once.
    rollback = [
        r
        for r in history
        if r["deploy_id"] == shop and "rollback_recommended" in r["evidence_json"]
    ]
    assert len(rollback) == 1
    assert impacts[cart]["evidence"]["e_value_clear"] >= 100
    assert impacts[cart]["budget_consumed_ratio"] < impacts[shop]["budget_consumed_ratio"]

    shop_alerts = [a for a in read_alerts(settings) if a["service"] == "shop"]
    assert shop_alerts and shop_alerts[0]["state"] == "firing"
    assert shop_alerts[0]["suspected_deploy_id"] == shop
    assert shop_alerts[0]["cause"] == "deploy"
    cart_alerts = [a for a in read_alerts(settings) if a["service"] == "cart"]
    assert cart_alerts and all(a["cause"] == "external" for a in cart_alerts)
    assert all(a["suspected_deploy_id"] is None for a in cart_alerts)

    # Policy events on slo.policy, and the gate.
    codec = AvroCodec()
    policy_topic = conventions.topic_name(settings.namespace, "slo.policy")
    policy = [
        codec.decode(r.value).record for r in read_topic(settings.kafka_bootstrap, policy_topic)
    ]
    assert [(p["service"], p["action"]) for p in policy][:1] == [("shop", "freeze")]
    # The Redis sink flushes every second: ask until the freeze is there (bounded).
    frozen = poll(
        lambda: _cli(settings, "gate", "--service", "shop", "--json"),
        lambda r: r.returncode == 1,
        timeout_s=60,
        what="the gate to see the freeze",
    )
    assert json.loads(frozen.stdout)["reason"].startswith("availability: error budget")
    # The external incident spent cart's budget too: frozen as well, whatever the cause.
    assert _cli(settings, "gate", "--service", "cart").returncode == 1
    refused = _cli(settings, "gate", "--service", "shop", "--override", "--reason", "hotfix")
    assert refused.returncode == 2 and "--actor" in refused.stderr
    override = _cli(settings, "gate", "--service", "shop", "--override",
                    "--reason", "hotfix for the regression", "--actor", "release-bot")  # fmt: skip
    assert override.returncode == 0, override.stdout + override.stderr
    assert "override by release-bot" in override.stdout
    policy = [
        codec.decode(r.value).record for r in read_topic(settings.kafka_bootstrap, policy_topic)
    ]
    assert any(p["action"] == "override" and p["actor"] == "release-bot" for p in policy)
    assert _cli(settings, "gate", "--service", "nowhere").returncode == 2

    # The incident report: its timeline and numbers are those of the topics and Redis.
    report_file = tmp_path / "report.md"
    done = _cli(settings, "report", "--service", "shop", "--since", str(start_ms),
                "--out", str(report_file))  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = report_file.read_text()
    deploy_rows = [line for line in report.splitlines() if "| deploy |" in line]
    shop_deploys = [d for d in (codec.decode(r.value).record for r in read_topic(
        settings.kafka_bootstrap, conventions.topic_name(settings.namespace, "slo.deploys")))
        if d["service"] == "shop"]  # fmt: skip
    assert len(deploy_rows) == len(shop_deploys) == 3  # started, progress, rolled back
    alert_rows = [line for line in report.splitlines() if "| alert |" in line]
    assert len(alert_rows) == len(shop_alerts)
    assert sum("| policy |" in line for line in report.splitlines()) == len(
        [p for p in policy if p["service"] == "shop"]
    )
    explained = report.split("## Deploys that explain the budget burn")[1]
    assert f"**{shop}** (availability): ATTRIBUTED" in explained
    assert f"{impacts[shop]['budget_consumed_ratio']:.1%} of the period" in explained
    shop_status = next(s for s in read_status(settings) if s["service"] == "shop")
    assert f"| {shop_status['budget_remaining_ratio']:.1%} |" in report
    assert "release-bot" not in report  # systems and changes, never people
