"""Deploys of one partition's services: their history, per-version counts and verdicts.

Request events carry the version that served them. While a deploy's new
version and its previous version both serve, every SLO of the service counts
bad and total events per version in 10 s ticks, and the version-split test
of ``correlation`` turns them into a verdict per (deploy, SLO). A verdict
that changes is published; an SLO's alert names the deploy its budget burn
is attributed to.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from slipstream.slo.correlation import (
    ALPHA,
    CHANGE_PRIOR,
    MIN_BAD_EVENTS,
    MIN_DEGRADED_BAD,
    ControlShift,
    Verdict,
    VersionSplitTest,
    bayes_factor_bound,
    binomial_upper_tail,
    control_shift,
    log_add,
    ramp_over_step_llr,
    rate_rose,
    rise_may_start_first,
    rise_start,
    split_verdict,
)
from slipstream.slo.dose_response import dose_response, fraction_at
from slipstream.slo.events import Deploy
from slipstream.slo.windows import FINE_MS, MEDIUM_MS, Counts

HISTORY_PER_SERVICE: Final = 20
SUSPECT_VERDICTS: Final = frozenset({"ATTRIBUTED", "SUSPECTED"})
SUSPECT_HORIZON_MS: Final = 2 * 3_600_000
FINAL_VERDICTS: Final = frozenset({"ATTRIBUTED"})
BEFORE_AFTER_WARMUP_MS: Final = 120_000
ROLLBACK_BURN_RATE: Final = 14.4
ROLLBACK_BUDGET: Final = 0.02
BEFORE_AFTER_CLEAR_MS: Final = 30 * 60_000
# Stricter than ALPHA: the before/after p-value is looked at on every tick.
BEFORE_AFTER_ALPHA: Final = 0.0001
# ... but "after" at its full length is looked at once more, at the usual bar of a single
# test: a small harm shows only over all of it (the looks before spent little of the risk).
FINAL_ALPHA: Final = 0.001
PERSIST_ALPHA: Final = 0.01
LATER_HALF_ALPHA: Final = 0.05  # "still up" over the later half of a rise, at the final look
QUIET_BAD_EVENTS: Final = 30  # an hour with fewer failures than this knows its rate poorly
BEFORE_MS: Final = 3_600_000  # "before": the hour before the deploy
LONG_BEFORE_MS: Final = 6 * 3_600_000  # ... or six hours for a service that rarely fails
RECENT_MS: Final = 10 * 60_000  # "still failing": the last ten minutes of "after"
JUDGE_HORIZON_MS: Final = 2 * 3_600_000  # a deploy is judged for two hours after its start
# "After" is at most this long: a delayed rise may need to outlast PERSISTED_MS in it.
BEFORE_AFTER_DECIDE_MS: Final = 90 * 60_000
OVERLAP_MS: Final = 30 * 60_000  # a called service's change this close confounds "after"
MIN_AFTER_MS: Final = 3 * 60_000  # and at least three minutes: blips and incidents show
# ... but one minute when the rise began in the switch's own first minute: an incident or a
# blip that begins in that very minute is a coincidence, and the warm-up is already past.
SWITCH_AFTER_MS: Final = 60_000
# A ramp from the switch must explain "after" this much better (log-likelihood) than the
# best step after it before a rise that is not located at the switch is called its onset:
# positive evidence (a likelihood ratio of 3) for the model with one parameter fewer. It
# decides only whether the rise waits as a late one would; controls still get their look.
RAMP_LLR_MIN: Final = math.log(3)
# When two "after" windows disagree, the more decisive verdict stands (harm over clearance).
JUDGEMENT_RANK: Final = {
    "INCONCLUSIVE": 0, "CLEARED": 1, "AMBIGUOUS": 2, "SUSPECTED": 3, "ATTRIBUTED": 4
}  # fmt: skip
DELAYED_RISE_MS: Final = 2 * 60_000  # a rise this long after the switch is not immediate
SWITCH_MS: Final = 60_000  # a rise located in this first minute began with the switch
CONTROL_POWER_BAD: Final = 3.0  # expected bad events of the controls that would show a rise
# A control "watches" when a shared cause that made it fail as many times more often as the
# SLO now does (at most WATCH_RATIO_CAP times: a shared cause need not hit all alike) would
# have added WATCH_EXCESS_BAD bad events to what it expects since the rise, and it expects
# one at least. An external incident hits some services and not others, so a delayed rise
# is the change's only when many watching controls stayed calm (an incident that hits a
# quarter of the services misses four of them a third of the time) ...
WATCH_EXCESS_BAD: Final = 8.0
WATCH_RATIO_CAP: Final = 10.0
MIN_WATCHING_CONTROLS: Final = 6
# Controls weigh in by likelihood, not only once they watch: an incident hits each with
# probability INCIDENT_REACH; a delayed rise is the change's once the controls' counts are
# at most as likely under such an incident as six calm watching controls would be (0.75 ** 6
# = 0.178, rounded up to 0.18: six busy calm controls weigh that exactly, and must pass);
# weaker controls add up to the same.
INCIDENT_REACH: Final = 0.25
EXTERNAL_BF_MAX: Final = round((1.0 - INCIDENT_REACH) ** MIN_WATCHING_CONTROLS, 2)
# Controls lean towards an incident when their counts are likelier under one (above 1 by
# more than rounding: controls that show nothing weigh 1 each, give or take 1e-16).
EXTERNAL_LEAN_BF: Final = 1.0 + 1e-9
# ... or when it outlasted what an incident that ends by itself mostly lasts (it has gone on
# this long before the last ten minutes, which must still show it) ...
PERSISTED_MS: Final = 30 * 60_000
# ... or when it ended with the change's rollback: the minutes after it fail surely less.
# Looked at from RECOVERY_MS after it on, over up to RECOVERY_MAX_MS: a rarely failing
# service's recovery takes longer to be sure of.
RECOVERY_MS: Final = 5 * 60_000
RECOVERY_MAX_MS: Final = 20 * 60_000
ROLLBACK_TAKES_MS: Final = 60_000
MAX_PHASES: Final = 100  # phases kept per deploy (a rollout has a handful)
# The note of a deploy judged to its last look and left undecided (a suspicion that was
# neither confirmed nor cleared): no decision will come.
JUDGING_ENDED: Final = "judged to its last look: undecided"


class CalleeChange(NamedTuple):
    """A deploy of a service the judged one calls."""

    service: str
    started_ms: int
    verdict: str | None  # its own verdict on the SLO's counterpart, if any
    counts: Counts | None  # its service's counts
    fractions: Sequence[tuple[int, float]] = ()  # its phases (see TrackedDeploy.fractions)
    deploy_id: str = ""

    def doses(self) -> Sequence[tuple[int, float]]:
        """Its rollout fraction over time; at full rollout from its start when unknown."""
        return self.fractions or ((self.started_ms, 1.0),)


CalleeChanges = Callable[[], Sequence[CalleeChange | tuple[str, int, str | None, Counts | None]]]


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
    # (bad, total) in the hour before the deploy, per SLO and per control, kept from the
    # first look: the 10 s buckets they come from expire while the deploy is judged.
    before: dict[str, list[int]] = field(default_factory=dict)
    # (event time, rollout fraction) of each phase, in time order: the change's dose.
    fractions: list[tuple[int, float]] = field(default_factory=list)

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
            "before": self.before,
            "fractions": self.fractions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackedDeploy:
        return cls(
            Deploy(*data["deploy"]),
            data["started_ms"],
            {k: VersionSplitTest.from_list(v) for k, v in data["tests"].items()},
            # (a tick written before the old version's named failures were counted: none)
            {k: [*v, 0][:5] for k, v in data["ticks"].items()},
            dict(data["verdicts"]),
            data.get("ended_ms"),
            dict(data.get("fast_ticks", {})),
            list(data.get("rollback", [])),
            {k: list(v) for k, v in data.get("before", {}).items()},
            [(ts, fraction) for ts, fraction in data.get("fractions", [])],
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
        fraction = {"finished": 1.0, "rolled_back": 0.0}.get(deploy.phase, deploy.rollout_fraction)
        if len(tracked.fractions) < MAX_PHASES:
            bisect.insort(tracked.fractions, (deploy.timestamp_ms, fraction))
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

    def count(
        self,
        service: str,
        version: str | None,
        ts_ms: int,
        slo: str,
        bad: int,
        total: int,
        via: int = 0,
    ) -> None:
        """Count ``total`` events of ``slo`` (``bad`` of them bad, ``via`` of those naming
        a called service) served by ``version`` for the service's active deploy."""
        tracked = self.active(service, ts_ms)
        if tracked is None:
            return
        new = version == tracked.deploy.version
        tick = tracked.ticks.setdefault(slo, [0, 0, 0, 0, 0])
        base = 0 if new else 2
        tick[base] += bad
        tick[base + 1] += total
        if not new:
            tick[4] += via
        self.dirty.add(tracked.deploy.deploy_id)

    def suspected_services(self, clock_ms: int, since_ms: int | None = None) -> set[str]:
        """Services with a deploy under suspicion in the last two hours (not fit to be a
        control: their own change moves their numbers); with ``since_ms``, started then or
        later (one started before a comparison's "before" moved it before that)."""
        return {
            t.deploy.service
            for t in self.deploys.values()
            if clock_ms - t.started_ms <= JUDGE_HORIZON_MS
            and (since_ms is None or t.started_ms >= since_ms)
            and SUSPECT_VERDICTS & set(t.verdicts.values())
        }

    def of_service(self, service: str) -> list[TrackedDeploy]:
        return [self.deploys[d] for d in self.by_service.get(service, [])]

    def latest(self, service: str, ts_ms: int) -> TrackedDeploy | None:
        """The newest deploy of ``service`` started by ``ts_ms``: the one being judged."""
        for deploy_id in reversed(self.by_service.get(service, [])):
            tracked = self.deploys[deploy_id]
            if tracked.started_ms <= ts_ms:
                return tracked
        return None

    def evaluate(
        self,
        service: str,
        slo: str,
        clock_ms: int,
        period_total: int,
        error_budget: float,
        windows: Counts | None = None,
        controls: Callable[[int], Mapping[str, Counts]] | None = None,
        burn_rate_1h: float = 0.0,
        callee_changes: CalleeChanges | None = None,
        callees: Callable[[], Mapping[str, Counts]] | None = None,
    ) -> list[Impact]:
        """Close the SLO's tick for the service's newest deploy; return changed verdicts.

        While both versions serve, the version split judges. A deploy that never splits
        traffic (blue-green, config, a service without version tags), or whose split ended
        undecided at full rollout, is judged before/after: the hour before the deploy
        against what followed, anchored at the deploy, with ``controls`` (asked for only
        then: finding them costs a pass over the partition's SLOs). ``callee_changes``, asked
        for likewise: (service, start, verdict, counts) of the deploys of the services this
        one calls; ``callees``: those services' counts, changed or not (their own failures
        where this service names its callees: a callee's failure on a service it calls does
        not reach this one's own).

        The deploy before the newest one is judged a few minutes more while it is under
        suspicion: a rise that ends when the service changes again points at it.
        """
        # The tick that just closed is [clock - 10 s, clock).
        tracked = self.latest(service, clock_ms - 1)
        if tracked is None:
            return []
        args = (slo, clock_ms, period_total, error_budget, windows, controls, burn_rate_1h,
                callee_changes, callees)  # fmt: skip
        impacts = []
        superseded = self._superseded(service, tracked, slo, clock_ms)
        if superseded is not None:
            impacts.append(self._judge(superseded, *args, stopped_ms=tracked.started_ms))
        impacts.append(self._judge(tracked, *args))
        return [i for i in impacts if i is not None]

    def _superseded(
        self, service: str, newest: TrackedDeploy, slo: str, clock_ms: int
    ) -> TrackedDeploy | None:
        """The deploy ``newest`` replaced, while its recovery may still show: judged at
        each tick while under suspicion; undecided, at its final look alone, when its
        recovery has had the time to show (as a rolled-back change's is)."""
        if clock_ms - newest.started_ms > RECOVERY_MAX_MS + FINE_MS:
            return None
        ids = self.by_service.get(service, [])
        at = ids.index(newest.deploy.deploy_id)
        before = self.deploys[ids[at - 1]] if at > 0 else None
        if before is None:
            return None
        verdict = before.verdicts.get(slo)
        final_look = clock_ms >= newest.started_ms // FINE_MS * FINE_MS + RECOVERY_MAX_MS
        if verdict == "SUSPECTED" or (final_look and verdict in (None, "INCONCLUSIVE")):
            return before
        return None

    def _judge(
        self,
        tracked: TrackedDeploy,
        slo: str,
        clock_ms: int,
        period_total: int,
        error_budget: float,
        windows: Counts | None,
        controls: Callable[[int], Mapping[str, Counts]] | None,
        burn_rate_1h: float,
        callee_changes: CalleeChanges | None,
        callees: Callable[[], Mapping[str, Counts]] | None,
        stopped_ms: int | None = None,
    ) -> Impact | None:
        """One deploy's verdict on one SLO at ``clock_ms`` (see ``evaluate``); ``stopped_ms``:
        when the next change of the service replaced it."""
        tick = tracked.ticks.pop(slo, None)
        if clock_ms - tracked.started_ms > JUDGE_HORIZON_MS:
            return None  # long after the change, other causes dominate: stay as decided
        if tracked.verdicts.get(slo) == "ATTRIBUTED" and slo not in tracked.rollback:
            return self._rollback_check(tracked, slo, clock_ms, period_total, error_budget,
                                        burn_rate_1h)  # fmt: skip
        if tracked.verdicts.get(slo) in FINAL_VERDICTS:
            return None  # an attribution stays; a clearance may yet be overturned by harm
        test = tracked.tests.setdefault(slo, VersionSplitTest())
        if tick:
            bad_new, total_new, bad_old, total_old, via_old = tick
            test.update(bad_new, total_new, bad_old, total_old, clock_ms - tracked.started_ms,
                        via_old)  # fmt: skip
            self.dirty.add(tracked.deploy.deploy_id)
        elapsed_s = max((clock_ms - tracked.started_ms) / 1000, 1.0)
        reference, dispersion = None, 1.0
        if windows is not None and test.total_new and test.total_old:
            # The calm hour before, from the first look at the split: its buckets expire.
            start = tracked.started_ms // FINE_MS * FINE_MS
            reference, dispersion = _calm_before(tracked.before, slo, windows, start)[:2]
        suspected = tracked.verdicts.get(slo) == "SUSPECTED"
        verdict = split_verdict(test, test.bad_events / elapsed_s, reference, dispersion, suspected)
        evidence_extra: dict[str, Any] = {}
        if (
            reference is not None
            and test.bad_events < MIN_BAD_EVENTS
            and verdict.verdict in SUSPECT_VERDICTS
        ):
            evidence_extra = {"pre": list(reference), "note": "few split events: the hour "
                              "before the deploy is the second witness"}  # fmt: skip
        starts = self._before_after_starts(tracked, test)
        if windows is not None and starts and verdict.verdict not in FINAL_VERDICTS:
            start = tracked.started_ms // FINE_MS * FINE_MS
            kept_counts(tracked.before, slo, windows, start - BEFORE_MS, start)
            judgements = []
            changes = [CalleeChange(*c) for c in callee_changes()] if callee_changes else []
            # A called service's change (not cleared) whose harm had already reached this
            # service when it changed: "before" is the level it had brought it to.
            raised = _raised_level(tracked.before, slo, windows, start) is not None
            level_from = max((c.started_ms for c in changes
                              if raised and c.verdict != "CLEARED"
                              and tracked.started_ms - BEFORE_MS <= c.started_ms
                              <= start - LEVEL_MS),
                             default=None)  # fmt: skip
            for post_from in starts:
                confounders = [
                    c for c in changes
                    if (level_from is None or c.started_ms > level_from) and (
                        (c.verdict in SUSPECT_VERDICTS
                         and c.started_ms >= tracked.started_ms - BEFORE_MS)
                        # an overlapping change of a called service, not cleared, confounds
                        # "after" unless that service's own failures cannot explain the rise
                        or (c.verdict != "CLEARED"
                            and c.started_ms >= tracked.started_ms - OVERLAP_MS
                            and self._callee_explains(tracked, slo, windows, c.service, c.counts,
                                                      post_from, c.started_ms, clock_ms)))
                ]  # fmt: skip
                judged, extra = self._before_after(
                    tracked, slo, windows, post_from, clock_ms, confounders,
                    controls or (lambda _: {}),
                    callees or dict, stopped_ms, None if confounders else level_from
                )  # fmt: skip
                judgements.append((judged, extra))
            # The more decisive verdict; of equals, one still being judged over one whose
            # judging has ended.
            judged, extra = max(judgements, key=lambda je: (
                JUDGEMENT_RANK[je[0].verdict], je[1].get("note") != JUDGING_ENDED))  # fmt: skip
            if judged.verdict != "INCONCLUSIVE" or verdict.verdict == "INCONCLUSIVE":
                verdict, evidence_extra = judged, extra  # its evidence, not the split's
        previous = tracked.verdicts.get(slo)
        if previous == verdict.verdict or (previous == "CLEARED" and verdict.verdict not in
                                           SUSPECT_VERDICTS):  # fmt: skip
            return None  # unchanged, or cleared and no sign of harm since
        tracked.verdicts[slo] = verdict.verdict
        self.dirty.add(tracked.deploy.deploy_id)
        impact = self._impact(tracked, slo, test, verdict, clock_ms, period_total, error_budget)
        impact.evidence.update(evidence_extra)
        return impact

    @staticmethod
    def _callee_explains(
        tracked: TrackedDeploy,
        slo: str,
        windows: Counts,
        callee: str,
        counts: Counts | None,
        post_from: int,
        callee_started: int,
        to: int,
    ) -> bool:
        """Could a called service's own failures explain how much the caller's bad rate rose
        since the rise began? Not when the rise began before that service changed, nor when
        it stayed steady with the power to have shown a doubling, nor when it surely fails
        less often than the rise (a call cannot fail the caller more often than it fails
        itself)."""
        own_pre = tracked.before.get(slo) or [0, 0]
        lo = -(-post_from // FINE_MS) * FINE_MS
        own_rise = _rise_from(windows, (own_pre[0], own_pre[1]), lo, to) if to > lo else lo
        if callee_started > own_rise + 60_000:
            return False  # the caller was failing before the callee changed
        if counts is None:
            return True
        start = tracked.started_ms // FINE_MS * FINE_MS
        # Compared over the rise itself: "after" diluted by calm minutes hides its size.
        since = -(-max(own_rise, callee_started, post_from) // FINE_MS) * FINE_MS
        pre = kept_counts(tracked.before, f"callee:{callee}", counts, start - BEFORE_MS, start)
        post = counts.fine_range(since, to)
        if post[1] < 20:
            return True  # too little seen of it (or it is down): it may be the cause
        own_post = windows.fine_range(since, to)
        rise = (own_post[0] / own_post[1] if own_post[1] else 0.0) - (
            own_pre[0] / own_pre[1] if own_pre[1] else 0.0
        )
        if rise > 0 and 1.0 - binomial_upper_tail(post[0] + 1, post[1], min(rise, 1.0)) <= ALPHA:
            return False  # it surely fails less often than the caller's rise needs
        if pre[1] and post[1] * pre[0] / pre[1] >= 5:
            ratio, p = rate_rose(pre, post)
            return ratio >= 1.5 and p <= 0.05
        return True

    @staticmethod
    def _before_after_starts(tracked: TrackedDeploy, test: VersionSplitTest) -> list[int]:
        """Where before/after comparisons' "after" starts; none while the split judges."""
        warmup = _warmup(tracked)
        never_split = test.total_new == 0 or test.total_old == 0
        starts = [tracked.started_ms + warmup] if never_split else []
        ended = tracked.ended_ms
        # Rolled back after it had reached everyone, it is judged as it was when finished:
        # its rollback is evidence too (the harm should end with it).
        reached_everyone = tracked.deploy.phase == "finished" or any(
            fraction >= 1.0 and ts <= (ended or ts) for ts, fraction in tracked.fractions
        )
        if reached_everyone and ended is not None and ended > tracked.started_ms:
            # A progressive rollout reached everyone: judge the full exposure afresh too (a
            # split that ended undecided, or an untagged canary whose 5 % diluted "after");
            # an untagged rollout is still judged from its start, which saw its first harm.
            starts.append(ended + warmup)
            if not never_split:
                starts = starts[-1:]
        return starts

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
    def _before_after(  # noqa: PLR0915 (one judgement, read top-down)
        tracked: TrackedDeploy,
        slo: str,
        windows: Counts,
        post_from_ms: int,
        clock_ms: int,
        confounders: Sequence[CalleeChange],
        find_controls: Callable[[int], Mapping[str, Counts]],
        find_callees: Callable[[], Mapping[str, Counts]],
        stopped_ms: int | None = None,
        level_from: int | None = None,
    ) -> tuple[Verdict, dict[str, Any]]:
        start = tracked.started_ms // FINE_MS * FINE_MS
        post_from = first_post_from = -(-post_from_ms // FINE_MS) * FINE_MS
        post_to = min(clock_ms, post_from + BEFORE_AFTER_DECIDE_MS)
        # When the change stopped serving: its rollback (its own time: ``ended_ms`` is when
        # the split ended, for a change that went to everyone at once its start), or the
        # next change of the service.
        if tracked.deploy.phase == "rolled_back":
            stopped_ms = tracked.deploy.timestamp_ms
        rolled_back = None if stopped_ms is None else stopped_ms // FINE_MS * FINE_MS
        if rolled_back is not None:
            post_to = min(post_to, rolled_back)
        # Judged while "after" grows, and for a stopped change until its recovery shows.
        last_look = post_to if rolled_back is None else rolled_back + RECOVERY_MAX_MS
        if post_to - post_from < SWITCH_AFTER_MS:
            return Verdict("INCONCLUSIVE", 0.0), {}  # too little "after"
        if clock_ms > last_look + FINE_MS:
            # Nothing new: judged to its last look. A suspicion that look left standing is
            # published as undecided once, saying so (not as one with no evidence yet).
            return Verdict("INCONCLUSIVE", 0.0), {"note": JUDGING_ENDED,
                                                  "judging_ended_ms": last_look}  # fmt: skip
        # The final look: "after" at its full length (or at the stopped change's last look),
        # or the last look of all, the judgement's horizon.
        full_length = post_from + BEFORE_AFTER_DECIDE_MS if rolled_back is None else last_look
        horizon = tracked.started_ms + JUDGE_HORIZON_MS - FINE_MS  # its last tick is after it
        final_look = clock_ms >= min(full_length, horizon)
        before = tracked.before
        calm = _calm_before(before, slo, windows, start)
        pre = calm.pre
        level = None if level_from is None else _raised_level(before, slo, windows, start)
        if level is not None:
            # A called service's earlier change had raised this one's rate: the change is
            # measured against where it stood then, and must rise well beyond it.
            pre = level
        elif calm.failing_at_start:
            # Something already failing when the change came (an incident ending): "after"
            # starts once the SLO is back to its calm rate, so it is not blamed on the change.
            calm_from = _calm_again(before, slo, windows, start, clock_ms, pre)
            if calm_from is None:
                return Verdict("INCONCLUSIVE", 0.0), {"note": "failing since before the deploy"}
            post_from = max(post_from, calm_from)
            if post_to - post_from < MIN_AFTER_MS:
                return Verdict("INCONCLUSIVE", 0.0), {}
        # A rate already rising before the deploy was not started by it (an incident that
        # ended before it is left out of both halves): the change is measured against the
        # level it had risen to, the hour's second half, and must rise well beyond it.
        trend, p_trend = rate_rose(calm.early, calm.late)
        rising = trend >= 1.5 and p_trend <= ALPHA and calm.late[0] >= MIN_BAD_EVENTS
        if rising and level is None:
            pre = calm.late
        usual = pre  # what the old version is held against after a split (below)
        if (pre[0] < QUIET_BAD_EVENTS or final_look) and level is None and not rising:
            # A quiet service's hour holds too few failures to know its rate: look further
            # back, in the 5 min buckets that keep the day. Below ten failures they are the
            # reference; below thirty when they agree with the hour, and know its rate six
            # times better. So they are at the final look, however busy the hour: one test,
            # where every tick's test against them would find chance rises of good changes
            # (benched). (The old version's rate during a split is still held against the
            # hour: "something else going on" needs the hour's own evidence.)
            far = _calm_far(before, slo, windows, start)
            if far[1] > pre[1] and pre[0] < MIN_BAD_EVENTS:
                pre = usual = far
            elif far[1] > pre[1] and _agree(pre, far):
                pre = far
        phi = calm.dispersion
        test = tracked.tests.get(slo)
        if test is not None and test.total_new and test.total_old:
            # After a split, the old version while both served is "before" too. When it
            # failed surely more than the hour before, something else was going on meanwhile
            # (the old version cannot have the change's fault): it alone is the reference
            # then. Surely: a few chance failures of a quiet service's old version would
            # otherwise replace the hour with minutes that know its rate far worse.
            old = test.own_old  # as "before" and "after" are: its own failures
            rise, p_rise = rate_rose(usual, old)
            if rise < 1.5 or p_rise > ALPHA or old[0] < MIN_DEGRADED_BAD:
                pre = (pre[0] + old[0], pre[1] + old[1])
            else:
                # Unless that something else ended: once the SLO is calm again and fails
                # surely less than the old version did, "after" starts there and is compared
                # with the hour before, as after an incident going on at a deploy's start.
                ended = _ended_since_split(before, slo, windows, (post_from, post_to), clock_ms,
                                           pre, old, phi)  # fmt: skip
                if ended is None:
                    pre = old
                else:
                    post_from = max(post_from, ended)
                    if post_to - post_from < MIN_AFTER_MS:
                        return Verdict("INCONCLUSIVE", 0.0), {}
        post = windows.fine_range(post_from, post_to)
        # Counts vary more than a binomial's (bursts, traffic mix): test on counts shrunk
        # by the dispersion of the hour before (quasi-binomial), not on the raw ones.
        raw = {"pre": list(pre), "post": list(post), "dispersion": phi}
        pre, post = _shrunk(pre, phi), _shrunk(post, phi)
        ratio, p_harm = rate_rose(pre, post)
        # Persistence: a harmful change is still failing at the end of the window; a blip
        # that happened to follow the deploy is not.
        recent_from = max(post_from, post_to - RECENT_MS)
        recent = _shrunk(windows.fine_range(recent_from, post_to), phi)
        recent_ratio, p_recent = rate_rose(pre, recent)
        evidence = raw | {"method": "before_after", "rate_ratio": ratio, "p_value": p_harm,
                          "recent_rate_ratio": recent_ratio, "post_from_ms": post_from,
                          "post_to_ms": post_to}  # fmt: skip
        # The rise is located from the switch itself: a code change's warm-up errors are
        # its own too. (After an incident going on at the change, from the end of it.)
        switched = post_from - _warmup(tracked)
        at_the_switch = post_from == first_post_from  # not moved past an incident's end
        # Where few events cannot place the rise after the switch, it is the switch's; but
        # at a rollout's finish only if the SLO was not failing already (nor after an
        # incident's end).
        from_the_start = post_from_ms - _warmup(tracked) <= tracked.started_ms
        calm_until_switch = from_the_start or not _failing(windows, pre, switched, phi)
        plausibly_switch = at_the_switch and calm_until_switch
        stepped_at = _rise_from(windows, pre, switched, post_to, plausibly_lo=plausibly_switch)
        # Taken at the switch while its likeliest step is minutes later, the rise may be a
        # burst that followed a chance failure or two: it must outlast the burst (below).
        moved = plausibly_switch and stepped_at == switched  # else it is the likeliest already
        likeliest = _rise_from(windows, pre, switched, post_to) if moved else stepped_at
        placed_early = likeliest - stepped_at >= DELAYED_RISE_MS
        # A gradual onset that began with the switch has its most likely step minutes into
        # the ramp: when a ramp up from the switch explains "after" better than any later
        # step (with one parameter fewer, the simpler account), the rise began there; unless
        # the controls lean towards an incident that began at the step (see below).
        ramps_from_switch = (
            plausibly_switch
            and stepped_at > switched
            and _ramp_llr(windows, pre, switched, post_to, phi) > 0.0
        )
        rose_at = switched if ramps_from_switch else stepped_at
        with_the_switch = at_the_switch and from_the_start and rose_at - switched < SWITCH_MS
        if post_to - post_from < MIN_AFTER_MS and not with_the_switch:
            return Verdict("INCONCLUSIVE", 0.0), {}
        min_ratio = 2.0 if rising or level is not None else 1.5
        if confounders:
            # Called services changed too. Their harm reaches this service as their new
            # versions take traffic, this change's as its own does: the dose-response fit
            # of both tells them apart when their rollouts did not move together. Only a
            # rise that began with this change's own start, after theirs: a called
            # service's harm may grow or begin well after its switch (its fraction does not
            # say when), and a rise at a rollout's finish is where incidents go unseen.
            fit = _dose_fit(tracked, windows, pre, confounders, start, post_to, phi)
            evidence["dose_response"] = fit
            separated = (
                fit["p_value"] <= BEFORE_AFTER_ALPHA
                and fit["rate_ratio"] >= min_ratio
                and at_the_switch
                and from_the_start
                and rose_at - switched < DELAYED_RISE_MS
                and all(c.started_ms < tracked.started_ms for c in confounders)
            )
            if not separated:
                evidence["note"] = "a called service changed too"
                # The rise came with this change, and this change and the called ones
                # together surely explain it, but not one of them alone (their rollouts
                # moved together): ambiguous among them, none blamed. Unless one of those
                # is attributed the harm on its own service: that explains it here too.
                inseparable = [c for c, f in zip(confounders, fit["called"], strict=True)
                               if f["p_value"] > BEFORE_AFTER_ALPHA]  # fmt: skip
                together = [c.deploy_id for c in inseparable]
                ambiguous = (
                    together
                    and all(c.verdict != "ATTRIBUTED" for c in inseparable)
                    and fit["p_value"] > BEFORE_AFTER_ALPHA
                    and fit["joint_p_value"] <= BEFORE_AFTER_ALPHA
                    and post[0] >= MIN_BAD_EVENTS
                    and ratio >= min_ratio
                    and at_the_switch
                    and rose_at - switched < DELAYED_RISE_MS
                )
                if ambiguous:
                    return Verdict("AMBIGUOUS", 0.5), evidence | {"ambiguous_with": together}
                return Verdict("INCONCLUSIVE", 0.0), evidence
        if level is not None:
            evidence["note"] = "a called service changed before: compared with where it stood"
            evidence["level_from_ms"] = level_from
        elif rising:
            evidence["note"] = "rising before the deploy: compared with its last half hour"
        # Difference in differences: the services around (not callers, not callees, no
        # change of their own) show what happened anyway: over all of "after", lately, and
        # since this SLO's own rise began (an incident that starts minutes after the
        # change is seen there, undiluted).
        # Not those with a change of their own since the hour before this one began: that
        # moved their numbers; an older one had moved them before it (they are compared
        # with that hour).
        controls = find_controls(start - BEFORE_MS)
        # Their usual rates too: an incident or a change of theirs in the hour before would
        # set a bar that the incident now hitting them all does not clear.
        pres = {key: _calm_before(before, f"control:{key}", other, start).pre
                for key, other in controls.items()}  # fmt: skip
        leaned_away = False  # a ramp from the switch set aside for the controls' incident
        if ramps_from_switch:
            # A ramp that explains "after" only a little better than a step is a coin toss:
            # it stands while the controls since the step do not lean towards an incident.
            step_from = max(stepped_at, post_from)
            step_rise = rate_rose(pre, _shrunk(windows.fine_range(step_from, post_to), phi))[0]
            since_step = {key: other.fine_range(step_from, post_to)
                          for key, other in controls.items()}  # fmt: skip
            if _external_bayes_factor(pres, since_step, step_rise) > EXTERNAL_LEAN_BF:
                ramps_from_switch, rose_at, leaned_away = False, stepped_at, True
                if post_to - post_from < MIN_AFTER_MS:
                    return Verdict("INCONCLUSIVE", 0.0), {}
        rise_from = max(rose_at, post_from)
        afters = {lo: {key: other.fine_range(lo, post_to) for key, other in controls.items()}
                  for lo in sorted({post_from, recent_from, rise_from})}  # fmt: skip
        shifts = [
            control_shift(((pres[key], after[key]) for key in controls), min_ratio=2.0)
            for after in afters.values()
        ]
        # A called service failing since this one's rise began: its failures are this
        # service's too, or both share a cause; either way not this change's doing (the
        # called services' own changes are weighed as confounders above). Only since the
        # rise: a callee's incident earlier in "after" explains nothing that came later.
        callees = find_callees()
        callee_shifts = _callee_shifts(before, callees, start, rise_from, post_to)
        shared = [s for s in [*shifts, *callee_shifts] if s.shared]
        factor = max((s.factor for s in shared), default=1.0)
        watched = _control_power(pres, afters[rise_from])
        seen_by_controls: dict[str, Any] = {"usable": shifts[0].usable,
                                            "degraded": max(s.degraded for s in shifts),
                                            "rise": factor, "rise_from_ms": rise_from,
                                            "expected_bad_since_rise": watched,
                                            "callees_degraded": max(
                                                (s.degraded for s in callee_shifts), default=0
                                            )}  # fmt: skip
        evidence["controls"] = seen_by_controls
        calm_from = None
        if any(s.shared for s in shifts) and (rose_at - switched < DELAYED_RISE_MS or leaned_away):
            # A rise that began with the change (at the switch, or ramping up from it) and
            # went on after the controls were calm again (an incident around it that ended)
            # is judged from then on its own; called services failing with it since then
            # still share it.
            calm_from = _controls_calm_from(pres, controls, post_from, post_to, afters, shifts)
        elif any(s.shared for s in shifts) and not any(
            s.shared for lo, s in zip(afters, shifts, strict=True) if lo >= rise_from
        ):
            # A rise placed minutes after the switch, once the controls were calm again:
            # what moved them ended before it began and explains none of it (the rise's
            # own tests below still see the controls since it).
            settled = _controls_calm_from(pres, controls, post_from, post_to, afters, shifts)
            if settled is not None and settled <= rise_from:
                shared = [s for s in callee_shifts if s.shared]
                factor = max((s.factor for s in shared), default=1.0)
                seen_by_controls |= {"rise": factor, "calm_from_ms": settled}
        if calm_from is not None:
            since_calm = windows.fine_range(calm_from, post_to)
            # Unless the SLO fell when they recovered: it shared what moved them then.
            if not _fell(windows.fine_range(post_from, calm_from), since_calm):
                if leaned_away:
                    # The incident that made the ramp a coin toss is over: it stands.
                    ramps_from_switch, rose_at = True, switched
                    rise_from = max(rose_at, post_from)
                post = _shrunk(since_calm, phi)
                ratio, p_harm = rate_rose(pre, post)
                callee_shifts = _callee_shifts(before, callees, start, calm_from, post_to)
                shared = [s for s in callee_shifts if s.shared]
                factor = max((s.factor for s in shared), default=1.0)
                seen_by_controls |= {"calm_from_ms": calm_from, "callees_degraded": max(
                    (s.degraded for s in callee_shifts), default=0)}  # fmt: skip
                evidence |= {"post": list(since_calm), "rate_ratio": ratio, "p_value": p_harm,
                             "post_from_ms": calm_from,
                             "note": "judged from when the controls were calm again"}  # fmt: skip
        if shared:
            # Something else moved too: only a rise well beyond theirs is this change's.
            ratio, p_harm = rate_rose(pre, post, factor)
            recent_ratio, p_recent = rate_rose(pre, recent, factor)
            ratio, recent_ratio, min_ratio = ratio / factor, recent_ratio / factor, 2.0
            evidence |= {"adjusted_rate_ratio": ratio, "adjusted_p_value": p_harm}
        alpha = FINAL_ALPHA if final_look else BEFORE_AFTER_ALPHA
        harmful = post[0] >= MIN_BAD_EVENTS and p_harm <= alpha and ratio >= min_ratio
        harmful_since_rise = risen_since = False
        if rise_from - post_from >= DELAYED_RISE_MS:
            # A rise minutes into "after" (a delayed onset) is diluted by the calm minutes
            # before it: it is also tested on its own, with as many chances as the minutes
            # it could have begun at (its start is where it fits best). Whether it is the
            # change's or an incident's, a burst's, is for the delayed rise's checks below;
            # not while the controls moved too: a rise they share is theirs, and a suspicion
            # would take this service out of the other services' controls.
            since = _shrunk(windows.fine_range(rise_from, post_to), phi)
            since_ratio, p_since = rate_rose(pre, since, factor)
            since_ratio /= factor
            p_since = min(1.0, p_since * max(1, (post_to - post_from) // 60_000))
            risen_since = (since[0] >= MIN_BAD_EVENTS and since_ratio >= min_ratio
                           and p_since <= PERSIST_ALPHA)  # fmt: skip
            evidence |= {"since_rise_rate_ratio": since_ratio, "since_rise_p_value": p_since}
            if not harmful and risen_since and p_since <= alpha and not shared:
                harmful = harmful_since_rise = True
                ratio, p_harm = since_ratio, p_since
        if not harmful and with_the_switch and switched < post_from:
            # A rise located in the switch's own first minute and still there past the
            # warm-up, on its own evidence, is not a warm-up's passing errors: the warm-up's
            # failures are the change's too, and "after" counts them.
            whole = _shrunk(windows.fine_range(switched, post_to), phi)
            whole_ratio, p_whole = rate_rose(pre, whole, factor)
            whole_ratio /= factor
            past_warmup = post[0] >= MIN_DEGRADED_BAD and p_harm <= PERSIST_ALPHA
            if (past_warmup and ratio >= min_ratio and whole[0] >= MIN_BAD_EVENTS
                    and p_whole <= BEFORE_AFTER_ALPHA and whole_ratio >= min_ratio):  # fmt: skip
                harmful, p_harm = True, p_whole
                evidence |= {"with_warmup_rate_ratio": whole_ratio,
                             "with_warmup_p_value": p_whole}  # fmt: skip
        # A rise that ramps up from the switch (a gradual onset) has its most likely step
        # minutes later, but the minutes before that step already fail more than before.
        early = _shrunk(windows.fine_range(switched, rose_at), phi)
        early_ratio, p_early = rate_rose(pre, early)
        ramping = early[0] >= MIN_DEGRADED_BAD and early_ratio >= 1.5 and p_early <= ALPHA
        delayed = harmful_since_rise or (rose_at - switched >= DELAYED_RISE_MS and not ramping)
        if harmful and delayed and not harmful_since_rise:
            # Its most likely step is minutes after the switch, but a ramp from the switch
            # itself may explain the minutes far better: a gradual onset, not an incident.
            ramp_llr = _ramp_llr(windows, pre, switched, post_to, phi)
            evidence["ramp_llr"] = round(ramp_llr, 2)
            ramping = ramp_llr >= RAMP_LLR_MIN
            delayed = not ramping
        ramping = not harmful_since_rise and (ramping or ramps_from_switch)
        evidence["onset"] = "ramp" if ramping else "delayed" if delayed else "at the switch"
        # "After" starts past a code change's warm-up: an immediate rise is seen only from
        # then, and controls must have had the chance to show it too; unless the rise is
        # located in the switch's own first minute (an incident that begins in that very
        # minute is a coincidence; one that begins during the warm-up is not ruled out;
        # nor is one in the first minute after another incident ended).
        late_view = rise_from - switched >= DELAYED_RISE_MS and (
            rose_at - switched >= SWITCH_MS or not at_the_switch
        )
        if harmful and not delayed and late_view and watched < CONTROL_POWER_BAD:
            return Verdict("SUSPECTED", 0.5), evidence | {"note": "waiting for controls"}
        if harmful and delayed:
            # A rise that began minutes after the switch is the change's (a delayed onset) or
            # an incident that hit services around it: see MIN_WATCHING_CONTROLS.
            since_rise = _shrunk(windows.fine_range(rise_from, post_to), phi)
            own_rise = rate_rose(pre, since_rise)[0]
            watching = _watching_controls(pres, afters[rise_from], own_rise)
            # Lasted: elevated all along, not just a fluke of a few events lately.
            middle = _shrunk(windows.fine_range(rise_from, recent_from), phi)
            middle_ratio, p_middle = rate_rose(pre, middle, factor)
            lasted = (
                recent_from - rise_from >= PERSISTED_MS
                and recent[0] >= MIN_DEGRADED_BAD
                and middle_ratio / factor >= min_ratio
                and p_middle <= PERSIST_ALPHA
            )
            recovered = rolled_back is not None and _recovered_at_rollback(
                windows, pre, rise_from, rolled_back, clock_ms, phi
            )
            external_bf = _external_bayes_factor(pres, afters[rise_from], own_rise)
            seen_by_controls |= {"watching": watching, "external_bayes_factor": external_bf}
            # A rise sure only on its own minutes (where it fits best) may be a blip that
            # chance placed well: it must have lasted, or ended with the change, whatever
            # the controls say.
            if (external_bf > EXTERNAL_BF_MAX or harmful_since_rise) and not (lasted or recovered):
                note = "waiting for controls, for the rise to last, or for a rollback"
                return Verdict("SUSPECTED", 0.5), evidence | {"note": note}
            if recovered:
                evidence["recovered_at_rollback"] = True
        if harmful and (delayed or (placed_early and not ramping)):
            # A rise that began after the switch may be a burst of a few minutes that happened
            # to follow it: the change's own harm outlasts its worst few minutes. So may a rise
            # placed at the switch while its likeliest start is minutes later (not a ramp).
            rest = _beyond_burst(windows, rise_from, post_to, phi)
            rest_ratio, p_rest = rate_rose(pre, rest, factor)
            rest_ratio /= factor
            evidence |= {"beyond_burst_rate_ratio": rest_ratio, "beyond_burst_p_value": p_rest}
            if rest_ratio < min_ratio or p_rest > PERSIST_ALPHA:
                return Verdict("SUSPECTED", 0.5), evidence | {"note": "a burst so far"}
        persisted = recent_ratio >= min_ratio and p_recent <= PERSIST_ALPHA
        if harmful and final_look and not persisted:
            # A small harm is seldom sure over the last ten minutes alone: at the final look
            # it has persisted when the later half of the rise, without its bursts, is still
            # risen (a change's harm lasts until it is undone; an incident's ends).
            later_from = (rise_from + post_to) // 2 // FINE_MS * FINE_MS
            later = _beyond_burst(windows, later_from, post_to, phi)
            later_ratio, p_later = rate_rose(pre, later, factor)
            persisted = later_ratio / factor >= min_ratio and p_later <= PERSIST_ALPHA
            if not persisted and later[0] >= MIN_BAD_EVENTS and p_later <= LATER_HALF_ALPHA:
                # Half the minutes seldom show a harm near the bar at its full size: still
                # surely up, and not fallen from the rise's first half, it lasted (an
                # incident's or a blip's end would show as a fall).
                earlier = _shrunk(windows.fine_range(rise_from, later_from), phi)
                persisted = not _fell(earlier, later)
            evidence |= {"final_look": True, "later_half_rate_ratio": later_ratio / factor,
                         "later_half_p_value": p_later}  # fmt: skip
        if harmful and persisted:
            odds = CHANGE_PRIOR / (1 - CHANGE_PRIOR) * bayes_factor_bound(p_harm)
            posterior = odds / (1 + odds)
            if posterior >= 0.9:
                return Verdict("ATTRIBUTED", posterior), evidence
        if shared:
            return Verdict("INCONCLUSIVE", 0.0), evidence | {"note": "controls degraded too"}
        rolled_out = tracked.deploy.phase == "finished" or tracked.deploy.rollout_fraction >= 1
        full_from = max(post_from, tracked.ended_ms or post_from)
        # No harm of 1.5x or more: too few bad events after for that rate (not while a rise
        # minutes into "after" is clear on its own: it is diluted there).
        if (rolled_out and post_to - full_from >= BEFORE_AFTER_CLEAR_MS and pre[1] and post[1]
                and not risen_since):  # fmt: skip
            share = 1.5 * post[1] / (pre[1] + 1.5 * post[1])
            p_low = 1.0 - binomial_upper_tail(post[0] + 1, pre[0] + post[0], share)
            if p_low <= ALPHA:
                return Verdict("CLEARED", 1 - p_low), evidence | {"p_value_clear": p_low}
        if harmful:
            return Verdict("SUSPECTED", 0.5), evidence | {"note": "not persistent yet"}
        if (tracked.verdicts.get(slo) == "SUSPECTED"
                and ((post[0] >= MIN_BAD_EVENTS and p_harm <= PERSIST_ALPHA
                      and ratio >= min_ratio and recent_ratio >= min_ratio)
                     or (risen_since and (recent_ratio >= min_ratio or rise_from >= recent_from)))
                ):  # fmt: skip
            # Once suspected, a rise still clear at the persistence bar, and still there
            # lately, stays suspected: a p-value wavering about 10^-4 would otherwise publish
            # a change per bad event.
            return Verdict("SUSPECTED", 0.5), evidence | {"note": "suspected, still risen"}
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


DISPERSION_CHUNK_MS: Final = 5 * 60_000
CALM_SPAN_MS: Final = 5 * 60_000


def kept_counts(
    store: dict[str, list[int]],
    key: str,
    counts: Counts,
    lo: int,
    hi: int,
    res_ms: int = FINE_MS,
) -> tuple[int, int]:
    """(bad, total) of ``counts`` in [lo, hi), kept in ``store`` under ``key`` from the first
    look: the 10 s buckets they come from expire while a deploy or episode is judged."""
    if key not in store:
        store[key] = list(counts.range(res_ms, lo, hi))
    bad, total = store[key][0], store[key][1]
    return bad, total


class CalmBefore(NamedTuple):
    """The hour before a deploy, without the incidents in it."""

    pre: tuple[int, int]  # (bad, total) of its calm chunks
    dispersion: float  # Pearson dispersion (>= 1) of the calm chunks, the worst left out
    failing_at_start: bool  # the last chunk before the deploy failed well above the calm rate
    early: tuple[int, int]  # calm chunks of its first half
    late: tuple[int, int]  # ... and of its second half


def _calm_before(before: dict[str, list[int]], slo: str, windows: Counts, start: int) -> CalmBefore:
    """The hour before ``start`` in 5 min chunks, where runs of two or more chunks failing
    well above the others (an incident of ten minutes or more) are left out: the rate the
    change is measured against is the service's usual one. Single high chunks (blips) stay,
    as they are part of the everyday noise. Kept in ``before`` from the first look."""
    key = f"calm:{slo}"
    if key not in before:
        chunks = [windows.fine_range(lo, lo + DISPERSION_CHUNK_MS)
                  for lo in range(start - BEFORE_MS, start, DISPERSION_CHUNK_MS)]  # fmt: skip
        high = _high_chunks(chunks)
        in_runs = _incident_chunks(chunks, high)
        calm = [c if i not in in_runs else (0, 0) for i, c in enumerate(chunks)]
        half = len(chunks) // 2
        early, late = _summed_counts(calm[:half]), _summed_counts(calm[half:])
        pre = (early[0] + late[0], early[1] + late[1])
        rate = pre[0] / pre[1] if pre[1] else 0.0
        terms = sorted((b - rate * t) ** 2 / (rate * t) for b, t in calm if t and rate * t > 0)
        # Without the worst chunk: one blip in the hour is not the everyday noise.
        phi = sum(terms[:-1]) / (len(terms) - 2) if len(terms) > 3 else 1.0
        failing = bool(chunks) and len(chunks) - 1 in high
        before[key] = [*pre, round(1000 * max(phi, 1.0)), int(failing), *early, *late]
    v = before[key]
    return CalmBefore((v[0], v[1]), v[2] / 1000, bool(v[3]), (v[4], v[5]), (v[6], v[7]))


def _agree(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two (bad, total) counts may share one rate: neither rose over the other
    at p <= 0.05."""
    return rate_rose(a, b)[1] > 0.05 and rate_rose(b, a)[1] > 0.05


def _calm_far(
    before: dict[str, list[int]], slo: str, windows: Counts, start: int
) -> tuple[int, int]:
    """(bad, total) of the ``LONG_BEFORE_MS`` before ``start``, in the 5 min buckets that
    keep the day, without the incidents in them (see ``_incident_chunks``): hours
    before, an incident or a called service's bad change may have filled several of them.
    Kept in ``before`` from the first look."""
    key = f"long:{slo}"
    if key not in before:
        lo = start // MEDIUM_MS * MEDIUM_MS
        chunks = [windows.range(MEDIUM_MS, t, t + MEDIUM_MS)
                  for t in range(lo - LONG_BEFORE_MS, lo, MEDIUM_MS)]  # fmt: skip
        out = _incident_chunks(chunks, _high_chunks(chunks))
        before[key] = list(_summed_counts([c for i, c in enumerate(chunks) if i not in out]))
    return before[key][0], before[key][1]


def _incident_chunks(chunks: Sequence[tuple[int, int]], high: set[int]) -> set[int]:
    """The chunks of incidents: runs of two or more ``high`` chunks (failing well above the
    others, an incident of ten minutes or more) or of chunks that do so together (see
    ``_pooled_runs``), and the chunks on either side of a run when they fail above the
    usual rate even loosely: an incident rarely starts or ends on a chunk's edge, so they
    hold its first or last minutes."""
    runs = {i for i in high if i - 1 in high or i + 1 in high} | _pooled_runs(chunks)
    edges = {i + d for i in runs for d in (-1, 1)} - runs
    return runs | (edges & _high_chunks(chunks, p_max=0.05, min_bad=2))


def _pooled_runs(chunks: Sequence[tuple[int, int]]) -> set[int]:
    """Where most chunks saw no failure (a quiet service), the chunks of runs that hold
    surely more than their share of the failures (see ``_holds_more``), and still more
    than their share without their worst chunk: a quiet service's incident spreads over
    chunks with too few failures each to stand out alone, while one blip beside calm
    chunks is no run. Runs of two chunks up to half of them, the likeliest first, then
    the likeliest among the rest, and so on. A busy service's incident shows chunk by
    chunk (``_high_chunks``); its chunks pooled would hold its everyday overdispersion
    against it instead."""
    n = len(chunks)
    if n < 4 or sorted(b for b, _ in chunks)[n // 2] > 0:
        return set()
    bads, totals = [0], [0]  # prefix sums: a run's counts in two subtractions
    for b, t in chunks:
        bads.append(bads[-1] + b)
        totals.append(totals[-1] + t)
    found: set[int] = set()
    left = (bads[-1], totals[-1])  # the chunks not found yet
    while True:
        best, best_llr = None, 0.0
        for lo in range(n - 1):
            if lo in found:
                continue
            for hi in range(lo + 2, min(lo + n // 2, n) + 1):
                if hi - 1 in found:
                    break
                span = (bads[hi] - bads[lo], totals[hi] - totals[lo])
                if span[0] < MIN_DEGRADED_BAD:
                    continue
                out = (left[0] - span[0], left[1] - span[1])
                llr = _holds_more(span, out, MIN_DEGRADED_BAD, 0.001)
                if llr > best_llr:
                    worst = max(chunks[lo:hi], key=lambda c: c[0] / max(c[1], 1))
                    if _holds_more((span[0] - worst[0], span[1] - worst[1]), out, 2, 0.05):
                        best, best_llr = range(lo, hi), llr
        if best is None:
            return found
        found.update(best)
        left = (
            left[0] - bads[best.stop] + bads[best.start],
            left[1] - totals[best.stop] + totals[best.start],
        )


def _holds_more(span: tuple[int, int], out: tuple[int, int], min_bad: int, p_max: float) -> float:
    """How much likelier (log-likelihood ratio) a run's (bad, total) ``span`` fails at its
    own rate than at that of it and ``out`` together, when it surely holds more of their
    failures than its share of the traffic (p <= ``p_max`` given how many there were,
    ``min_bad`` at least), at twice ``out``'s rate or more; else 0."""
    (bad, total), (out_bad, out_total) = span, out
    if bad < min_bad or not total or not out_total:
        return 0.0
    if bad / total < 2 * max(out_bad, 1) / out_total:
        return 0.0
    if binomial_upper_tail(bad, bad + out_bad, total / (total + out_total)) > p_max:
        return 0.0
    overall = (bad + out_bad) / (total + out_total)
    llr = bad * math.log(bad / total / overall)
    return llr + (out_bad * math.log(out_bad / out_total / overall) if out_bad else 0.0)


LEVEL_MS: Final = 5 * 60_000  # where a called service's change had brought this one


def _raised_level(
    before: dict[str, list[int]], slo: str, windows: Counts, start: int
) -> tuple[int, int] | None:
    """(bad, total) of the SLO in the ``LEVEL_MS`` before ``start`` (this change) when they
    fail well above its calm hour. After a called service's change at least that long
    before, that harm was here already, so only a rise well beyond it is this change's.
    The latest minutes, not all since that change: its harm may still have been growing.
    None when the SLO had not risen: a callee's change may be what shows now."""
    level = kept_counts(before, f"level:{slo}", windows, start - LEVEL_MS, start)
    ratio, p = rate_rose(_calm_before(before, slo, windows, start).pre, level)
    return level if ratio >= 1.5 and p <= ALPHA and level[0] >= MIN_BAD_EVENTS else None


def _summed_counts(counts: Sequence[tuple[int, int]]) -> tuple[int, int]:
    return sum(b for b, _ in counts), sum(t for _, t in counts)


def _high_chunks(
    chunks: Sequence[tuple[int, int]], p_max: float = 0.001, min_bad: int = 5
) -> set[int]:
    """Chunks failing 1.5 times the usual rate or more (p <= ``p_max``, at least ``min_bad``
    bad events).
    The usual rate is that of the calmer half of the chunks: an incident that fills half
    the hour would otherwise set the bar it is measured against."""
    seen = sorted((b / t, b, t) for b, t in chunks if t)
    calmer = seen[: max(len(seen) // 2, 1)]
    bad, total = sum(b for _, b, _ in calmer), sum(t for _, _, t in calmer)
    if not total:
        return set()
    limit = min(1.5 * max(bad, 1) / total, 1.0)
    return {i for i, (b, t) in enumerate(chunks)
            if t and b >= min_bad and binomial_upper_tail(b, t, limit) <= p_max}  # fmt: skip


def _calm_again(
    before: dict[str, list[int]],
    slo: str,
    windows: Counts,
    start: int,
    clock_ms: int,
    pre: tuple[int, int],
    key: str = "calm_again",
) -> int | None:
    """When an SLO failing at the deploy's start is back to its calm rate: once five minutes
    (pooled: a quiet service's single minutes cannot show an incident) do not fail
    significantly above twice that rate, the end of the failing run since the start (None
    while it goes on, or if it lasts the hour)."""
    key = f"{key}:{slo}"
    if key in before:
        return before[key][0]
    limit = min(2 * max(pre[0], 1) / max(pre[1], 1), 1.0)
    for minute in range(60):
        lo = start + minute * 60_000
        if lo + CALM_SPAN_MS > clock_ms:
            return None
        bad, total = windows.fine_range(lo, lo + CALM_SPAN_MS)
        if bad < 2 or binomial_upper_tail(bad, total, limit) > ALPHA:
            # Calm by then; where in these minutes it ended: the failing run's change-point.
            steps = [windows.fine_range(t, t + 60_000) for t in range(start, lo + CALM_SPAN_MS,
                                                                   60_000)]  # fmt: skip
            base = pre[0] / pre[1] if pre[1] else 0.0
            found = start + 60_000 * (len(steps) - rise_start(steps[::-1], base))
            before[key] = [found, 0]
            return found
    return None


def _ended_since_split(
    before: dict[str, list[int]],
    slo: str,
    windows: Counts,
    after: tuple[int, int],
    clock_ms: int,
    pre: tuple[int, int],
    old: tuple[int, int],
    phi: float,
) -> int | None:
    """When what made the old version fail during a split (more than the hour ``pre``)
    had ended: the SLO calm again from the split's end (``after``'s start, see
    ``_calm_again``), and failing since then (to ``after``'s end) surely less than the old
    version did (half its rate or less, p <= 0.01: a lasting cause, such as a called
    service's new level, does not end). None while it lasts."""
    calm_from = _calm_again(before, slo, windows, after[0], clock_ms, pre, "split_calm")
    if calm_from is None:
        return None
    since = _shrunk(windows.fine_range(calm_from, after[1]), phi)
    drop, p_drop = rate_rose(since, _shrunk(old, phi))
    return calm_from if drop >= 2.0 and p_drop <= PERSIST_ALPHA else None


def _controls_calm_from(
    pres: Mapping[str, tuple[int, int]],
    controls: Mapping[str, Counts],
    lo: int,
    hi: int,
    afters: Mapping[int, Mapping[str, tuple[int, int]]],
    shifts: Sequence[ControlShift],
) -> int | None:
    """The first 5 min mark in [lo, hi - ``RECENT_MS``] from which the controls, able to
    show a rise (``CONTROL_POWER_BAD``), no longer moved, neither up to ``hi`` nor in its
    first five minutes (where the end of what moved them would be diluted): it was over by
    then. None when they still moved lately (``afters``' and ``shifts``' windows from that
    mark on), or could not have shown it."""
    moved_from = [start for start, shift in zip(afters, shifts, strict=True) if shift.shared]
    for mark in range(lo, hi - RECENT_MS + 1, CALM_SPAN_MS):
        if any(start >= mark for start in moved_from):
            continue
        since = {key: other.fine_range(mark, hi) for key, other in controls.items()}
        if _control_power(pres, since) < CONTROL_POWER_BAD:
            return None
        first = {
            key: other.fine_range(mark, mark + CALM_SPAN_MS) for key, other in controls.items()
        }
        if not any(
            control_shift(((pres[key], span[key]) for key in controls), min_ratio=2.0).shared
            for span in (since, first)
        ):
            return mark
    return None


def _callee_shifts(
    before: dict[str, list[int]], callees: Mapping[str, Counts], start: int, lo: int, hi: int
) -> list[ControlShift]:
    """How the called services moved in [lo, hi) from their calm hour before ``start``
    (none when there are no callees)."""
    if not callees:
        return []
    pairs = ((_calm_before(before, f"callee:{key}", other, start).pre, other.fine_range(lo, hi))
             for key, other in callees.items())  # fmt: skip
    return [control_shift(pairs, min_ratio=2.0)]


def _fell(earlier: tuple[int, int], later: tuple[int, int]) -> bool:
    """Whether the bad rate fell from ``earlier`` to ``later`` (loosely, 1.5x at p <= 0.05:
    when in doubt, it did)."""
    drop, p = rate_rose(later, earlier)
    return drop >= 1.5 and p <= 0.05


def _warmup(tracked: TrackedDeploy) -> int:
    """How long after the switch "after" starts: code warms up, config takes effect at once."""
    return 0 if tracked.deploy.change_type in ("config", "flag") else BEFORE_AFTER_WARMUP_MS


def _control_power(
    pres: Mapping[str, tuple[int, int]], since_rise: Mapping[str, tuple[int, int]]
) -> float:
    """Bad events the controls would have had since the rise at their own "before" rates,
    all but the one contributing most (one busy control alone says little about a shared
    cause): how well they could show an incident that began then."""
    expected = sorted(
        pre[0] / pre[1] * since_rise[key][1] for key, pre in pres.items() if pre[1] >= 100
    )
    return sum(expected[:-1])


def _watching_controls(
    pres: Mapping[str, tuple[int, int]], since_rise: Mapping[str, tuple[int, int]], rise: float
) -> int:
    """Controls that would have shown a shared cause that hit them as hard as the SLO was
    hit, since its rise (see ``WATCH_EXCESS_BAD``)."""
    extra = min(rise, WATCH_RATIO_CAP) - 1.0
    watching = 0
    for key, pre in pres.items():
        expected = pre[0] / pre[1] * since_rise[key][1] if pre[1] >= 100 else 0.0
        watching += expected >= 1.0 and expected * extra >= WATCH_EXCESS_BAD
    return watching


def _external_bayes_factor(
    pres: Mapping[str, tuple[int, int]], since_rise: Mapping[str, tuple[int, int]], rise: float
) -> float:
    """How much likelier the controls' bad counts since the rise are if an incident caused
    it than if the change did. An incident hits each control with probability
    ``INCIDENT_REACH``, as many times more often as the SLO now fails (at most
    ``WATCH_RATIO_CAP``); the change leaves them at their own "before" rates (Poisson
    counts). A control too quiet to show the incident weighs ~1; a calm one that would
    have shown it weighs 1 - ``INCIDENT_REACH``; one that rose weighs more than 1."""
    mult = min(rise, WATCH_RATIO_CAP)
    if mult <= 1.0:
        return 1.0
    log_bf = 0.0
    for key, pre in pres.items():
        if pre[1] < 100:
            continue
        expected = pre[0] / pre[1] * since_rise[key][1]
        # log P(k | hit) / P(k | spared), Poisson counts
        x = since_rise[key][0] * math.log(mult) - expected * (mult - 1.0)
        hit = math.log(INCIDENT_REACH) + x
        spared = math.log(1.0 - INCIDENT_REACH)
        log_bf += log_add(hit, spared)
    return math.exp(min(log_bf, 700.0))


def _recovered_at_rollback(
    windows: Counts,
    pre: tuple[int, int],
    rise_from: int,
    rolled_back: int,
    clock_ms: int,
    phi: float,
) -> bool:
    """Did the rise end with the rollback? The minutes after it (once it took effect, and
    from ``RECOVERY_MS`` on) fail surely less than the rise did, and not surely more than
    before the change: an incident that happened to end just then is a coincidence this
    test accepts."""
    lo, hi = rolled_back + ROLLBACK_TAKES_MS, min(clock_ms, rolled_back + RECOVERY_MAX_MS)
    if clock_ms < rolled_back + RECOVERY_MS or rise_from >= rolled_back:
        return False
    during = _shrunk(windows.fine_range(rise_from, rolled_back), phi)
    after = _shrunk(windows.fine_range(lo, hi), phi)
    drop, p_drop = rate_rose(after, during)
    back, p_back = rate_rose(pre, after)
    return drop >= 2.0 and p_drop <= PERSIST_ALPHA and not (back >= 1.5 and p_back <= 0.05)


def _dose_fit(
    tracked: TrackedDeploy,
    windows: Counts,
    pre: tuple[int, int],
    confounders: Sequence[CalleeChange],
    start: int,
    to: int,
    phi: float,
) -> dict[str, Any]:
    """The dose-response fit of the SLO's minutes, from the first of the changes (at most
    ``BEFORE_MS`` before this one) to ``to``, on this change's rollout fraction and the
    called services' (see ``dose_response``), at ``pre``'s usual rate."""
    first = min([start, *(c.doses()[0][0] for c in confounders)])
    lo = start - 60_000 * min(-(-(start - first) // 60_000), BEFORE_MS // 60_000)
    minutes = range(lo, to, 60_000)
    steps = [_shrunk(windows.fine_range(t, min(t + 60_000, to)), phi) for t in minutes]
    own = tracked.fractions or [(tracked.started_ms, tracked.deploy.rollout_fraction)]
    doses = {"change": [fraction_at(own, t + 30_000) for t in minutes]}
    for i, c in enumerate(confounders):
        doses[str(i)] = [fraction_at(c.doses(), t + 30_000) for t in minutes]
    fit = dose_response(steps, doses, pre[0] / pre[1] if pre[1] else 0.0)
    called = [{"deploy_id": c.deploy_id, "service": c.service, "rate_ratio": fit.ratios[str(i)],
               "p_value": fit.p_values[str(i)]} for i, c in enumerate(confounders)]  # fmt: skip
    return {
        "rate_ratio": fit.ratios["change"],
        "p_value": fit.p_values["change"],
        "called": called,
        "joint_p_value": fit.joint_p_value,
        "from_ms": lo,
    }


def _failing(windows: Counts, pre: tuple[int, int], to: int, phi: float) -> bool:
    """Whether the SLO failed above ``pre``'s rate (counts already shrunk by ``phi``) in the
    ``LEVEL_MS`` before ``to`` (loosely, p <= 0.05: when in doubt, it was)."""
    ratio, p = rate_rose(pre, _shrunk(windows.fine_range(to - LEVEL_MS, to), phi))
    return ratio >= 1.5 and p <= 0.05


def _rise_from(
    windows: Counts, pre: tuple[int, int], lo: int, hi: int, plausibly_lo: bool = False
) -> int:
    """Where, minute by minute in [lo, hi), the SLO's bad rate most likely rose above
    ``pre``'s; with ``plausibly_lo``, ``lo`` itself whenever the rise may have begun there
    (a few events cannot place a rise to the minute)."""
    steps = [windows.fine_range(t, min(t + 60_000, hi)) for t in range(lo, hi, 60_000)]
    base = pre[0] / pre[1] if pre[1] else 0.0
    if plausibly_lo and rise_may_start_first(steps, base):
        return lo
    return lo + 60_000 * rise_start(steps, base)


def _ramp_llr(windows: Counts, pre: tuple[int, int], lo: int, hi: int, phi: float) -> float:
    """How much better a ramp up from ``lo`` explains the minutes of [lo, hi) than the best
    later step (``ramp_over_step_llr``, on counts shrunk by the dispersion ``phi``)."""
    minutes = [_shrunk(windows.fine_range(t, min(t + 60_000, hi)), phi)
               for t in range(lo, hi, 60_000)]  # fmt: skip
    return ramp_over_step_llr(minutes, pre[0] / pre[1] if pre[1] else 0.0)


BURST_MS: Final = 3 * 60_000  # the longest burst that is everyday noise (a blip)
REST_MS: Final = 60_000  # and what must be left of a rise without it, at least


def _beyond_burst(windows: Counts, lo: int, hi: int, phi: float) -> tuple[int, int]:
    """(bad, total) in [lo, hi) without its worst ``BURST_MS`` (in 10 s buckets: a burst
    is not aligned to minutes), shrunk by the dispersion ``phi``: what is left of a rise
    once the burst that may be all of it is taken out. The next worst is taken out too
    when it is a burst as well (it fails surely more than the rest): two blips minutes
    apart are not a change's harm either."""
    steps = [windows.fine_range(t, t + FINE_MS) for t in range(lo, hi, FINE_MS)]
    span = BURST_MS // FINE_MS
    if len(steps) < span + REST_MS // FINE_MS:
        return 0, 0  # too little left once the burst is taken out
    sums = [0]  # prefix sums of bad events: a span's in one subtraction
    for b, _ in steps:
        sums.append(sums[-1] + b)

    def worst(taken: int) -> int | None:  # the span with the most bad events (the earliest)
        starts = [i for i in range(len(steps) - span + 1) if abs(i - taken) >= span]
        return max(starts, key=lambda i: (sums[i + span] - sums[i], -i), default=None)

    first = worst(-span)
    assert first is not None  # there are at least ``span`` steps
    rest = _shrunk(_summed_counts(steps[:first] + steps[first + span :]), phi)
    second = worst(first)
    if second is not None and len(steps) >= 2 * span + REST_MS // FINE_MS:
        cut = _shrunk(_summed_counts(steps[second : second + span]), phi)
        left = (rest[0] - cut[0], rest[1] - cut[1])
        # Surely more than the rest fails at, among as many spans as the rise holds.
        p_burst = binomial_upper_tail(cut[0], cut[1], left[0] / left[1]) if left[1] else 1.0
        if p_burst <= ALPHA * span / len(steps):
            rest = left
    return rest


def _shrunk(counts: tuple[int, int], phi: float) -> tuple[int, int]:
    return round(counts[0] / phi), round(counts[1] / phi)
