"""What the Alertmanager sink posts for each alert transition, and its retry."""

from __future__ import annotations

from typing import Any

import yaml

from slipstream.sinks.alertmanager import ALERTNAME, AlertBook, AlertmanagerClient, iso
from slipstream.slo.catalogue import parse_catalogue

CATALOGUE = parse_catalogue(yaml.safe_load("""
services:
  shop:
    labels: {team: storefront}
    slos:
      - {name: availability, objective: 99.9, sli: {kind: availability},
         runbook_url: "https://runbooks.example.com/shop"}
"""), "test")  # fmt: skip


def _record(state: str, t_ms: int, **over: Any) -> dict[str, Any]:
    return {"alert_id": "a1", "service": "shop", "slo": "availability", "severity": "page",
            "long_window_s": 3600, "short_window_s": 300, "factor": 14.4, "state": state,
            "event_time_ms": t_ms, "processed_at_ms": t_ms, "burn_rate_long": 20.0,
            "burn_rate_short": 30.0, "budget_remaining_ratio": 0.9,
            "suspected_deploy_id": "d-42", "cause": "deploy", **over}  # fmt: skip


def test_a_firing_transition_posts_the_documented_labels_and_annotations() -> None:
    book = AlertBook(CATALOGUE, "prod")
    [alert] = book.apply(_record("firing", 1_000_000), now_ms=2_000_000)
    assert alert["labels"] == {"alertname": ALERTNAME, "service": "shop", "slo": "availability",
                               "severity": "page", "tier": "page-1h", "namespace": "prod",
                               "team": "storefront"}  # fmt: skip
    notes = alert["annotations"]
    assert notes["runbook_url"] == "https://runbooks.example.com/shop"
    assert notes["suspected_deploy"] == "d-42" and notes["cause"] == "deploy"
    assert (notes["burn_rate_long"], notes["budget_remaining_ratio"]) == ("20.0000", "0.9000")
    assert alert["startsAt"] == iso(1_000_000)
    assert alert["endsAt"] > iso(2_000_000)  # open: ends unless posted again


def test_a_repeat_keeps_the_start_and_resolution_ends_the_alert() -> None:
    book = AlertBook(CATALOGUE, "")
    [first] = book.apply(_record("firing", 1_000_000), now_ms=1_000_000)
    [again] = book.apply(_record("firing", 1_600_000), now_ms=1_600_000)
    assert again["startsAt"] == first["startsAt"] and len(book.open) == 1
    refreshed = book.refreshed(now_ms=1_700_000)
    assert [a["labels"] for a in refreshed] == [first["labels"]]
    [done] = book.apply(_record("resolved", 1_800_000), now_ms=1_900_000)
    assert done["endsAt"] == iso(1_800_000) and not book.open
    assert done["labels"] == first["labels"]  # the same alert, by identity


def test_an_escalation_to_another_tier_resolves_the_previous_alert() -> None:
    book = AlertBook(CATALOGUE, "")
    slow = _record("firing", 1_000_000, long_window_s=21600, factor=6.0)
    [ticket] = book.apply(slow, now_ms=1_000_000)
    assert ticket["labels"]["tier"] == "page-6h"
    old, new = book.apply(_record("escalated", 1_300_000), now_ms=1_300_000)
    assert old["labels"] == ticket["labels"] and old["endsAt"] == iso(1_300_000)
    assert new["labels"]["tier"] == "page-1h" and new["endsAt"] > iso(1_300_000)
    # Resolving the incident ends the alert of its last tier.
    [done] = book.apply(_record("resolved", 1_900_000), now_ms=1_900_000)
    assert done["labels"] == new["labels"] and not book.open


def test_a_tier_not_in_the_catalogue_is_named_by_its_window() -> None:
    book = AlertBook(CATALOGUE, "")
    [alert] = book.apply(_record("firing", 0, long_window_s=7200, factor=9.0), now_ms=0)
    assert alert["labels"]["tier"] == "page-7200s"


def test_posting_retries_with_backoff_until_accepted() -> None:
    waits: list[float] = []
    client = AlertmanagerClient("http://127.0.0.1:9", sleep=waits.append)
    calls = iter([OSError("refused"), OSError("refused"), None])

    def post(alerts: list[dict[str, Any]]) -> None:
        outcome = next(calls)
        if outcome is not None:
            raise outcome

    client.post = post  # type: ignore[method-assign]
    assert client.post_until_accepted([{"labels": {}}])
    assert waits == [0.5, 1.0]
    stopped = AlertmanagerClient("http://127.0.0.1:9", sleep=waits.append)
    assert not stopped.post_until_accepted([{"labels": {}}], should_stop=lambda: True)
