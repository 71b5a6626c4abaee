"""Golden numbers of SLO-MATH.md, the catalogue's rules, and the alert state machine."""

from __future__ import annotations

import random

import pytest

from slipstream.slo.alerts import AlertMachine, alert_id, budget_remaining, burn_rate
from slipstream.slo.catalogue import CatalogueError, Sli, parse_catalogue
from slipstream.slo.engine import PartitionEngine
from slipstream.slo.events import Request
from slipstream.slo.policy import DAY_MS, HOUR_MS, default_tiers, detection_time_ms

T0 = 1_795_000_000_000 // 3_600_000 * 3_600_000  # an hour boundary


@pytest.mark.parametrize(
    ("period_days", "factors"),
    [(30, [14.4, 6.0, 3.0, 1.0]), (28, [13.44, 5.6, 2.8, 0.9333])],
    ids=[
        "a 30-day period pages at 14.4 and 6, tickets at 3 and 1",
        "a 28-day period pages at 13.44 and 5.6, tickets at 2.8 and 0.9333",
    ],
)
def test_default_tier_factors(period_days: int, factors: list[float]) -> None:
    tiers = default_tiers(period_days)
    assert [t.factor for t in tiers] == pytest.approx(factors, abs=1e-4)
    assert [t.severity for t in tiers] == ["page", "page", "ticket", "ticket"]
    assert [t.long_window_ms // t.short_window_ms for t in tiers] == [12] * 4
    assert [t.short_window_ms for t in tiers] == [300_000, 1_800_000, 7_200_000, 21_600_000]


def test_detection_times_of_a_total_outage_at_three_nines() -> None:
    page_1h, page_6h, *_ = default_tiers(30)
    assert detection_time_ms(1.0, 0.999, page_1h) == pytest.approx(51_840)
    assert detection_time_ms(1.0, 0.999, page_6h) == pytest.approx(129_600)
    # At five nines a total outage spends the whole 30-day budget in 25.92 s.
    assert pytest.approx(25_920) == 0.00001 * 30 * DAY_MS


def test_burn_rate_and_budget_definitions() -> None:
    assert burn_rate(2, 1000, 0.001) == pytest.approx(2.0)
    assert burn_rate(0, 0, 0.001) == 0.0  # no data is no burn, never NaN
    assert budget_remaining(1, 1000, 0.001) == pytest.approx(0.0)
    assert budget_remaining(3, 1000, 0.001) == pytest.approx(-2.0)
    assert budget_remaining(0, 0, 0.001) == 1.0


CATALOGUE = {
    "services": {
        "checkout": {
            "depends_on": ["payments"],
            "labels": {"team": "shop"},
            "slos": [
                {"name": "availability", "objective": 99.9, "period": "30d",
                 "sli": {"kind": "availability", "bad_status": [500, 599]}},
                {"name": "latency", "objective": 99, "period": "28d",
                 "sli": {"kind": "latency", "threshold_ms": 300},
                 "alerting": {"min_events": 10,
                              "tiers": {"ticket-3d": False, "page-1h": {"factor": 10}}}},
            ],
        }
    }
}  # fmt: skip


def test_catalogue_parses_defaults_and_overrides() -> None:
    cat = parse_catalogue(CATALOGUE, "cat.yaml")
    avail, latency = cat.slos_of("checkout")
    assert avail.objective == pytest.approx(0.999) and avail.period_days == 30
    assert [t.name for t in avail.tiers] == ["page-1h", "page-6h", "ticket-1d", "ticket-3d"]
    assert avail.labels == {"team": "shop"} and avail.slo_id == "checkout-availability"
    assert [t.name for t in latency.tiers] == ["page-1h", "page-6h", "ticket-1d"]
    assert latency.tiers[0].factor == 10 and latency.tiers[1].factor == pytest.approx(5.6)
    assert latency.min_events == 10
    assert cat.services["checkout"].depends_on == ("payments",)
    assert cat.services["checkout"].names_callees is None  # not declared: inferred


def test_a_service_declares_whether_it_names_its_callees() -> None:
    checkout = CATALOGUE["services"]["checkout"]
    for declared in (True, False):
        raw = {"services": {"checkout": {**checkout, "names_callees": declared}}}
        assert parse_catalogue(raw, "cat.yaml").services["checkout"].names_callees is declared
    raw = {"services": {"checkout": {**checkout, "names_callees": "yes"}}}
    with pytest.raises(CatalogueError, match=r"services.checkout.names_callees: true or false"):
        parse_catalogue(raw, "cat.yaml")


def _request(status: int = 200, latency: float = 10.0, service: str = "checkout") -> Request:
    return Request("e", service, "GET /", status, latency, T0)


def test_slis_classify_by_status_range_and_latency_threshold() -> None:
    avail = Sli("availability", ((500, 599), (429, 429)))
    assert avail.is_bad(_request(503)) and avail.is_bad(_request(429))
    assert not avail.is_bad(_request(404))
    latency = Sli("latency", threshold_ms=300)
    assert latency.is_bad(_request(latency=300.1)) and not latency.is_bad(_request(latency=300))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"objective": 100}, r"services.checkout.slos\[0\] \(availability\).objective"),
        ({"period": "90d"}, r"\(availability\).period: one of 7d, 28d, 30d"),
        ({"sli": {"kind": "freshness"}}, r"\(availability\).sli.kind"),
        ({"sli": {"kind": "latency"}}, r"\(availability\).sli.threshold_ms"),
        ({"sli": {"kind": "availability", "bad_status": [600, 700]}}, "status range"),
        ({"colour": "red"}, r"unknown key 'colour'"),
        ({"alerting": {"tiers": {"page-2h": {"factor": 3}}}}, "new tier needs"),
        ({"alerting": {"tiers": {"page-1h": {"long": "2m", "short": "5m"}}}}, "short < long"),
        ({"alerting": {"tiers": {"page-1h": {"long": "6h5m"}}}}, "duration like"),
        (
            {"alerting": {"tiers": {"ticket-3d": {"long": "4385m", "short": "6h"}}}},
            "no bucket resolution",
        ),
    ],
)
def test_catalogue_errors_name_file_service_slo_and_key(
    patch: dict[str, object], message: str
) -> None:
    raw = {"services": {"checkout": {"slos": [{**CATALOGUE["services"]["checkout"]["slos"][0],  # type: ignore[index]
                                                **patch}]}}}  # fmt: skip
    with pytest.raises(CatalogueError, match=message) as info:
        parse_catalogue(raw, "cat.yaml")
    assert str(info.value).startswith("cat.yaml: services.checkout")


