"""Deploys of one partition's services: their history, per-version counts and verdicts.

Request events carry the version that served them. While a deploy's new
version and its previous version both serve, every SLO of the service counts
bad and total events per version in 10 s ticks, and the version-split test
of ``correlation`` turns them into a verdict per (deploy, SLO). A verdict
that changes is published; an SLO's alert names the deploy its budget burn
is attributed to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from slipstream.slo.correlation import (
    ALPHA,
    CHANGE_PRIOR,
    MIN_BAD_EVENTS,
    Verdict,
    VersionSplitTest,
    bayes_factor_bound,
    binomial_upper_tail,
    degraded_controls,
    rate_rose,
    split_verdict,
)
from slipstream.slo.events import Deploy, Request
from slipstream.slo.windows import FINE_MS, WindowCounts

HISTORY_PER_SERVICE: Final = 20
SUSPECT_VERDICTS: Final = frozenset({"ATTRIBUTED", "SUSPECTED"})
SUSPECT_HORIZON_MS: Final = 2 * 3_600_000
FINAL_VERDICTS: Final = frozenset({"ATTRIBUTED", "CLEARED"})
BEFORE_AFTER_WARMUP_MS: Final = 120_000
ROLLBACK_BURN_RATE: Final = 14.4
ROLLBACK_BUDGET: Final = 0.02
BEFORE_AFTER_CLEAR_MS: Final = 30 * 60_000
# Stricter than ALPHA: the before/after p-value is looked at on every tick.
BEFORE_AFTER_ALPHA: Final = 0.0001


@dataclass(frozen=True)
class Impact:
    """A verdict on one deploy for one SLO, with its evidence."""

    deploy: Deploy
    slo: str
    verdict: Verdict
    budget_consumed_ratio: float
    decided_at_ms: int
    evidence: dict[str, Any]


@dataclass
class TrackedDeploy:
    deploy: Deploy  # the latest phase seen
    started_ms: int
    tests: dict[str, VersionSplitTest] = field(default_factory=dict)
    ticks: dict[str, list[int]] = field(default_factory=dict)  # slo -> [bn, tn, bo, to]
    verdicts: dict[str, str] = field(default_factory=dict)
    ended_ms: int | None = None  # event time of `finished` or `rolled_back`
    fast_ticks: dict[str, int] = field(default_factory=dict)  # consecutive fast-burn ticks
    rollback: list[str] = field(default_factory=list)  # SLOs a rollback was recommended for

    def splitting_at(self, ts_ms: int) -> bool:
        """Both versions may serve at event time ``ts_ms`` (the topics of deploys and
        requests are consumed side by side, so phases are placed by event time)."""
        return self.started_ms <= ts_ms and (self.ended_ms is None or ts_ms < self.ended_ms)

    def to_dict(self) -> dict[str, Any]:
        d = self.deploy
        return {
            "deploy": [
                d.deploy_id,
                d.service,
                d.version,
                d.previous_version,
                d.change_type,
                d.phase,
                d.rollout_fraction,
                d.timestamp_ms,
                d.actor,
                d.commit,
                d.description,
            ],
            "started_ms": self.started_ms,
            "tests": {k: t.to_list() for k, t in self.tests.items()},
            "ticks": self.ticks,
            "verdicts": self.verdicts,
            "ended_ms": self.ended_ms,
            "fast_ticks": self.fast_ticks,
            "rollback": self.rollback,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackedDeploy:
        return cls(
            Deploy(*data["deploy"]),
            data["started_ms"],
            {k: VersionSplitTest.from_list(v) for k, v in data["tests"].items()},
            {k: list(v) for k, v in data["ticks"].items()},
            dict(data["verdicts"]),
            data.get("ended_ms"),
            dict(data.get("fast_ticks", {})),
            list(data.get("rollback", [])),
        )


class DeployTracker:
    def __init__(self) -> None:
        self.deploys: dict[str, TrackedDeploy] = {}
        self.by_service: dict[str, list[str]] = {}  # deploy ids, oldest first
        self.dirty: set[str] = set()
        self.dropped: set[str] = set()

    def on_deploy(self, deploy: Deploy) -> None:
        tracked = self.deploys.get(deploy.deploy_id)
        if tracked is None:
            tracked = self.deploys[deploy.deploy_id] = TrackedDeploy(deploy, deploy.timestamp_ms)
            ids = self.by_service.setdefault(deploy.service, [])
            ids.append(deploy.deploy_id)
            while len(ids) > HISTORY_PER_SERVICE:
                old = ids.pop(0)
                self.deploys.pop(old, None)
                self.dropped.add(old)
        elif deploy.timestamp_ms >= tracked.deploy.timestamp_ms:
            tracked.deploy = deploy
        if deploy.phase == "started":
            tracked.started_ms = min(tracked.started_ms, deploy.timestamp_ms)
        if deploy.phase in ("finished", "rolled_back"):
            tracked.ended_ms = min(tracked.ended_ms or deploy.timestamp_ms, deploy.timestamp_ms)
        self.dirty.add(deploy.deploy_id)

    def active(self, service: str, ts_ms: int) -> TrackedDeploy | None:
        """The newest deploy of ``service`` whose versions split traffic at ``ts_ms``."""
        for deploy_id in reversed(self.by_service.get(service, [])):
            tracked = self.deploys[deploy_id]
            if tracked.splitting_at(ts_ms):
                return tracked
        return None

    def suspect(self, service: str, slo: str, clock_ms: int) -> str | None:
        """A recent deploy of ``service`` (started within 2 h) blamed for ``slo``'s burn."""
        for deploy_id in reversed(self.by_service.get(service, [])):
            tracked = self.deploys[deploy_id]
            recent = clock_ms - tracked.started_ms <= SUSPECT_HORIZON_MS
            if recent and tracked.verdicts.get(slo) in SUSPECT_VERDICTS:
                return deploy_id
        return None

    def count(self, request: Request, slo: str, bad: bool) -> None:
        tracked = self.active(request.service, request.timestamp_ms)
        if tracked is None:
            return
        new = request.version == tracked.deploy.version
        tick = tracked.ticks.setdefault(slo, [0, 0, 0, 0])
        base = 0 if new else 2
        tick[base] += bad
        tick[base + 1] += 1
        self.dirty.add(tracked.deploy.deploy_id)

    def evaluate(
        self,
        service: str,
        slo: str,
        clock_ms: int,
        period_total: int,
        error_budget: float,
        windows: WindowCounts | None = None,
        external: bool = False,
        controls: Sequence[WindowCounts] = (),
        burn_rate_1h: float = 0.0,
    ) -> Impact | None:
        """Close the SLO's tick for the service's active deploy; return a changed verdict.

        A deploy that never splits traffic (blue-green, config) is judged before/after:
        the hour before it against what followed, once ``windows`` is given.
        """
        # The tick that just closed is [clock - 10 s, clock).
        tracked = self.active(service, clock_ms - 1)
        if tracked is None:
            return None
        tick = tracked.ticks.pop(slo, None)
        if tracked.verdicts.get(slo) == "ATTRIBUTED" and slo not in tracked.rollback:
            return self._rollback_check(tracked, slo, clock_ms, period_total, error_budget,
                                        burn_rate_1h)  # fmt: skip
        if tracked.verdicts.get(slo) in FINAL_VERDICTS:
            return None  # a sequential test that has decided stays decided
        test = tracked.tests.setdefault(slo, VersionSplitTest())
        if tick:
            test.update(*tick)
            self.dirty.add(tracked.deploy.deploy_id)
        elapsed_s = max((clock_ms - tracked.started_ms) / 1000, 1.0)
        verdict = split_verdict(test, test.bad_events / elapsed_s)
        evidence_extra: dict[str, Any] = {}
        unsplit = test.total_old == 0 and clock_ms - tracked.started_ms >= BEFORE_AFTER_WARMUP_MS
        if windows is not None and unsplit and verdict.verdict == "INCONCLUSIVE":
            verdict, evidence_extra = self._before_after(
                tracked, windows, clock_ms, external, controls
            )
        if tracked.verdicts.get(slo) == verdict.verdict:
            return None
        tracked.verdicts[slo] = verdict.verdict
        self.dirty.add(tracked.deploy.deploy_id)
        impact = self._impact(tracked, slo, test, verdict, clock_ms, period_total, error_budget)
        impact.evidence.update(evidence_extra)
        return impact

    def _rollback_check(
        self,
        tracked: TrackedDeploy,
        slo: str,
        clock_ms: int,
        period_total: int,
        error_budget: float,
        burn_rate_1h: float,
    ) -> Impact | None:
        """Recommend a rollback when an ATTRIBUTED deploy burns fast (burn >= 14.4 or 2 % of
        the budget spent) at two evaluations in a row (CORRELATION.md)."""
        test = tracked.tests.get(slo) or VersionSplitTest()
        impact = self._impact(tracked, slo, test, Verdict("ATTRIBUTED", 1.0), clock_ms,
                              period_total, error_budget)  # fmt: skip
        fast = burn_rate_1h >= ROLLBACK_BURN_RATE or impact.budget_consumed_ratio >= ROLLBACK_BUDGET
        tracked.fast_ticks[slo] = tracked.fast_ticks.get(slo, 0) + 1 if fast else 0
        self.dirty.add(tracked.deploy.deploy_id)
        if tracked.fast_ticks[slo] < 2:
            return None
        tracked.rollback.append(slo)
        impact.evidence.update({"rollback_recommended": True, "burn_rate_1h": burn_rate_1h})
        return impact

    @staticmethod
    def _before_after(
        tracked: TrackedDeploy,
        windows: WindowCounts,
        clock_ms: int,
        external: bool,
        controls: Sequence[WindowCounts],
    ) -> tuple[Verdict, dict[str, Any]]:
        start = tracked.started_ms
        warmup = 0 if tracked.deploy.change_type in ("config", "flag") else 120_000
        pre = windows.fine_range(start - 3_600_000, start // FINE_MS * FINE_MS)
        post = windows.fine_range((start + warmup) // FINE_MS * FINE_MS, clock_ms)
        ratio, p_harm = rate_rose(pre, post)
        evidence = {"method": "before_after", "pre": list(pre), "post": list(post),
                    "rate_ratio": ratio, "p_value": p_harm}  # fmt: skip
        if external:
            return Verdict("INCONCLUSIVE", 0.0), evidence | {"note": "external episode open"}
        # Difference in differences, coarsely: if the services around rose too, it is not
        # this change.
        usable, degraded = degraded_controls(
            (
                (other.fine_range(start - 3_600_000, start // FINE_MS * FINE_MS),
                 other.fine_range((start + warmup) // FINE_MS * FINE_MS, clock_ms))
                for other in controls
            ),
            min_ratio=2.0,
        )  # fmt: skip
        evidence["controls"] = {"usable": usable, "degraded": degraded}
        if degraded:
            return Verdict("INCONCLUSIVE", 0.0), evidence | {"note": "controls degraded too"}
        if post[0] >= MIN_BAD_EVENTS and p_harm <= BEFORE_AFTER_ALPHA and ratio >= 1.5:
            odds = CHANGE_PRIOR / (1 - CHANGE_PRIOR) * bayes_factor_bound(p_harm)
            posterior = odds / (1 + odds)
            if posterior >= 0.9:
                return Verdict("ATTRIBUTED", posterior), evidence
        if clock_ms - start >= BEFORE_AFTER_CLEAR_MS and pre[1] and post[1]:
            # No harm of 1.5x or more: too few bad events after for that rate.
            share = 1.5 * post[1] / (pre[1] + 1.5 * post[1])
            p_low = 1.0 - binomial_upper_tail(post[0] + 1, pre[0] + post[0], share)
            if p_low <= ALPHA:
                return Verdict("CLEARED", 1 - p_low), evidence | {"p_value_clear": p_low}
        return Verdict("INCONCLUSIVE", 0.0), evidence

    @staticmethod
    def _impact(
        tracked: TrackedDeploy,
        slo: str,
        test: VersionSplitTest,
        verdict: Verdict,
        clock_ms: int,
        period_total: int,
        error_budget: float,
    ) -> Impact:
        old_rate = test.bad_old / test.total_old if test.total_old else 0.0
        # Excess bad events on the new version over what the old version's rate predicts.
        excess = max(test.bad_new - test.total_new * old_rate, 0.0)
        consumed = excess / (error_budget * period_total) if period_total else 0.0
        rr = test.rate_ratio()
        evidence: dict[str, Any] = {
            "method": "version_split",
            "e_value": test.e_harm,
            "e_value_clear": test.e_clear,
            "rate_ratio": rr[0] if rr else None,
            "rate_ratio_ci95": [rr[1], rr[2]] if rr else None,
            "bad_new": test.bad_new,
            "total_new": test.total_new,
            "bad_old": test.bad_old,
            "total_old": test.total_old,
            "bad_rate_new": test.bad_new / test.total_new if test.total_new else None,
            "bad_rate_old": old_rate if test.total_old else None,
            "deploy_started_ms": tracked.started_ms,
            "decision_eta_s": verdict.decision_eta_s,
        }
        return Impact(tracked.deploy, slo, verdict, consumed, clock_ms, evidence)
