"""slipstream's Grafana dashboards, generated with grafana-foundation-sdk.

`make dashboards` (python -m slipstream.dashboards) writes them to
deploy/grafana/dashboards/, which docker-compose.yml provisions; the JSON is committed,
and a test checks it matches this generator and runs every panel's query against a real
Prometheus scraping a worker.

- **slipstream overview**: every SLO's budget remaining, fast burn rates, open alerts,
  frozen services, and the pipeline's own throughput.
- **slipstream SLO**: one SLO (variables ``service`` and ``slo``): SLI, burn rate per
  window, budget over the period, budget spent per deploy, and deploys as annotations.

Needs the dev extra (grafana-foundation-sdk); the worker never imports this module.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

OUT = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
SLO = 'service="$service", slo="$slo"'


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: str  # timeseries | stat | table
    expr: str
    legend: str = ""
    unit: str = ""
    description: str = ""


OVERVIEW = (
    PanelSpec("Error budget remaining", "table",
              "slipstream_slo_error_budget_remaining_ratio", unit="percentunit",
              description="Share of each SLO's error budget left over its period."),
    PanelSpec("Fast burn rate (1h)", "timeseries",
              'slipstream_slo_burn_rate_ratio{window="1h"}', "{{service}}/{{slo}}",
              description="1 = spending the budget exactly over the period."),
    PanelSpec("Open alerts", "table", "slipstream_slo_alert_active == 1",
              description="Incidents open now, with severity and tier."),
    PanelSpec("Frozen services", "table", "max by (service) (slipstream_slo_frozen) == 1",
              description="Releases frozen by the error-budget policy."),
    PanelSpec("Events counted per second", "timeseries",
              "sum by (topic) (rate(slipstream_input_events_total[1m]))", "{{topic}}",
              unit="reqps"),
)  # fmt: skip

SLO_DETAIL = (
    PanelSpec("SLI over the period", "stat", f"slipstream_slo_sli_ratio{{{SLO}}}",
              unit="percentunit"),
    PanelSpec("Objective", "stat", f"slipstream_slo_objective_ratio{{{SLO}}}",
              unit="percentunit"),
    PanelSpec("Burn rate per window", "timeseries",
              f"slipstream_slo_burn_rate_ratio{{{SLO}}}", "{{window}}",
              description="Each alert tier fires when its long and short windows both "
                          "exceed its factor."),
    PanelSpec("Error budget remaining", "timeseries",
              f"slipstream_slo_error_budget_remaining_ratio{{{SLO}}}", "remaining",
              unit="percentunit"),
    PanelSpec("Budget spent per deploy", "table",
              f"slipstream_deploy_budget_consumed_ratio{{{SLO}}}", unit="percentunit",
              description="The share of the SLO's budget each deploy spent, with its "
                          "verdict."),
)  # fmt: skip

SERVICES_QUERY = "label_values(slipstream_slo_objective_ratio, service)"
DEPLOY_MARKERS = 'slipstream_deploy_timestamp_seconds{service="$service"} * 1000'


def _panel(spec: PanelSpec) -> timeseries.Panel | stat.Panel | table.Panel:
    query = prometheus.Dataquery().expr(spec.expr).datasource(DATASOURCE)
    if spec.legend:
        query = query.legend_format(spec.legend)
    if spec.kind == "table":
        query = query.instant()
    panel: timeseries.Panel | stat.Panel | table.Panel
    if spec.kind == "timeseries":
        panel = timeseries.Panel()
    elif spec.kind == "stat":
        panel = stat.Panel()
    else:
        panel = table.Panel()
    panel = panel.title(spec.title).datasource(DATASOURCE).with_target(query)
    if spec.unit:
        panel = panel.unit(spec.unit)
    if spec.description:
        panel = panel.description(spec.description)
    return panel.height(8).span(12)


def _variable(name: str, query: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(name)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def _board(title: str, uid: str, since: str) -> dashboard.Dashboard:
    """A slipstream dashboard: its tags, a 10 s refresh and the time range up to now."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["slipstream", "slo"])
        .refresh("10s")
        .time(since, "now")
    )


def _with_panels(board: dashboard.Dashboard, specs: tuple[PanelSpec, ...]) -> dashboard.Dashboard:
    for spec in specs:
        board = board.with_panel(_panel(spec))
    return board


def overview() -> dashboard.Dashboard:
    return _with_panels(_board("slipstream overview", "slipstream-overview", "now-6h"), OVERVIEW)


def slo_detail() -> dashboard.Dashboard:
    board = (
        _board("slipstream SLO", "slipstream-slo", "now-24h")
        .with_variable(_variable("service", SERVICES_QUERY))
        .with_variable(_variable(
            "slo", 'label_values(slipstream_slo_objective_ratio{service="$service"}, slo)'))
        .annotation(
            dashboard.AnnotationQuery()
            .name("Deploys")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("blue")
            .expr(DEPLOY_MARKERS)
        )
    )  # fmt: skip
    return _with_panels(board, SLO_DETAIL)


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{d.build().uid}.json": json.dumps(d.build(), cls=JSONEncoder, indent=2, sort_keys=True)
        + "\n"
        for d in (overview(), slo_detail())
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