def test_duplicate_slo_names_are_refused() -> None:
    slo = CATALOGUE["services"]["checkout"]["slos"][0]  # type: ignore[index]
    with pytest.raises(CatalogueError, match="duplicate SLO name 'availability'"):
        parse_catalogue({"services": {"checkout": {"slos": [slo, slo]}}}, "cat.yaml")


def test_alert_ids_are_deterministic_and_distinct() -> None:
    a = alert_id("checkout", "availability", T0, "firing")
    assert a == alert_id("checkout", "availability", T0, "firing")
    assert a != alert_id("checkout", "availability", T0, "resolved")


def _engine(objective: float = 99.9, min_events: int = 100, **tiers: object) -> PartitionEngine:
    raw = {"services": {"checkout": {"slos": [{
        "name": "availability", "objective": objective, "period": "30d",
        "sli": {"kind": "availability"},
        "alerting": {"min_events": min_events, "tiers": tiers or None}}]}}}  # fmt: skip
    return PartitionEngine(0, parse_catalogue(raw, "t"))


def _feed(engine: PartitionEngine, events: list[tuple[int, int]]) -> list[tuple[int, str, str]]:
    """Feed (ts, status) one message each; return (event time, state, severity) transitions."""
    out = []
    for offset, (ts, status) in enumerate(events):
        engine.begin(offset)
        engine.absorb(Request(f"e{offset}", "checkout", "GET /", status, 5.0, ts))
        out += [(t.event_time_ms, t.state, t.severity) for t, _ in engine.end().transitions]
    return out


