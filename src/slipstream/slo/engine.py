"""The SLO engine of one source partition: classify, count, evaluate at event time, report.

Deterministic by construction: each SLO has its own event-time clock that
moves in 10 s steps when one of its own events reaches the next boundary
(or, for an SLO whose service has gone quiet, when the partition's newest
event time is ``idle_lateness_ms`` past it). At each boundary the SLO is
evaluated on everything counted before it, whatever the message boundaries
were. Events behind the clock are *late*: they are counted all the same
(every window evaluated from then on includes them) but evaluations already
made are not revisited.

The engine's whole state is a set of key → JSON-able values (buckets with
their offset guard, clocks, alert machines) that the worker keeps in a
changelog-backed table, so a restarted or rebalanced worker resumes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from slipstream.slo.alerts import AlertMachine, Transition, budget_remaining, burn_rate
from slipstream.slo.catalogue import Catalogue, Slo
from slipstream.slo.correlation import Candidate, Cusum, Verdict, episode_verdict
from slipstream.slo.deploys import CalleeChange, DeployTracker, Impact, TrackedDeploy, kept_counts
from slipstream.slo.events import Deploy, Request
from slipstream.slo.policy import REPORTED_WINDOWS_MS
from slipstream.slo.tally import FAST_MS, Tally
from slipstream.slo.windows import (
    COARSE_MS,
    FINE_MS,
    MEDIUM_MS,
    RES_CODE,
    OwnCounts,
    SeriesImage,
    WindowCounts,
)

RESOLUTIONS: Final = (FINE_MS, MEDIUM_MS, COARSE_MS)
EPISODE_DECIDE_MS: Final = 30 * 60_000  # an episode's verdict is revised for this long
EPISODE_PRE_MS: Final = 60 * 60_000
_CODE_RES: Final = {v: k for k, v in RES_CODE.items()}
# FAST_MS (tally.py): inside a 10 s tick an alert may fire at this step of event time
# (sub-second alerts): the first event past each step, when the open tick holds bad
# events, evaluates the tiers on the windows plus the open tick so far. Clearing waits
# for the tick's close.


@dataclass(frozen=True)
class BudgetSnapshot:
    service: str
    slo: str
    objective_percent: float
    period_days: int
    good: int
    total: int
    budget_remaining_ratio: float
    burn_rates: Mapping[str, float]
    window_events: Mapping[str, int]  # events per reported window: 0 means no data
    active_alerts: tuple[str, ...]
    updated_at_ms: int  # event time (the SLO's clock)
    frozen: bool = False
    freeze_reason: str | None = None

    @property
    def sli(self) -> float | None:
        return self.good / self.total if self.total else None


@dataclass
class SloRuntime:
    slo: Slo
    windows: WindowCounts
    machine: AlertMachine = field(default_factory=AlertMachine)
    first_clock_ms: int | None = None  # when the SLO was first seen (event time)
    last_emit_ms: int | None = None  # event time of the last BudgetSnapshot sent
    latest: BudgetSnapshot | None = None
    latest_emitted: bool = True
    cusum: Cusum | None = None
    episode: dict[str, Any] | None = None  # the open budget-drop episode
    fast_ms: int = 0  # the last step inside a tick evaluated for firing (event time)
    # (tick, bad events in it) at the last look inside a tick after which only a new bad
    # event could make a tier fire (see ``_evaluate_open_tick``); not kept across restarts.
    settled_open: tuple[int, int] | None = None

    @property
    def clock_ms(self) -> int | None:
        return self.windows.clock_ms


@dataclass(frozen=True)
class PolicyChange:
    """The budget policy froze or unfroze a service's releases."""

    service: str
    action: str  # freeze | unfreeze
    slo: str | None  # the SLO whose budget decided it
    reason: str
    event_time_ms: int
    budget_remaining_ratio: float | None


@dataclass
class MessageResult:
    """What one message (or micro-batch) changed: table writes and deletes, and what to
    publish."""

    writes: dict[str, Any] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    transitions: list[tuple[Transition, BudgetSnapshot]] = field(default_factory=list)
    snapshots: list[BudgetSnapshot] = field(default_factory=list)  # due for slo.budget
    latest: dict[tuple[str, str], BudgetSnapshot] = field(default_factory=dict)  # changed state
    impacts: list[Impact] = field(default_factory=list)
    suspects: dict[str, str] = field(default_factory=dict)  # alert_id -> deploy_id
    causes: dict[str, str] = field(default_factory=dict)  # alert_id -> deploy | external
    policy: list[PolicyChange] = field(default_factory=list)
    late_events: int = 0
    skipped_replayed: int = 0
    unknown_service_events: int = 0


