"""The state the sinks keep is the newest: a micro-batch can hold hours of event time, and a
transition made early in it carries the state of its own instant."""

from __future__ import annotations

from slipstream.sinks.state import InMemoryStateSink
from slipstream.slo.alerts import Transition
from slipstream.slo.catalogue import parse_catalogue
from slipstream.slo.engine import BudgetSnapshot
from slipstream.slo.policy import REPORTED_WINDOWS_MS

CATALOGUE = parse_catalogue(
    {"services": {"api": {"slos": [{"name": "availability", "objective": 99.9,
                                    "sli": {"kind": "availability"}}]}}},
    "t",
)  # fmt: skip


def snapshot_at(at_ms: int, total: int) -> BudgetSnapshot:
    rates = dict.fromkeys(REPORTED_WINDOWS_MS, 1.0)
    events = dict.fromkeys(REPORTED_WINDOWS_MS, total)
    return BudgetSnapshot("api", "availability", 99.9, 30, total - 1, total, 0.5, rates, events,
                          (), at_ms)  # fmt: skip


def firing_at(at_ms: int) -> Transition:
    tier = CATALOGUE.all_slos()[0].tiers[0]
    return Transition("a1", "api", "availability", "firing", "page", tier, at_ms, 20.0, 20.0, at_ms)


def test_an_earlier_transition_keeps_its_alert_but_not_its_older_state() -> None:
    sink = InMemoryStateSink()
    sink.add_transition(firing_at(1_000), snapshot_at(1_000, 10))
    sink.add_snapshot(snapshot_at(50_000, 99))
    sink.add_transition(firing_at(2_000), snapshot_at(2_000, 11))  # later in the same batch
    sink.add_snapshot(snapshot_at(40_000, 90))
    (state,) = sink.states()
    assert state.snapshot.updated_at_ms == 50_000 and state.snapshot.total == 99
    assert state.alert is not None and state.alert.event_time_ms == 2_000