@pytest.mark.parametrize(
    ("keep", "detected_after_ms"),
    [("page-1h", 52_000), ("page-6h", 130_500)],
    ids=[
        "the 1h tier pages 51.84 s into a total outage (the event after the 104th bad one: 52.0 s)",
        "the 6h tier pages after 130.4 s: its window starts on a 5 min boundary, so the 6 h of good"
        " events stay in it (2t / (43 200 + 2t) >= 0.006; the event after: 130.5 s)",
    ],
)
def test_detection_time_of_a_total_outage_with_full_windows(
    keep: str, detected_after_ms: int
) -> None:
    # Six clean hours at 2 events/s fill both page tiers' windows; then everything fails.
    onset = T0 + 6 * HOUR_MS
    events = [(T0 + i * 500, 200) for i in range(6 * 3600 * 2)]
    events += [(onset + i * 500, 503) for i in range(600)]
    others = {n: False for n in ("page-1h", "page-6h", "ticket-1d", "ticket-3d") if n != keep}
    transitions = _feed(_engine(**others), events)
    assert transitions[0][1:] == ("firing", "page")
    assert transitions[0][0] - onset == detected_after_ms


def test_one_incident_on_noisy_traffic_near_the_threshold() -> None:
    """A 2 % error burst at 99.9 % with ~600 events per 5 minutes, for three hours."""
    rng = random.Random(42)
    events = []
    t = T0
    end_burst = T0 + 6 * HOUR_MS
    while t < T0 + 20 * HOUR_MS:  # the 3-day ticket tier holds 6 h past its 6 h window
        in_burst = T0 + 3 * HOUR_MS <= t < end_burst
        events.append((t, 503 if rng.random() < (0.02 if in_burst else 0.0005) else 200))
        t += int(rng.expovariate(2.0) * 1000) + 1
    engine = _engine()
    transitions = _feed(engine, events)
    states = [s for _, s, _ in transitions]
    assert states.count("firing") == 1
    assert states.count("escalated") <= 1
    assert states.count("resolved") == 1 and states[-1] == "resolved"
    # What the hysteresis removes: the bare rule's short window crosses 14.4x again and again.
    crossings = _raw_crossings(events, factor=14.4, short_ms=300_000, budget=0.001)
    assert crossings >= 12


def _raw_crossings(
    events: list[tuple[int, int]], factor: float, short_ms: int, budget: float
) -> int:
    above, count, j = False, 0, 0
    window: list[tuple[int, int]] = []
    for boundary in range(events[0][0] // 10_000 * 10_000, events[-1][0], 10_000):
        while j < len(events) and events[j][0] < boundary:
            window.append(events[j])
            j += 1
        window = [e for e in window if e[0] >= boundary - short_ms]
        bad = sum(1 for _, s in window if s >= 500)
        now_above = bool(window) and bad / len(window) / budget >= factor
        count += now_above and not above
        above = now_above
    return count


def test_a_cold_start_does_not_page_on_a_handful_of_early_errors() -> None:
    events = [(T0 + i * 1000, 503 if i % 4 == 0 else 200) for i in range(60)]
    assert _feed(_engine(), events) == []


def test_the_machine_escalates_once_and_never_deescalates() -> None:
    raw = {"services": {"s": {"slos": [{"name": "a", "objective": 99, "period": "7d",
           "sli": {"kind": "availability"}, "alerting": {"min_events": 0}}]}}}  # fmt: skip
    slo = parse_catalogue(raw, "t").slos_of("s")[0]
    machine = AlertMachine()
    ticket = {t.long_window_ms: (0, 100) for t in slo.tiers} | {
        t.short_window_ms: (0, 100) for t in slo.tiers
    }
    page_1h, _page_6h, t1d, _t3d = slo.tiers
    for w in (t1d.long_window_ms, t1d.short_window_ms):
        ticket[w] = (5, 100)  # burn 5 >= 2.8... only the ticket tier trips
    first = machine.evaluate(slo, T0, ticket, observed_ms=7 * 86_400_000)
    assert first is not None and (first.state, first.severity) == ("firing", "ticket")
    page = dict(ticket) | {page_1h.long_window_ms: (50, 100), page_1h.short_window_ms: (50, 100)}
    up = machine.evaluate(slo, T0 + 10_000, page, observed_ms=7 * 86_400_000)
    assert up is not None and (up.state, up.severity) == ("escalated", "page")
    assert (
        machine.evaluate(slo, T0 + 20_000, ticket, observed_ms=7 * 86_400_000) is None
    )  # page tier holding, no de-escalation