@dataclass
class _Run:
    """Requests of one SLO in one ``FAST_MS`` step, counted per version."""

    slo: Slo
    tick: int
    ts_ms: int  # the newest event time in the run
    versions: dict[str | None, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class BucketImage:
    """The bucket state of a partition's engine in a checkpoint."""

    newest_offset: int
    slos: dict[tuple[str, str], list[SeriesImage]]

    @property
    def held(self) -> int:
        return sum(ring.held for rings in self.slos.values() for ring in rings)


def bucket_prefix(partition: int) -> str:
    """How the table keys of a partition's buckets begin (the other keys do not)."""
    return f"{partition}|b|"


def windows_for(slo: Slo) -> set[int]:
    needed = set(REPORTED_WINDOWS_MS.values()) | {slo.period_ms}
    for tier in slo.tiers:
        needed |= {tier.long_window_ms, tier.short_window_ms}
    return needed


class PartitionEngine:
    def __init__(
        self,
        partition: int,
        catalogue: Catalogue,
        *,
        idle_lateness_ms: int = 300_000,
        budget_interval_ms: int = 60_000,
    ) -> None:
        self.partition = partition
        self.catalogue = catalogue
        self.idle_lateness_ms = idle_lateness_ms
        self.budget_interval_ms = budget_interval_ms
        self.runtimes: dict[tuple[str, str], SloRuntime] = {}
        self.deploys = DeployTracker()
        # service -> SLOs whose budget is exhausted (or whose page fires, where the policy says)
        self.freezing: dict[str, dict[str, str]] = {}
        self._dirty_freeze: set[str] = set()
        self.watermark_ms: int | None = None
        self._idle_clock_ms = 0
        self._offset = -1
        # The highest source offset any bucket may hold (a bound: buckets hold no higher
        # one). A message above it is new to every bucket, so the offset guard refuses
        # none of its events and several such messages may be counted as one.
        self.newest_offset = -1
        # Buckets changed since the last end() (written then), and those the current
        # message already counted into (the offset guard must not refuse its second event).
        self._touched: set[tuple[str, str, int, int]] = set()
        self._guarded: set[tuple[str, str, int, int]] = set()
        self._dirty_state: set[tuple[str, str]] = set()
        self._result = MessageResult()
        self._restored_states: dict[tuple[str, str], Mapping[str, Any]] = {}

    # -- keys of the changelog table ----------------------------------------------------

    def _bucket_key(self, service: str, slo: str, res: int, index: int) -> str:
        return f"{bucket_prefix(self.partition)}{service}|{slo}|{RES_CODE[res]}|{index}"

    def _state_key(self, service: str, slo: str) -> str:
        return f"{self.partition}|s|{service}|{slo}"

    @property
    def _partition_key(self) -> str:
        return f"{self.partition}|p"

    # -- runtime per SLO ----------------------------------------------------------------

    def _runtime(self, slo: Slo) -> SloRuntime:
        key = (slo.service, slo.name)
        rt = self.runtimes.get(key)
        if rt is None:
            rt = self.runtimes[key] = SloRuntime(slo, WindowCounts(windows_for(slo)))
        return rt

    # -- processing -----------------------------------------------------------------------

    def begin(self, offset: int) -> None:
        """Start a message. Several messages may be absorbed before one ``end()``: their
        table changes then come out once (a micro-batch)."""
        self._offset = offset
        self._guarded.clear()

    def absorb(self, request: Request) -> None:
        slos = self.catalogue.slos_of(request.service)
        if not slos:
            self._result.unknown_service_events += 1
            return
        named = request.callee is not None
        for slo in slos:
            bad = 1 if slo.sli.is_bad(request) else 0
            self._absorb_counts(slo, request.version, request.timestamp_ms, bad, 1, bad & named)

    def absorb_many(self, requests: Sequence[Request]) -> None:
        """The requests of one message, counted as runs: consecutive requests of an SLO in
        the same ``FAST_MS`` step become one count per version. Each SLO sees its runs in
        event order, so its windows, alerts and table are exactly those of one by one; a
        deploy that starts or ends inside a step counts that step's run whole."""
        current: dict[int, _Run] = {}  # id(slo) -> its open run
        runs: list[_Run] = []
        unknown = 0
        for request in requests:
            slos = self.catalogue.slos_of(request.service)
            if not slos:
                unknown += 1
                continue
            ts = request.timestamp_ms
            tick = ts // FAST_MS
            for slo in slos:
                run = current.get(id(slo))
                if run is None or run.tick != tick:
                    run = current[id(slo)] = _Run(slo, tick, ts)
                    runs.append(run)
                elif ts > run.ts_ms:
                    run.ts_ms = ts
                counts = run.versions.get(request.version)
                if counts is None:
                    counts = run.versions[request.version] = [0, 0, 0]
                if slo.sli.is_bad(request):
                    counts[0] += 1
                    counts[2] += request.callee is not None
                counts[1] += 1
        self._result.unknown_service_events += unknown
        for run in runs:
            for version, (bad_count, total, via) in run.versions.items():
                self._absorb_counts(run.slo, version, run.ts_ms, bad_count, total, via)

    def absorb_tallied(self, tally: Tally) -> None:
        """The requests of one message, already grouped (``Tally``): the same calls, in
        the same order, as ``absorb_many`` makes for them. The tally's SLOs must be this
        engine's catalogue's."""
        self._result.unknown_service_events += tally.unknown
        for run in tally.runs:
            # absorb_many opens the runs of a service's SLOs at the same events, in the
            # catalogue's order; each run then counts its versions in order of appearance.
            n = len(run.slos)
            for i, slo in enumerate(run.slos, 1):
                for version, counts in run.versions.items():
                    self._absorb_counts(slo, version, run.ts_ms, counts[i], counts[0],
                                        counts[n + i])  # fmt: skip

    def absorb_tally(
        self,
        service: str,
        slo_name: str,
        version: str | None,
        ts_ms: int,
        bad: int,
        total: int,
        via: int = 0,
    ) -> None:
        """Absorb ``total`` events of one SLO, already classified (``bad`` of them bad,
        ``via`` of those naming a callee), that share a version and a 10 s tick: the same
        as absorbing them one by one in order."""
        slo = next((s for s in self.catalogue.slos_of(service) if s.name == slo_name), None)
        if slo is None:
            self._result.unknown_service_events += total
            return
        self._absorb_counts(slo, version, ts_ms, bad, total, via)

    def _absorb_counts(
        self, slo: Slo, version: str | None, ts: int, bad: int, total: int, via: int = 0
    ) -> None:
        if self.watermark_ms is None or ts > self.watermark_ms:
            self.watermark_ms = ts
        self.newest_offset = max(self.newest_offset, self._offset)
        rt = self._runtime(slo)
        boundary = ts // FINE_MS * FINE_MS
        if rt.clock_ms is None or boundary > rt.clock_ms:
            self._advance(rt, boundary)
            # The event that opens a tick is the first of its step: nothing before it to fire
            # on (and a replay of it must not evaluate the step again).
            rt.fast_ms = ts // FAST_MS * FAST_MS
        elif ts < rt.clock_ms:
            self._result.late_events += total
            if bad:
                rt.settled_open = None  # a closed bucket's bad count moves the windows
        elif ts // FAST_MS * FAST_MS > rt.fast_ms:
            self._evaluate_open_tick(rt, ts // FAST_MS * FAST_MS)
        if self._count(rt, ts, bad, total, via):
            self.deploys.count(slo.service, version, ts, slo.name, bad, total, via)

    def absorb_deploy(self, deploy: Deploy) -> None:
        self.deploys.on_deploy(deploy)

    def _count(self, rt: SloRuntime, ts: int, bad: int, total: int, via: int) -> bool:
        """Add to the SLO's buckets; False when the offset guard skipped the fine bucket.
        The correlation reads the bad events that named a callee in 10 s and 5 min buckets
        only (two hours of "after", six of "before"): the hourly ones do not count them."""
        service, name, windows, offset = rt.slo.service, rt.slo.name, rt.windows, self._offset
        guarded = self._guarded
        counted = True
        for res in RESOLUTIONS:
            index = ts // res
            mark = (service, name, res, index)
            if mark not in guarded:
                if windows.series[res].offset(index) >= offset >= 0:
                    # The offset guard: this message was absorbed before a restart.
                    self._result.skipped_replayed += total if res == COARSE_MS else 0
                    counted = counted and res != FINE_MS
                    continue
                guarded.add(mark)
                self._touched.add(mark)
            windows.add(res, index, bad, total, offset, via if res != COARSE_MS else 0)
        return counted

    def _advance(self, rt: SloRuntime, target_ms: int) -> None:
        """Step the SLO's clock to ``target_ms``, evaluating at every 10 s boundary."""
        slo = rt.slo
        self._dirty_state.add((slo.service, slo.name))
        if rt.clock_ms is None:
            self._expired(rt, rt.windows.advance(target_ms))
            rt.first_clock_ms = target_ms
            return
        step = rt.clock_ms + FINE_MS
        while step <= target_ms:
            self._expired(rt, rt.windows.advance(step))
            self._evaluate(rt)
            step += FINE_MS

    def _expired(self, rt: SloRuntime, gone: Iterable[tuple[int, int]]) -> None:
        for res, index in gone:
            self._result.deletes.add(self._bucket_key(rt.slo.service, rt.slo.name, res, index))

    def _evaluate(self, rt: SloRuntime) -> None:
        slo = rt.slo
        clock = rt.clock_ms
        assert clock is not None
        windows = {w: rt.windows.window(w) for w in rt.windows.windows_ms}
        observed = clock - (rt.first_clock_ms if rt.first_clock_ms is not None else clock)
        transition = rt.machine.evaluate(slo, clock, windows, observed)
        callees = self.catalogue.services[slo.service].depends_on
        # A deploy is judged on its service's own failures. When the service names the
        # called service a request failed on, a callee's change cannot show in them, so it
        # no longer confounds (its own failures are still read, for a cause both share:
        # what it failed on a service it calls in turn was named there).
        names_callees = self._names_callees(slo.service, rt.windows)
        impacts = self.deploys.evaluate(
            slo.service, slo.name, clock, windows[slo.period_ms][1], slo.error_budget,
            OwnCounts(rt.windows),
            lambda since: {key: OwnCounts(other) for key, other
                           in self._control_windows(slo, own=True, changed_since=since).items()},
            burn_rate(*windows[3_600_000], slo.error_budget),
            lambda: [] if names_callees else [
                CalleeChange(service, t.started_ms, self._deploy_verdict(t, slo),
                             self._windows_of(service), t.fractions, t.deploy.deploy_id)
                for service in callees for t in self.deploys.of_service(service)],
            lambda: {service: OwnCounts(counts) if names_callees else counts
                     for service in callees
                     if (counts := self._windows_of(service)) is not None},
        )  # fmt: skip
        self._result.impacts.extend(impacts)
        self._track_episode(rt, clock, windows[slo.period_ms][1])
        self._apply_policy(rt, clock, windows)
        snapshot = self._snapshot(rt, windows)
        rt.latest = snapshot
        self._result.latest[(slo.service, slo.name)] = snapshot
        if transition is not None:
            self._emit(rt, transition, snapshot, clock)
        due = rt.last_emit_ms is None or clock - rt.last_emit_ms >= self.budget_interval_ms
        if transition is not None or due:
            self._result.snapshots.append(snapshot)
            rt.last_emit_ms = clock
            rt.latest_emitted = True
        else:
            rt.latest_emitted = False

    def _evaluate_open_tick(self, rt: SloRuntime, step_ms: int) -> None:
        """May a tier fire at ``step_ms`` inside the open tick? Windows plus the tick so far."""
        slo = rt.slo
        rt.fast_ms = step_ms
        self._dirty_state.add((slo.service, slo.name))
        assert rt.clock_ms is not None
        open_bad, open_total = rt.windows.series[FINE_MS].counts(rt.clock_ms // FINE_MS)
        if not open_bad:
            return  # only good events since the tick opened: nothing can start firing
        if rt.settled_open == (rt.clock_ms, open_bad):
            # No bad event since a look after which no guard could be lifted before the tick
            # closes (see below): good events alone only lower the burn rates.
            return
        windows = {}
        for w in rt.windows.windows_ms:
            bad, total = rt.windows.window(w)
            windows[w] = (bad + open_bad, total + open_total)
        observed = step_ms - (rt.first_clock_ms if rt.first_clock_ms is not None else step_ms)
        transition = rt.machine.evaluate(slo, step_ms, windows, observed, may_clear=False)
        # Settled unless a guard that holds a tier back could be lifted by good events
        # (min_events) or by time before the tick closes (observed); a tier still too young
        # at the tick's end stays held back whatever comes.
        observed_at_close = observed + rt.clock_ms + FINE_MS - step_ms
        liftable = any(
            observed_at_close >= t.short_window_ms
            and (windows[t.long_window_ms][1] < slo.min_events or observed < t.short_window_ms)
            for t in slo.tiers
        )
        rt.settled_open = None if liftable else (rt.clock_ms, open_bad)
        if transition is not None:
            snapshot = self._snapshot(rt, windows)
            self._emit(rt, transition, snapshot, step_ms)
            self._result.snapshots.append(snapshot)

    def _emit(
        self, rt: SloRuntime, transition: Transition, snapshot: BudgetSnapshot, clock: int
    ) -> None:
        """Publish a transition with what the correlation says about its cause."""
        slo = rt.slo
        self._result.transitions.append((transition, snapshot))
        episode = rt.episode or {}
        if episode.get("verdict") == "EXTERNAL":
            self._result.causes[transition.alert_id] = "external"
            return
        suspect = (
            episode.get("deploy_id")
            if episode.get("verdict") in ("ATTRIBUTED", "SUSPECTED", "AMBIGUOUS")
            else self.deploys.suspect(slo.service, slo.name, clock)
        )
        if suspect:
            self._result.suspects[transition.alert_id] = suspect
            self._result.causes[transition.alert_id] = "deploy"

    def _names_callees(self, service: str, windows: WindowCounts) -> bool:
        """Does ``service`` name the callee of every request a called service failed? As
        the catalogue declares; undeclared, once its counts hold one that did."""
        declared = self.catalogue.services[service].names_callees
        return windows.names_callees() if declared is None else declared

    def _control_windows(
        self, slo: Slo, own: bool = False, changed_since: int | None = None
    ) -> dict[str, WindowCounts]:
        """Counts of the SLOs that can serve as controls for ``slo``: their services neither
        call nor are called by ``slo``'s, and have no change under suspicion, neither their
        own nor one of a service they call (its failures are theirs too). With ``own``
        (their own failures are what is read: ``OwnCounts``), a service that names the
        callee its requests failed on may call those services too. With ``changed_since``,
        only a change started then or later is one under suspicion here."""
        related = {slo.service, *self.catalogue.services[slo.service].depends_on}
        suspected = self.deploys.suspected_services(self.watermark_ms or 0, changed_since)
        treated = suspected | {
            name
            for name, spec in self.catalogue.services.items()
            if suspected.intersection(spec.depends_on)
        }
        return {
            f"{other.slo.service}/{other.slo.name}": other.windows
            for other in self.runtimes.values()
            if other.slo.service not in related
            and (
                other.slo.service not in suspected
                if own and self._names_callees(other.slo.service, other.windows)
                else other.slo.service not in treated
                and slo.service not in self.catalogue.services[other.slo.service].depends_on
            )
        }

    def _track_episode(self, rt: SloRuntime, clock: int, period_total: int) -> None:
        """Budget-drop episodes: a CUSUM finds the onset, then the evidence is fused."""
        slo = rt.slo
        if rt.cusum is None:
            budget = slo.error_budget
            rt.cusum = Cusum(p0=budget, p1=min(10 * budget, 0.5))
        bad, total = rt.windows.series[FINE_MS].counts(clock // FINE_MS - 1)
        if rt.cusum.update(bad, total, clock):
            rt.episode = {"onset_ms": rt.cusum.onset_ms, "opened_ms": clock, "verdict": None}
        elif rt.cusum.onset_ms is None:
            rt.episode = None
        episode = rt.episode
        if episode is None or clock - episode["opened_ms"] > EPISODE_DECIDE_MS:
            return
        if episode["verdict"] == "ATTRIBUTED":
            return  # decided: later evidence belongs to the next episode
        onset = int(episode["onset_ms"])
        # The hour before the onset, kept from the first look (its 10 s buckets expire).
        before: dict[str, list[int]] = episode.setdefault("before", {})

        def pre_of(key: str, counts: WindowCounts) -> tuple[int, int]:
            return kept_counts(before, key, counts, onset - EPISODE_PRE_MS, onset)

        pre = pre_of("", rt.windows)
        post = rt.windows.fine_range(onset, clock)
        related = {slo.service, *self.catalogue.services[slo.service].depends_on}
        controls = [
            (pre_of(key, other), other.fine_range(onset, clock))
            for key, other in self._control_windows(slo).items()
        ]
        candidates = [
            Candidate(t.deploy.deploy_id, t.started_ms, self._deploy_verdict(t, slo),
                      0 if t.deploy.service == slo.service else 1)
            for t in self.deploys.deploys.values()
            if (t.deploy.service in related or t.deploy.change_type == "infra")
            # a deploy rolled back before the onset cannot have started it
            and not (t.deploy.phase == "rolled_back" and t.deploy.timestamp_ms <= onset)
        ]  # fmt: skip
        verdict = episode_verdict(onset, candidates, pre, post, controls)
        if verdict.verdict == episode["verdict"] and verdict.deploy_id == episode.get("deploy_id"):
            return
        if episode["verdict"] == "EXTERNAL" and verdict.verdict != "ATTRIBUTED":
            return  # external until a deploy's own test says otherwise
        episode["verdict"], episode["deploy_id"] = verdict.verdict, verdict.deploy_id
        self._dirty_state.add((slo.service, slo.name))
        if verdict.verdict == "INCONCLUSIVE" or verdict.evidence.get("method") == "deploy_test":
            return  # nothing new to publish: no decision, or the deploy's own verdict stands
        tracked = self.deploys.deploys.get(verdict.deploy_id or "")
        # An episode no deploy explains is published under an id of its own.
        episode_id = f"episode:{slo.service}/{slo.name}@{onset}"
        synthetic = Deploy(episode_id, slo.service, "", None, "infra", "started", 0.0, onset, "-")
        deploy = tracked.deploy if tracked else synthetic
        pre_rate = pre[0] / pre[1] if pre[1] else 0.0
        excess = max(post[0] - post[1] * pre_rate, 0.0)
        consumed = excess / (slo.error_budget * period_total) if period_total else 0.0
        self._result.impacts.append(
            Impact(
                deploy,
                slo.name,
                Verdict(verdict.verdict, verdict.confidence),
                consumed,
                clock,
                {"scope": "episode", **verdict.evidence},
            )
        )

    def _windows_of(self, service: str) -> WindowCounts | None:
        """The counts of the first SLO of ``service`` (the one its callers feel)."""
        slos = self.catalogue.slos_of(service)
        rt = self.runtimes.get((service, slos[0].name)) if slos else None
        return rt.windows if rt is not None else None

    @staticmethod
    def _deploy_verdict(tracked: TrackedDeploy, slo: Slo) -> str | None:
        """A deploy's verdict as evidence for ``slo``'s episode: its own test on this SLO,
        or, for a callee's deploy, its verdict on the callee's own SLOs (worst first)."""
        if tracked.deploy.service == slo.service:
            return tracked.verdicts.get(slo.name)
        verdicts = set(tracked.verdicts.values())
        return next((v for v in ("ATTRIBUTED", "SUSPECTED", "CLEARED") if v in verdicts), None)

    def _apply_policy(
        self, rt: SloRuntime, clock: int, windows: Mapping[int, tuple[int, int]]
    ) -> None:
        """The error-budget policy of the catalogue: freeze releases of a service while any
        of its SLOs has no budget left (and, if asked, while one of them pages)."""
        slo = rt.slo
        policy = self.catalogue.services[slo.service].policy
        bad, total = windows[slo.period_ms]
        remaining = budget_remaining(bad, total, slo.error_budget)
        freezing = self.freezing.setdefault(slo.service, {})
        exhausted_reason = f"{slo.name}: error budget of {slo.period_days}d exhausted"
        reason = None
        if (
            policy.freeze_when_exhausted
            and total >= slo.min_events
            and (
                remaining <= 0
                or (
                    freezing.get(slo.name) == exhausted_reason and remaining < policy.unfreeze_above
                )
            )
        ):
            reason = exhausted_reason
        elif policy.freeze_on_page and rt.machine.severity == "page":
            reason = f"{slo.name}: page-level burn-rate alert firing"
        if freezing.get(slo.name) == reason:
            return
        was_frozen = bool(freezing)
        if reason is None:
            freezing.pop(slo.name, None)
        else:
            freezing[slo.name] = reason
        self._dirty_freeze.add(slo.service)
        if bool(freezing) != was_frozen:
            action = "freeze" if freezing else "unfreeze"
            why = reason or f"{slo.name}: error budget back above zero"
            self._result.policy.append(
                PolicyChange(slo.service, action, slo.name, why, clock, remaining)
            )

    def _snapshot(self, rt: SloRuntime, windows: Mapping[int, tuple[int, int]]) -> BudgetSnapshot:
        slo = rt.slo
        bad, total = windows[slo.period_ms]
        assert rt.clock_ms is not None
        freezing = self.freezing.get(slo.service) or {}
        return BudgetSnapshot(
            service=slo.service,
            slo=slo.name,
            objective_percent=slo.objective_percent,
            period_days=slo.period_days,
            good=total - bad,
            total=total,
            budget_remaining_ratio=budget_remaining(bad, total, slo.error_budget),
            burn_rates={
                name: burn_rate(*windows[w], slo.error_budget)
                for name, w in REPORTED_WINDOWS_MS.items()
            },
            window_events={name: windows[w][1] for name, w in REPORTED_WINDOWS_MS.items()},
            active_alerts=tuple(rt.machine.active_severities()),
            updated_at_ms=rt.clock_ms,
            frozen=bool(freezing),
            freeze_reason="; ".join(sorted(freezing.values())) or None,
        )

    def end(self) -> MessageResult:
        """Finish the message: move quiet SLOs along, and collect the table changes."""
        if self.watermark_ms is not None:
            idle_clock = (self.watermark_ms - self.idle_lateness_ms) // FINE_MS * FINE_MS
            if idle_clock > self._idle_clock_ms:
                self._idle_clock_ms = idle_clock
                for rt in self.runtimes.values():
                    if rt.clock_ms is not None and rt.clock_ms < idle_clock:
                        self._advance(rt, idle_clock)
        result = self._result
        for service, slo_name, res, index in self._touched:
            rt = self.runtimes[(service, slo_name)]
            series = rt.windows.series[res]
            cell = series.cell(index)
            if cell is not None:
                key = self._bucket_key(service, slo_name, res, index)
                via = series.via_count(index)
                result.writes[key] = [*cell, via] if via else list(cell)
                result.deletes.discard(key)
        for service, slo_name in self._dirty_state:
            rt = self.runtimes[(service, slo_name)]
            result.writes[self._state_key(service, slo_name)] = {
                "clock_ms": rt.clock_ms,
                "fast_ms": rt.fast_ms,
                "first_clock_ms": rt.first_clock_ms,
                "cusum": [rt.cusum.s, rt.cusum.zero_at_ms, rt.cusum.onset_ms] if rt.cusum else None,
                "episode": rt.episode,
                "last_emit_ms": rt.last_emit_ms,
                "machine": rt.machine.to_dict(),
            }
        self._dirty_state.clear()
        for deploy_id in self.deploys.dirty:
            tracked = self.deploys.deploys.get(deploy_id)
            if tracked is not None:
                result.writes[f"{self.partition}|d|{deploy_id}"] = tracked.to_dict()
        for deploy_id in self.deploys.dropped:
            result.deletes.add(f"{self.partition}|d|{deploy_id}")
        self.deploys.dirty.clear()
        self.deploys.dropped.clear()
        for service in self._dirty_freeze:
            result.writes[f"{self.partition}|f|{service}"] = self.freezing.get(service) or {}
        self._dirty_freeze.clear()
        result.writes[self._partition_key] = {"watermark_ms": self.watermark_ms,
                                              "idle_clock_ms": self._idle_clock_ms}  # fmt: skip
        self._touched.clear()
        self._result = MessageResult()
        return result

    def pending_snapshots(self) -> list[BudgetSnapshot]:
        """Latest snapshots not yet published (the worker flushes them when idle)."""
        out = []
        for rt in self.runtimes.values():
            if not rt.latest_emitted and rt.latest is not None:
                out.append(rt.latest)
                rt.latest_emitted = True
        return out

    # -- checkpoints ----------------------------------------------------------------------

    def bucket_image(self) -> BucketImage:
        """Every SLO's buckets as the rings of its series, for a local checkpoint (the
        arrays themselves: serialise the image before the engine moves on). With the
        partition's other table entries it is the table as its changelog holds it, when
        every write has been acknowledged."""
        return BucketImage(
            self.newest_offset,
            {key: [s.image() for s in rt.windows.series.values()] for key, rt in
             self.runtimes.items()},
        )  # fmt: skip

    @classmethod
    def from_bucket_image(
        cls, partition: int, catalogue: Catalogue, image: BucketImage
    ) -> PartitionEngine | None:
        """A restoring engine holding the buckets of ``image``, as if their changelog
        entries had been loaded; the other entries and the changelog after the checkpoint
        are loaded next, then ``finish_restore``. None when an SLO's series no longer has
        the checkpoint's size (its windows changed): the changelog must be read whole."""
        engine = cls(partition, catalogue)
        for (service, name), rings in image.slos.items():
            slo = catalogue.slo(service, name)
            if slo is None:
                continue  # an SLO no longer in the catalogue: its entries are ignored too
            series = engine._runtime(slo).windows.series
            for ring in rings:
                target = series.get(ring.res_ms)
                if target is None or not target.take_image(ring):
                    return None
        engine.newest_offset = image.newest_offset
        return engine

    # -- recovery -------------------------------------------------------------------------

    def restore(self, items: Iterable[tuple[str, Any]]) -> int:
        """Rebuild from the table's entries of this partition; return how many were used."""
        used = sum(self.load_entry(key, value) for key, value in items)
        self.finish_restore()
        return used

    def load_entry(self, key: str, value: Any) -> bool:
        """Take one changelog entry (``value`` None: a tombstone) of this partition, in
        changelog order; ``finish_restore`` then rebuilds what depends on all of them.
        Return whether the entry was this partition's."""
        prefix = f"{self.partition}|"
        if not key.startswith(prefix):
            return False
        parts = key.split("|")
        kind = parts[1]
        if kind == "p":
            self.watermark_ms = value.get("watermark_ms") if value else None
            self._idle_clock_ms = (value.get("idle_clock_ms") if value else 0) or 0
        elif kind == "s":
            if value is None:
                self._restored_states.pop((parts[2], parts[3]), None)
            else:
                self._restored_states[(parts[2], parts[3])] = value
        elif kind == "d":
            if value is None:
                self.deploys.deploys.pop(key[len(prefix) + 2 :], None)
            else:
                tracked = TrackedDeploy.from_dict(value)
                self.deploys.deploys[tracked.deploy.deploy_id] = tracked
        elif kind == "f":
            if value is None:
                self.freezing.pop(parts[2], None)
            else:
                self.freezing[parts[2]] = dict(value)
        elif kind == "b":
            slo = self.catalogue.slo(parts[2], parts[3])
            if slo is None:
                return True  # an SLO no longer in the catalogue
            _load_bucket(self._runtime(slo).windows, parts, value)
            if value is not None and value[2] > self.newest_offset:
                self.newest_offset = value[2]
        return True

    def load_entries(self, keys: Sequence[str], values: Sequence[Any]) -> int:
        """``load_entry`` for each of a run of entries, in changelog order; how many were
        this partition's. A changelog holds an SLO's buckets one after another: its windows
        are looked up once per run of them, not once per bucket (the catalogue lookup and
        the runtime were a third of a restore's time)."""
        buckets = bucket_prefix(self.partition)
        used = 0
        current: tuple[str, str] | None = None
        windows: WindowCounts | None = None
        newest = self.newest_offset
        for key, value in zip(keys, values, strict=True):
            if not key.startswith(buckets):
                used += self.load_entry(key, value)
                continue
            used += 1
            parts = key.split("|")
            if current != (parts[2], parts[3]):
                current = (parts[2], parts[3])
                slo = self.catalogue.slo(parts[2], parts[3])
                windows = None if slo is None else self._runtime(slo).windows
            if windows is not None:  # None: an SLO no longer in the catalogue
                _load_bucket(windows, parts, value)
                if value is not None and value[2] > newest:
                    newest = value[2]
        self.newest_offset = newest
        return used

    def finish_restore(self) -> None:
        """After the last ``load_entry``: deploy order, alert machines, clocks and the
        running sums, and the snapshot each restored SLO shows again."""
        states, self._restored_states = self._restored_states, {}
        for tracked in sorted(self.deploys.deploys.values(), key=lambda t: t.started_ms):
            self.deploys.by_service.setdefault(tracked.deploy.service, []).append(
                tracked.deploy.deploy_id
            )
        for (service, slo_name), state in states.items():
            slo = self.catalogue.slo(service, slo_name)
            if slo is None:
                continue
            rt = self._runtime(slo)
            rt.machine = AlertMachine.from_dict(state.get("machine", {}))
            rt.last_emit_ms = state.get("last_emit_ms")
            rt.fast_ms = state.get("fast_ms") or 0
            rt.first_clock_ms = state.get("first_clock_ms")
            rt.episode = state.get("episode")
            if state.get("cusum") is not None:
                s_value, zero_at, onset = state["cusum"]
                budget = slo.error_budget
                rt.cusum = Cusum(budget, min(10 * budget, 0.5), s=s_value, zero_at_ms=zero_at,
                                 onset_ms=onset)  # fmt: skip
            if state.get("clock_ms") is not None:
                rt.windows.advance(state["clock_ms"])  # running sums from the loaded buckets
                windows = {w: rt.windows.window(w) for w in rt.windows.windows_ms}
                rt.latest = self._snapshot(rt, windows)  # what /metrics and Redis show again


def _load_bucket(windows: WindowCounts, parts: Sequence[str], value: Any) -> None:
    """A bucket entry (key split at "|") into the SLO's windows; None is a tombstone. Its
    value is [bad, total, offset], and the bad events that named a callee when any did."""
    if value is None:
        windows.unload(_CODE_RES[parts[4]], int(parts[5]))
    else:
        bad, total, offset, *via = value
        windows.load(_CODE_RES[parts[4]], int(parts[5]), bad, total, offset, *via[:1])
