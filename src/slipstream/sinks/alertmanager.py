"""Alert transitions from ``slo.alerts`` to Alertmanager's API v2.

One Alertmanager alert per open incident of an SLO, identified (and so deduplicated by
Alertmanager) by its labels: ``alertname``, ``service``, ``slo``, ``severity``, ``tier``
and the namespace, plus the SLO's own labels from the catalogue. A firing transition
posts it with ``startsAt`` at the incident's opening; an escalation to another tier
resolves it and posts the new tier's; a resolved transition posts it with ``endsAt``.
Alertmanager forgets an alert that is not posted again within its ``resolve_timeout``,
so open alerts are re-posted every ``RESEND_S`` with an ``endsAt`` a few intervals
ahead, as Prometheus does.

Delivery is at least once: the sink commits a record's offset only after Alertmanager
accepted it, retrying with exponential backoff meanwhile; a repeat post of the same
alert is harmless (same labels, same fingerprint).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slipstream.slo.catalogue import Catalogue

log = logging.getLogger(__name__)

ALERTNAME = "SlipstreamErrorBudgetBurn"
RESEND_S = 60.0
ENDS_AFTER_S = 4 * RESEND_S  # an open alert lives this long in Alertmanager unless posted again
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def tier_name(catalogue: Catalogue, record: dict[str, Any]) -> str:
    """The catalogue's name of the tier a record's windows and factor belong to."""
    slo = catalogue.slo(record["service"], record["slo"])
    for tier in slo.tiers if slo else ():
        if (tier.severity == record["severity"]
                and tier.long_window_ms == record["long_window_s"] * 1000
                and abs(tier.factor - record["factor"]) < 1e-9):  # fmt: skip
            return tier.name
    return f"{record['severity']}-{record['long_window_s']}s"


def alert_labels(catalogue: Catalogue, namespace: str, record: dict[str, Any]) -> dict[str, str]:
    slo = catalogue.slo(record["service"], record["slo"])
    labels = {**(slo.labels if slo else {}), "alertname": ALERTNAME,
              "service": record["service"], "slo": record["slo"],
              "severity": record["severity"], "tier": tier_name(catalogue, record)}  # fmt: skip
    if namespace:
        labels["namespace"] = namespace
    return labels


def alert_annotations(catalogue: Catalogue, record: dict[str, Any]) -> dict[str, str]:
    slo = catalogue.slo(record["service"], record["slo"])
    remaining = record.get("budget_remaining_ratio")
    notes = {
        "summary": (f"{record['service']}/{record['slo']} is burning its error budget "
                    f"{record['burn_rate_long']:.1f}x too fast ({record['severity']})"),
        "description": (f"Burn rate {record['burn_rate_long']:.2f} over {record['long_window_s']}s "
                        f"and {record['burn_rate_short']:.2f} over {record['short_window_s']}s, "
                        f"threshold {record['factor']:g}; cause: {record.get('cause')}."),
        "burn_rate_long": f"{record['burn_rate_long']:.4f}",
        "burn_rate_short": f"{record['burn_rate_short']:.4f}",
        "budget_remaining_ratio": "" if remaining is None else f"{remaining:.4f}",
        "suspected_deploy": record.get("suspected_deploy_id") or "",
        "cause": record.get("cause") or "unknown",
        "alert_id": record["alert_id"],
    }  # fmt: skip
    if slo is not None and slo.runbook_url:
        notes["runbook_url"] = slo.runbook_url
    return notes


@dataclass
class AlertBook:
    """The open alert of each SLO (one incident at a time per SLO) and what to post for
    each transition."""

    catalogue: Catalogue
    namespace: str
    open: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def apply(self, record: dict[str, Any], now_ms: float) -> list[dict[str, Any]]:
        """The alerts to post for one transition record: the SLO's alert, and when an
        escalation changed its labels (severity, tier), the previous one resolved: in
        Alertmanager the labels are the alert's identity."""
        labels = alert_labels(self.catalogue, self.namespace, record)
        incident = (record["service"], record["slo"])
        previous = self.open.pop(incident, None)
        posts: list[dict[str, Any]] = []
        starts = iso(record["event_time_ms"])
        if previous is not None:
            if previous["labels"] == labels:
                starts = previous["startsAt"]
            else:
                posts.append({**previous, "endsAt": iso(now_ms)})  # superseded
        alert: dict[str, Any] = {"labels": labels,
                                 "annotations": alert_annotations(self.catalogue, record),
                                 "startsAt": starts}  # fmt: skip
        if record["state"] == "resolved":
            # Resolved at once: an end in the past (the event time of the resolution may
            # lie ahead of the wall clock in a replay; Alertmanager takes now then).
            alert["endsAt"] = iso(min(record["event_time_ms"], now_ms))
            if previous is not None and previous["labels"] != labels:
                return posts  # the open alert, resolved above, was the incident's
        else:
            self.open[incident] = alert
            alert["endsAt"] = iso(now_ms + ENDS_AFTER_S * 1000)
        return [*posts, alert]

    def refreshed(self, now_ms: float) -> list[dict[str, Any]]:
        """Every open alert with its end moved ahead: what the periodic re-post sends."""
        for alert in self.open.values():
            alert["endsAt"] = iso(now_ms + ENDS_AFTER_S * 1000)
        return list(self.open.values())


class AlertmanagerClient:
    def __init__(self, url: str, timeout_s: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.timeout_s = timeout_s
        self.sleep = sleep

    def post(self, alerts: list[dict[str, Any]]) -> None:
        """POST once; raises on a refusal or an unreachable Alertmanager."""
        body = json.dumps(alerts).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
            if not 200 <= resp.status < 300:
                raise OSError(f"Alertmanager answered {resp.status}")

    def post_until_accepted(self, alerts: list[dict[str, Any]],
                            should_stop: Callable[[], bool] = lambda: False) -> bool:  # fmt: skip
        """Retry with exponential backoff until accepted; False only if told to stop."""
        attempt = 0
        while True:
            try:
                self.post(alerts)
                return True
            except (OSError, urllib.error.URLError) as exc:
                delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                log.warning("Alertmanager at %s: %s; retrying in %.1f s", self.url, exc, delay)
                attempt += 1
                if should_stop():
                    return False
                self.sleep(delay)
