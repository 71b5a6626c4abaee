"""The committed Grafana dashboards: they are what the generator makes, and every panel
query, annotation and variable of theirs returns data with the expected labels from the
real Prometheus scraping a worker that a scenario feeds (a deploy, then an incident that
exhausts the budget and freezes releases). Sloth's dashboards' queries
(tests/fixtures/sloth_dashboard_queries.yml) do too, on the same scenario."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from slipstream.bench.load import preload
from slipstream.client.producer import producer_from_settings
from slipstream.dashboards import OUT, rendered
from slipstream.settings import Settings
from slipstream.stack.process import free_port
from slipstream.streams.supervise import worker_process

from helpers import incident_traffic, poll, prometheus_query, register_scrape_target

SLOTH_QUERIES = Path(__file__).parent.parent / "fixtures" / "sloth_dashboard_queries.yml"
TICKET_SLO = "availability-tickets"
LABEL_VALUES = re.compile(r"^label_values\((?P<expr>.+), *(?P<label>\w+)\)$")


def test_the_committed_dashboards_are_the_generators() -> None:
    for name, text in rendered().items():
        assert (OUT / name).read_text() == text, f"{name}: run `make dashboards`"


def _queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, query) for every panel target, annotation and variable."""
    out = [(f"panel {p['title']!r}", t["expr"]) for p in board["panels"] for t in p["targets"]]
    out += [(f"annotation {a['name']!r}", a["expr"])
            for a in board.get("annotations", {}).get("list", []) if a.get("expr")]  # fmt: skip
    out += [(f"variable {v['name']!r}", v["query"])
            for v in board.get("templating", {}).get("list", [])]  # fmt: skip
    return out


def test_every_dashboard_query_returns_data_with_its_labels(
    settings: Settings, infra: object, tmp_path: Path
) -> None:
    targets = getattr(infra, "prometheus_targets_dir", None)
    assert targets is not None, "set SLIPSTREAM_PROMETHEUS_TARGETS_DIR (a file_sd folder)"
    service = f"dash-{settings.namespace}"[:60]
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump({"services": {service: {
        "policy": {"freeze_when_exhausted": True},
        "slos": [{"name": "availability", "objective": 99.9, "sli": {"kind": "availability"},
                  "alerting": {"tiers": {"page-6h": False, "ticket-1d": False,
                                         "ticket-3d": False}}},
                 # The worker reports an SLO's most severe open tier, and a default
                 # ticket tier needs hours of history: Sloth's ticket panel gets an SLO
                 # whose only tier is a short ticket tier.
                 {"name": TICKET_SLO, "objective": 99.9, "sli": {"kind": "availability"},
                  "alerting": {"tiers": {
                      "page-1h": False, "page-6h": False, "ticket-1d": False,
                      "ticket-3d": False,
                      "ticket-1h": {"severity": "ticket", "long": "1h", "short": "5m",
                                    "factor": 3}}}}]}}}))  # fmt: skip
    addr = f"127.0.0.1:{free_port()}"
    settings = settings.replace(catalogue=str(catalogue), metrics_addr=addr)
    start = int(time.time() * 1000) - 20 * 60_000
    with worker_process(settings, tmp_path / "worker.log"):
        with producer_from_settings(settings, register_atexit=False) as sdk:
            sdk.announce_deploy(service, "v2", previous_version="v1", timestamp_ms=start)
        traffic = [{**r, "version": "v2"}
                   for r in incident_traffic(service, start + 1000, 15, 4, "dash")]  # fmt: skip
        preload(settings, "batched", len(traffic), 1, 1, records=traffic)
        target = register_scrape_target(targets, settings.namespace, addr)
        try:
            for board_file in sorted(OUT.glob("*.json")):
                board = json.loads(board_file.read_text())
                for where, query in _queries(board):
                    _check(settings, board["uid"], where, query, service)
            for board_id, sloth_board in yaml.safe_load(SLOTH_QUERIES.read_text()).items():
                for q in sloth_board["queries"]:
                    _check_sloth(settings, f"sloth {board_id}", q, service)
        finally:
            target.unlink()


def _check(settings: Settings, uid: str, where: str, query: str, service: str) -> None:
    query = query.replace("$service", service).replace("$slo", "availability")
    label = None
    match = LABEL_VALUES.match(query)
    if match:  # a Grafana variable: the series whose label values it lists
        query, label = match.group("expr"), match.group("label")

    def ours(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Other tests' series share the overview's unfiltered queries: look at ours.
        return [r for r in rows if "topic" in r["metric"]
                or (r["metric"].get("service", service) == service
                    and r["metric"].get("slo", "availability") == "availability")]  # fmt: skip

    rows = poll(lambda: ours(prometheus_query(settings.prometheus_url, query)), bool,
                timeout_s=120, what=f"{uid}: {where}: data for {query}")  # fmt: skip
    metric = rows[0]["metric"]
    if label is not None:
        assert label in metric, (uid, where, metric)
    elif "topic" in metric:
        assert metric["topic"], (uid, where, metric)
    else:
        assert metric.get("service") == service, (uid, where, metric)
    if "slo=" in query or "slipstream_slo_" in query:
        assert metric.get("slo", "availability") == "availability", (uid, where, metric)
    if "burn_rate" in query:
        assert "window" in metric, (uid, where, metric)
    if "deploy_" in query:
        assert metric.get("deploy_id"), (uid, where, metric)
    if "alert_active" in query:
        assert {"severity", "tier", "sloth_id"} <= set(metric), (uid, where, metric)


def _check_sloth(settings: Settings, board: str, q: dict[str, Any], service: str) -> None:
    slo = TICKET_SLO if 'sloth_severity="ticket"' in q["expr"] else "availability"
    query = (q["expr"].replace("${service}", service).replace("${slo}", slo)
             .replace("${__to:date:M}", str(time.gmtime().tm_mon))
             # The month burn-down sums hourly samples; the scenario's are minutes old, so
             # it sums them every minute instead (only which samples are summed changes).
             .replace(":1h]", ":1m]"))  # fmt: skip
    label = None
    match = LABEL_VALUES.match(query)
    if match:
        query, label = match.group("expr"), match.group("label")

    def ours(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Unfiltered queries see other tests' SLOs too; a bare count has no labels.
        return [
            r
            for r in rows
            if r["metric"].get("sloth_service", service) == service
            and r["metric"].get("sloth_id", f"{service}-{slo}") == f"{service}-{slo}"
        ]

    rows = poll(lambda: ours(prometheus_query(settings.prometheus_url, query)), bool,
                timeout_s=120, what=f"{board}: {q['where']}: data for {query}")  # fmt: skip
    metric = rows[0]["metric"]
    expected = [label] if label else q["expect"]
    assert set(expected) <= set(metric), (board, q["where"], metric)
    if "sloth_service" in metric:
        assert metric["sloth_service"] == service, (board, q["where"], metric)
    if "sloth_slo" in metric:
        assert metric["sloth_slo"] == slo, (board, q["where"], metric)
