"""Burn rates, tier evaluation with hysteresis, and the per-SLO alert state machine.

A tier *trips* when both its long and short windows burn at least its factor,
the long window holds at least ``min_events`` (the low-traffic guard) and the
SLO has been observed for at least the tier's short window (the cold-start
guard: on a fresh start a 3-day window holding minutes of traffic would
otherwise trip on a handful of early errors).

Hysteresis: a tripped tier stays active until its short window has stayed
below the factor for a whole short window (``hold``). Evaluated exactly,
the Workbook rule flaps when noise carries the short window back and forth
across the line; with the hold, one incident is one firing per SLO.

One incident per SLO: it opens (``firing``) at the severity of its active
tiers, goes ``escalated`` once if a page tier trips while only tickets were
active (a page inhibits tickets of the same SLO), never de-escalates, and is
``resolved`` when no tier is active any more.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from slipstream.slo.catalogue import Slo
from slipstream.slo.policy import AlertTier

_ALERT_ID_NAMESPACE: Final = uuid.UUID("0d5f8a3e-6c1b-4f7e-9a2d-3b4c5d6e7f80")
SEVERITY_RANK: Final = {"ticket": 1, "page": 2}


def burn_rate(bad: int, total: int, error_budget: float) -> float:
    """error ratio / error budget; 0 for a window without events (no data is no burn)."""
    return bad / total / error_budget if total else 0.0


def budget_remaining(bad: int, total: int, error_budget: float) -> float:
    """1 - bad / (ε · total) over the period; 1 when nothing was served."""
    return 1.0 - bad / (error_budget * total) if total else 1.0


def alert_id(service: str, slo: str, opened_at_ms: int, state: str) -> str:
    """The same transition of the same incident always has the same id."""
    return uuid.uuid5(_ALERT_ID_NAMESPACE, f"{service}/{slo}/{opened_at_ms}/{state}").hex


@dataclass(frozen=True)
class Transition:
    alert_id: str
    service: str
    slo: str
    state: str  # firing | escalated | resolved
    severity: str
    tier: AlertTier
    event_time_ms: int
    burn_rate_long: float
    burn_rate_short: float
    opened_at_ms: int


@dataclass
class TierState:
    active: bool = False
    clear_since_ms: int | None = None


@dataclass
class AlertMachine:
    severity: str | None = None  # None: no open incident
    opened_at_ms: int | None = None
    tier_name: str | None = None  # the tier that set the current severity
    tiers: dict[str, TierState] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity, "opened_at_ms": self.opened_at_ms,
            "tier_name": self.tier_name,
            "tiers": {n: [t.active, t.clear_since_ms] for n, t in self.tiers.items()},
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertMachine:
        return cls(
            data.get("severity"), data.get("opened_at_ms"), data.get("tier_name"),
            {n: TierState(bool(a), c) for n, (a, c) in data.get("tiers", {}).items()},
        )  # fmt: skip

    def active_severities(self) -> list[str]:
        return [self.severity] if self.severity else []

    def evaluate(
        self,
        slo: Slo,
        clock_ms: int,
        windows: Mapping[int, tuple[int, int]],
        observed_ms: int,
        may_clear: bool = True,
    ) -> Transition | None:
        """Update every tier at ``clock_ms`` and return the incident's transition, if any.

        ``observed_ms``: how long the SLO has had a clock (event time since its first event).
        ``may_clear=False`` (the engine's evaluations inside a 10 s tick): tiers may become
        active, never start or finish clearing; that waits for the tick's close.
        """
        budget = slo.error_budget
        rates: dict[str, tuple[float, float]] = {}
        for tier in slo.tiers:
            long_bad, long_total = windows[tier.long_window_ms]
            short_bad, short_total = windows[tier.short_window_ms]
            br_long = burn_rate(long_bad, long_total, budget)
            br_short = burn_rate(short_bad, short_total, budget)
            rates[tier.name] = (br_long, br_short)
            state = self.tiers.setdefault(tier.name, TierState())
            if not state.active:
                if (
                    br_long >= tier.factor
                    and br_short >= tier.factor
                    and long_total >= slo.min_events
                    and observed_ms >= tier.short_window_ms
                ):
                    state.active, state.clear_since_ms = True, None
            elif not may_clear:
                continue
            elif br_short >= tier.factor:
                state.clear_since_ms = None
            elif state.clear_since_ms is None:
                state.clear_since_ms = clock_ms
            elif clock_ms - state.clear_since_ms >= tier.short_window_ms:
                state.active, state.clear_since_ms = False, None

        active = [t for t in slo.tiers if self.tiers[t.name].active]
        if not active:
            if self.severity is None:
                return None
            tier = next(t for t in slo.tiers if t.name == self.tier_name)
            return self._transition(slo, "resolved", tier, clock_ms, rates, close=True)
        top = max(active, key=lambda t: SEVERITY_RANK[t.severity])  # first of the highest
        if self.severity is None:
            self.opened_at_ms = clock_ms
            return self._transition(slo, "firing", top, clock_ms, rates)
        if SEVERITY_RANK[top.severity] > SEVERITY_RANK[self.severity]:
            return self._transition(slo, "escalated", top, clock_ms, rates)
        return None

    def _transition(
        self,
        slo: Slo,
        state: str,
        tier: AlertTier,
        clock_ms: int,
        rates: Mapping[str, tuple[float, float]],
        close: bool = False,
    ) -> Transition:
        assert self.opened_at_ms is not None
        severity = self.severity if close and self.severity else tier.severity
        br_long, br_short = rates[tier.name]
        out = Transition(
            alert_id(slo.service, slo.name, self.opened_at_ms, state),
            slo.service, slo.name, state, severity, tier, clock_ms, br_long, br_short,
            self.opened_at_ms,
        )  # fmt: skip
        if close:
            self.severity = self.opened_at_ms = self.tier_name = None
        else:
            self.severity, self.tier_name = tier.severity, tier.name
        return out
