"""SLO state for Prometheus, produced at scrape time: our names and Sloth's.

One series per SLO and metric (per window where there is a window), built
from the in-memory state when Prometheus scrapes, so nothing goes stale
between evaluations and nothing is kept twice. Sloth's recording-rule names
and labels (``sloth_id``, ``sloth_service``, ``sloth_slo``, ``sloth_window``)
make Grafana dashboards 14348 and 14643 work unchanged. A window without
events has no error ratio: its series is left out, never NaN.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from slipstream import __version__
from slipstream.sinks.state import InMemoryStateSink
from slipstream.slo.alerts import Transition
from slipstream.slo.catalogue import Catalogue
from slipstream.slo.policy import REPORTED_WINDOWS_MS


def _gauge(name: str, doc: str) -> Metric:
    return Metric(name, doc, "gauge")


class SloCollector(Collector):
    def __init__(self, state: InMemoryStateSink, catalogue: Catalogue) -> None:
        self.state = state
        self.catalogue = catalogue

    def describe(self) -> list[Metric]:
        return []  # state-dependent: no fixed description (the registry then calls collect)

    def collect(self) -> Iterator[Metric]:
        ours = {
            "objective": _gauge("slipstream_slo_objective_ratio", "The SLO's objective (0.999)."),
            "period": _gauge("slipstream_slo_period_days", "The SLO's rolling period."),
            "good": _gauge("slipstream_slo_period_good_events", "Good events over the period."),
            "total": _gauge("slipstream_slo_period_events", "All events over the period."),
            "sli": _gauge("slipstream_slo_sli_ratio", "good / total over the period."),
            "remaining": _gauge(
                "slipstream_slo_error_budget_remaining_ratio",
                "Error budget left over the period (may be negative).",
            ),
            "burn": _gauge("slipstream_slo_burn_rate_ratio", "Burn rate per window."),
            "alert": _gauge("slipstream_slo_alert_active", "1 while an incident is open."),
            "frozen": _gauge("slipstream_slo_frozen", "1 while releases are frozen."),
            "updated": _gauge(
                "slipstream_slo_updated_timestamp_seconds", "Event time the state was evaluated at."
            ),
        }
        sloth_windows = {
            w: _gauge(f"slo:sli_error:ratio_rate{w}", f"Error ratio over {w} (Sloth).")
            for w in [*REPORTED_WINDOWS_MS, "7d", "28d", "30d"]
        }
        sloth = {
            "objective": _gauge("slo:objective:ratio", "Objective (Sloth)."),
            "budget": _gauge(
                "slo:error_budget:ratio", "Error budget ratio, 1 - objective (Sloth)."
            ),
            "days": _gauge("slo:time_period:days", "SLO period (Sloth)."),
            "current": _gauge("slo:current_burn_rate:ratio", "Burn rate over 5m (Sloth)."),
            "period": _gauge("slo:period_burn_rate:ratio", "Burn rate over the period (Sloth)."),
            "remaining": _gauge(
                "slo:period_error_budget_remaining:ratio",
                "Error budget remaining over the period (Sloth).",
            ),
        }
        info = _gauge("sloth_slo_info", "SLO metadata (Sloth).")

        for st in self.state.states():
            s = st.snapshot
            slo = self.catalogue.slo(s.service, s.slo)
            if slo is None:
                continue
            base = {"service": s.service, "slo": s.slo}
            o = ours
            o["objective"].add_sample(o["objective"].name, base, slo.objective)
            o["period"].add_sample(o["period"].name, base, slo.period_days)
            o["good"].add_sample(o["good"].name, base, s.good)
            o["total"].add_sample(o["total"].name, base, s.total)
            if s.sli is not None:
                o["sli"].add_sample(o["sli"].name, base, s.sli)
            o["remaining"].add_sample(o["remaining"].name, base, s.budget_remaining_ratio)
            for w, rate in s.burn_rates.items():
                o["burn"].add_sample(o["burn"].name, {**base, "window": w}, rate)
            ids = {**slo.labels, "sloth_id": slo.slo_id, "sloth_service": s.service,
                   "sloth_slo": s.slo}  # fmt: skip
            if st.alert is not None:
                o["alert"].add_sample(o["alert"].name, _alert_labels(st.alert, base, ids), 1)
            o["frozen"].add_sample(o["frozen"].name, base, 1 if s.frozen else 0)
            o["updated"].add_sample(o["updated"].name, base, s.updated_at_ms / 1000)

            budget = slo.error_budget
            ratios = {
                w: rate * budget for w, rate in s.burn_rates.items() if s.window_events.get(w)
            }
            period_window = f"{slo.period_days}d"
            if s.total:
                ratios[period_window] = (s.total - s.good) / s.total
            for w, ratio in ratios.items():
                m = sloth_windows[w]
                m.add_sample(m.name, {**ids, "sloth_window": w}, ratio)
            sloth["objective"].add_sample(sloth["objective"].name, ids, slo.objective)
            sloth["budget"].add_sample(sloth["budget"].name, ids, budget)
            sloth["days"].add_sample(sloth["days"].name, ids, slo.period_days)
            if s.window_events.get("5m"):
                sloth["current"].add_sample(sloth["current"].name, ids, s.burn_rates["5m"])
            if s.total:
                period_burn = ratios[period_window] / budget
                sloth["period"].add_sample(sloth["period"].name, ids, period_burn)
                sloth["remaining"].add_sample(sloth["remaining"].name, ids, 1 - period_burn)
            info.add_sample(info.name, {
                **ids, "sloth_mode": "slipstream", "sloth_spec": "slipstream/v1",
                "sloth_version": __version__, "sloth_objective": f"{slo.objective_percent:g}",
            }, 1)  # fmt: skip

        consumed = _gauge(
            "slipstream_deploy_budget_consumed_ratio",
            "Share of the SLO's period error budget a deploy spent (verdict label).",
        )
        for i in self.state.impacts():
            consumed.add_sample(consumed.name, {
                "service": i.deploy.service, "slo": i.slo, "deploy_id": i.deploy.deploy_id,
                "version": i.deploy.version, "verdict": i.verdict.verdict,
            }, i.budget_consumed_ratio)  # fmt: skip
        markers = _gauge(
            "slipstream_deploy_timestamp_seconds",
            "Event time of a deploy's latest phase: Grafana draws it as an annotation.",
        )
        for d in self.state.deploys():
            markers.add_sample(markers.name, {
                "service": d.service, "deploy_id": d.deploy_id, "version": d.version,
                "change_type": d.change_type, "phase": d.phase,
            }, d.timestamp_ms / 1000)  # fmt: skip
        yield consumed
        yield markers
        yield from ours.values()
        yield from sloth_windows.values()
        yield from sloth.values()
        yield info


def _alert_labels(alert: Transition, base: dict[str, str], ids: dict[str, str]) -> dict[str, str]:
    # Sloth's ids too: the rules file turns the series into ALERTS with Sloth's labels.
    sloth = {k: v for k, v in ids.items() if k.startswith("sloth_")}
    return {**base, "severity": alert.severity, "tier": alert.tier.name, **sloth}
