"""Statistics that link budget burn to a deploy (CORRELATION.md). Standard library only.

The strongest evidence is the *version split*: while the old and new versions
serve side by side, a deploy without effect puts each bad event on the new
version with probability rho, its share of the traffic. Evidence against
that null is accumulated as an e-value (a mixture of likelihood ratios over
a grid of rate ratios), which stays valid however often it is looked at.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

RATE_RATIO_GRID: Final = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
ALPHA: Final = 0.01
E_THRESHOLD: Final = 1 / ALPHA
CLEAR_RATIO: Final = 1.5  # the mirrored test clears a deploy of any harm this large
MIN_BAD_EVENTS: Final = 10  # below this much evidence a verdict is INCONCLUSIVE
MIN_DEGRADED_BAD: Final = 5
# A change's harm may begin minutes after its start (a delayed onset): the bad events on the
# old version before then weigh against every large ratio. Part of the prior goes to "the
# harm began at minute m", one slot per minute of the judged two hours; each such test
# starts at 1 when its minute comes, so the mixture stays an e-value.
LATE_ONSET_SHARE: Final = 1 / 3
ONSET_SLOT_MS: Final = 60_000
ONSET_SLOTS: Final = 120
# ... and a harm may grow from the start (a leak, a cache going cold, a flag's share rising):
# the bad events of its first minutes, at a small ratio, weigh against every large one. Part
# of the prior goes to "the ratio grows by s per minute since the start" (to the grid's top).
RAMP_SHARE: Final = 1 / 6
FROM_START_SHARE: Final = 1 / 2  # a constant ratio from the start (the three sum to 1)
RAMP_SLOPES: Final = (0.25, 0.5, 1.0, 2.0)
_NOTHING: Final = -1e9  # log of a weight not yet placed


def _split_llr(ratio: float, bad_new: int, bad_old: int, rho: float) -> float:
    """log LR of "bad events are ``ratio`` times as likely on the new version" vs "no effect"."""
    mix = ratio * rho + 1.0 - rho
    return bad_new * math.log(ratio / mix) + bad_old * math.log(1.0 / mix)


@dataclass
class VersionSplitTest:
    """Sequential test of one deploy on one SLO from per-version counts, tick by tick."""

    log_lr: list[float] = field(default_factory=lambda: [0.0] * len(RATE_RATIO_GRID))
    clear_log_lr: float = 0.0  # log LR of "no effect" vs "ratio CLEAR_RATIO"
    bad_new: int = 0
    total_new: int = 0
    bad_old: int = 0
    total_old: int = 0
    # Per ratio, log of the sum over the onset slots begun so far of weight x LR since then.
    late_log: list[float] = field(default_factory=lambda: [_NOTHING] * len(RATE_RATIO_GRID))
    slots_begun: int = 0
    ramp_log_lr: list[float] = field(default_factory=lambda: [0.0] * len(RAMP_SLOPES))
    # The old version's bad events that named a called service: the split compares all
    # failures (a callee fails both versions alike), a before/after its service's own.
    via_old: int = 0

    def update(
        self, bad_new: int, total_new: int, bad_old: int, total_old: int,
        elapsed_ms: int | None = None, via_old: int = 0,
    ) -> None:  # fmt: skip
        """Add one tick's counts; ``elapsed_ms`` (since the deploy's start, at the tick's
        end) begins the late-onset tests of the minutes passed: without it, none begin."""
        self.bad_new += bad_new
        self.total_new += total_new
        self.bad_old += bad_old
        self.total_old += total_old
        self.via_old += via_old
        if total_new == 0 or total_old == 0 or bad_new + bad_old == 0:
            return  # no split in this tick, or nothing to learn from it
        if elapsed_ms is not None:
            slot = min(elapsed_ms // ONSET_SLOT_MS, ONSET_SLOTS)
            if slot > self.slots_begun:
                # Onsets in the minutes since the last tick that taught anything: their
                # tests begin here (a tick without bad events changes none of them).
                weight = math.log((slot - self.slots_begun) * LATE_ONSET_SHARE / ONSET_SLOTS)
                self.late_log = [log_add(x, weight) for x in self.late_log]
                self.slots_begun = slot
        rho = total_new / (total_new + total_old)
        for i, ratio in enumerate(RATE_RATIO_GRID):
            llr = _split_llr(ratio, bad_new, bad_old, rho)
            self.log_lr[i] += llr
            if self.late_log[i] > _NOTHING:
                self.late_log[i] += llr
        self.clear_log_lr -= _split_llr(CLEAR_RATIO, bad_new, bad_old, rho)
        if elapsed_ms is not None:
            minutes = elapsed_ms / ONSET_SLOT_MS
            for i, slope in enumerate(RAMP_SLOPES):
                ratio = min(1.0 + slope * minutes, RATE_RATIO_GRID[-1])
                self.ramp_log_lr[i] += _split_llr(ratio, bad_new, bad_old, rho)

    @property
    def e_harm(self) -> float:
        """Evidence that the new version is worse: a mixture over the grid of ratios and
        over when the harm began (at the start, or at one of the later minutes; a test not
        yet begun counts as 1), and over how fast a harm growing from the start grows."""
        n = len(RATE_RATIO_GRID)
        from_start = sum(math.exp(min(x, 700.0)) for x in self.log_lr) / n
        late = sum(math.exp(min(x, 700.0)) for x in self.late_log if x > _NOTHING) / n
        not_begun = LATE_ONSET_SHARE * (ONSET_SLOTS - self.slots_begun) / ONSET_SLOTS
        ramp = sum(math.exp(min(x, 700.0)) for x in self.ramp_log_lr) / len(RAMP_SLOPES)
        # (The shares summed in this order make exactly 1 when nothing was learnt.)
        return FROM_START_SHARE * from_start + RAMP_SHARE * ramp + (late + not_begun)

    @property
    def e_clear(self) -> float:
        return math.exp(min(self.clear_log_lr, 700.0))

    @property
    def bad_events(self) -> int:
        return self.bad_new + self.bad_old

    @property
    def own_old(self) -> tuple[int, int]:
        """(bad, total) of the old version while both served, its own failures only."""
        return self.bad_old - self.via_old, self.total_old

    def rate_ratio(self) -> tuple[float, float, float] | None:
        """New/old bad-rate ratio with a 95 % interval (log scale, +0.5 continuity)."""
        if self.total_new == 0 or self.total_old == 0:
            return None
        bn, bo = self.bad_new + 0.5, self.bad_old + 0.5
        nn, no = self.total_new + 0.5, self.total_old + 0.5
        log_rr = math.log((bn / nn) / (bo / no))
        se = math.sqrt(max(1 / bn - 1 / nn + 1 / bo - 1 / no, 0.0))
        return math.exp(log_rr), math.exp(log_rr - 1.96 * se), math.exp(log_rr + 1.96 * se)

    def to_list(self) -> list[Any]:
        return [self.log_lr, self.clear_log_lr, self.bad_new, self.total_new, self.bad_old,
                self.total_old, self.late_log, self.slots_begun, self.ramp_log_lr,
                self.via_old]  # fmt: skip

    @classmethod
    def from_list(cls, data: list[Any]) -> VersionSplitTest:
        test = cls(list(data[0]), data[1], data[2], data[3], data[4], data[5])
        if len(data) > 6:  # state written before the late-onset tests has none begun
            test.late_log, test.slots_begun = list(data[6]), data[7]
        if len(data) > 8:  # ... and before the ramps, none that bet
            test.ramp_log_lr = list(data[8])
        if len(data) > 9:  # ... and before the callees were told apart, none named one
            test.via_old = data[9]
        return test


def log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow."""
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Bin(n, p), exactly (small-count cross-check of the split test).

    Terms are summed away from the mode and stop once they no longer matter, so large
    counts cost tens of terms, not n.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    upper = k > n * p  # the tail lies beyond the mode: sum it; else sum the other side
    i = k if upper else k - 1
    # The first term from the log-pmf, the rest by the ratio of neighbouring terms (a
    # product per term instead of three lgammas: the benchmark calls this millions of times).
    t = math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                 + i * math.log(p) + (n - i) * math.log1p(-p))  # fmt: skip
    odds = p / (1.0 - p)
    total = 0.0
    while True:
        total += t
        if upper:
            if i == n:
                break
            t *= (n - i) / (i + 1) * odds
            i += 1
        else:
            if i == 0:
                break
            t *= i / ((n - i + 1) * odds)
            i -= 1
        if t <= total * 1e-15:  # negligible (or underflowed: the rest is smaller still)
            break
    return min(total, 1.0) if upper else max(0.0, 1.0 - total)


@dataclass
class Cusum:
    """Binomial CUSUM on bad counts: p0 = the error budget, p1 = 10x it, alarm at ``h``.

    The onset estimate is the last time the statistic was 0 before it rose.
    """

    p0: float
    p1: float
    h: float = 8.0
    s: float = 0.0
    zero_at_ms: int | None = None
    onset_ms: int | None = None  # set while in alarm

    def update(self, bad: int, total: int, tick_ms: int) -> bool:
        """Add one tick; return True when the alarm starts at this tick."""
        if self.s == 0.0:
            self.zero_at_ms = tick_ms
        step = bad * math.log(self.p1 / self.p0) + (total - bad) * math.log(
            (1 - self.p1) / (1 - self.p0)
        )
        self.s = max(0.0, self.s + step)
        if self.s == 0.0:
            self.onset_ms = None
            return False
        if self.onset_ms is None and self.s >= self.h:
            self.onset_ms = self.zero_at_ms
            return True
        return False


def timing_weight(onset_ms: int, deploy_ms: int, scale_ms: int = 1_800_000) -> float:
    """Prior weight of a deploy for an onset: deploys in [onset - 60 min, onset + 2 min]."""
    lag = onset_ms - deploy_ms
    if lag < -120_000 or lag > 3_600_000:
        return 0.0
    return math.exp(-max(lag, 0) / scale_ms)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # ATTRIBUTED | SUSPECTED | CLEARED | INCONCLUSIVE | ...
    confidence: float
    decision_eta_s: float | None = None  # for INCONCLUSIVE: time until enough evidence


CHANGE_PRIOR: Final = 0.68  # share of outages caused by binary or config pushes


# The new version's bad count against the hour before: the test changes only when a bad
# event comes, so it has at most MIN_BAD_EVENTS looks that matter per deploy and SLO; at
# this level a thousand judged deploys a day give one false witness in ten days or fewer.
REFERENCE_ALPHA: Final = 0.00001


def split_verdict(
    test: VersionSplitTest,
    bad_rate_per_s: float,
    reference: tuple[int, int] | None = None,
    dispersion: float = 1.0,
    suspected: bool = False,
) -> Verdict:
    """The verdict the version split supports, with ``reference`` (the SLO's (bad, total)
    before the deploy, when known, and the ``dispersion`` of its counts) as its second
    witness while the split has few events.

    The posterior of "this deploy is harmful" starts at the change prior and is
    updated with the harm e-value (a valid bound on the Bayes factor), clipped.
    A deploy becomes SUSPECTED when the evidence leans to harm (e > 1); once
    ``suspected``, it stays so while harm is the likelier (posterior >= 0.5, e >= 0.47):
    an e-value wavering about 1 would otherwise publish a verdict change per bad event.
    """
    if test.e_clear >= E_THRESHOLD:
        return Verdict("CLEARED", 1 - 1 / test.e_clear)
    if test.bad_events < MIN_BAD_EVENTS and not beyond_reference(test, reference, dispersion):
        missing = MIN_BAD_EVENTS - test.bad_events
        eta = missing / bad_rate_per_s if bad_rate_per_s > 0 else None
        return Verdict("INCONCLUSIVE", 0.0, eta)
    e = min(test.e_harm, 1e6)
    odds = CHANGE_PRIOR / (1 - CHANGE_PRIOR) * e
    posterior = odds / (1 + odds)
    if posterior >= 0.9 and test.e_harm >= E_THRESHOLD:
        return Verdict("ATTRIBUTED", posterior)
    if posterior >= 0.5 and (test.e_harm > 1.0 or suspected):
        return Verdict("SUSPECTED", posterior)
    return Verdict("INCONCLUSIVE", posterior, None)


def beyond_reference(
    test: VersionSplitTest, reference: tuple[int, int] | None, dispersion: float = 1.0
) -> bool:
    """Is the evidence enough with fewer than ``MIN_BAD_EVENTS`` split bad events? It is
    when the hour before the deploy adds what is missing and the new version surely fails
    more often than the service did then (exact binomial on counts shrunk by the hour's
    ``dispersion``: counts vary more than a binomial's). A small canary's first few bad
    events, all on the new version, then decide in minutes instead of waiting for ten: the
    split still rules out a cause shared by both versions, the hour before that the new
    version's failures are the service's everyday rate."""
    if reference is None or not reference[1] or test.bad_new == 0:
        return False
    bad, total = reference
    if bad + test.bad_events < MIN_BAD_EVENTS:
        return False
    rate = max(bad, 1) / total
    bad_new, total_new = round(test.bad_new / dispersion), round(test.total_new / dispersion)
    return binomial_upper_tail(bad_new, total_new, rate) <= REFERENCE_ALPHA


@dataclass(frozen=True)
class Candidate:
    deploy_id: str
    started_ms: int
    verdict: str | None  # the deploy's own verdict (version split or before/after), if any
    hops: int = 0  # 0: the SLO's service; 1: a service it calls; "infra" changes count as 1


@dataclass(frozen=True)
class EpisodeVerdict:
    verdict: str  # ATTRIBUTED | SUSPECTED | AMBIGUOUS | EXTERNAL | INCONCLUSIVE
    confidence: float
    deploy_id: str | None
    evidence: dict[str, Any]


def rate_rose(
    pre: tuple[int, int], post: tuple[int, int], factor: float = 1.0
) -> tuple[float, float]:
    """(post/pre bad-rate ratio, exact one-sided p-value that it rose no more than
    ``factor`` times), conditional on the bad events of both periods."""
    (pre_bad, pre_total), (post_bad, post_total) = pre, post
    ratio = ((post_bad + 0.5) / (post_total + 0.5)) / ((pre_bad + 0.5) / (pre_total + 0.5))
    weighted = factor * post_total
    share = weighted / (pre_total + weighted) if pre_total + weighted else 0.0
    return ratio, binomial_upper_tail(post_bad, pre_bad + post_bad, share)


def bayes_factor_bound(p: float) -> float:
    """The largest Bayes factor a p-value can support (Sellke, Bayarri and Berger)."""
    if p <= 0.0:
        return 1e6
    if p >= 1 / math.e:
        return 1.0
    return min(1.0 / (-math.e * p * math.log(p)), 1e6)


Counts = tuple[int, int]  # (bad, total)


class ControlShift(NamedTuple):
    """How the controls moved between "before" and "after"."""

    usable: int  # at least 100 events before and 50 after
    degraded: int  # rose on their own (see ``control_shift``)
    factor: float  # how much the degraded ones rose together (1 if none)
    pooled_rose: bool  # all usable controls summed rose significantly

    @property
    def shared(self) -> bool:
        """Something outside the change moved too: a control on its own, or the controls
        pooled (each too quiet to show it alone)."""
        return self.degraded >= 1 or self.pooled_rose


def degraded_controls(
    controls: Iterable[tuple[Counts, Counts]], min_ratio: float
) -> tuple[int, int]:
    """(usable, degraded) among controls' (before, after) counts."""
    shift = control_shift(controls, min_ratio)
    return shift.usable, shift.degraded


def _rose(before: Counts, after: Counts, min_ratio: float, alpha: float) -> bool:
    ratio, p = rate_rose(before, after)
    return ratio >= min_ratio and p <= alpha and after[0] >= MIN_DEGRADED_BAD


def _summed(pairs: Iterable[tuple[Counts, Counts]]) -> tuple[Counts, Counts]:
    """(before, after) of several controls added up."""
    b_bad = b_total = a_bad = a_total = 0
    for (bb, bt), (ab, at) in pairs:
        b_bad, b_total, a_bad, a_total = b_bad + bb, b_total + bt, a_bad + ab, a_total + at
    return (b_bad, b_total), (a_bad, a_total)


def control_shift(controls: Iterable[tuple[Counts, Counts]], min_ratio: float) -> ControlShift:
    """How controls' (before, after) counts moved: usable with at least 100 events before and
    50 after, degraded when their bad rate rose ``min_ratio`` times, p <= 1 % over the
    number of controls, on at least ``MIN_DEGRADED_BAD`` bad events (two unlucky requests
    are not an outage). ``factor`` is the rise a change on the service must exceed to
    explain anything (difference in differences); the pooled test sees a shared rise that
    each quiet control alone cannot."""
    kept = [(b, a) for b, a in controls if b[1] >= 100 and a[1] >= 50]
    # Each control is one more chance of a fluke: Bonferroni over them.
    alpha = ALPHA / max(len(kept), 1)
    rose = [(b, a) for b, a in kept if _rose(b, a, min_ratio, alpha)]
    factor = rate_rose(*_summed(rose))[0] if rose else 1.0
    pooled_rose = bool(kept) and _rose(*_summed(kept), min_ratio, ALPHA)
    return ControlShift(len(kept), len(rose), factor, pooled_rose)


def rise_profile(steps: Sequence[Counts], base_rate: float) -> list[float]:
    """Per step, the log-likelihood ratio of a rise above ``base_rate`` from that step on
    (at the suffix's own rate) against none: the change-point profile of a CUSUM run
    backwards. 0 where the suffix did not rise."""
    base_rate = max(base_rate, 1e-6)
    profile = [0.0] * len(steps)
    bad = total = 0
    for i in range(len(steps) - 1, -1, -1):
        bad += steps[i][0]
        total += steps[i][1]
        if total == 0 or bad == 0 or bad / total <= base_rate:
            continue
        rate = bad / total
        llr = bad * math.log(rate / base_rate)
        if rate < 1.0:
            llr += (total - bad) * math.log((1 - rate) / (1 - base_rate))
        profile[i] = llr
    return profile


def rise_start(steps: Sequence[Counts], base_rate: float) -> int:
    """Index of the step where a rise above ``base_rate`` most likely began: the start of
    the suffix whose bad rate is furthest, in log-likelihood, from the base rate. 0 when
    nothing rose."""
    profile = rise_profile(steps, base_rate)
    best, best_llr = 0, 0.0
    for i in range(len(profile) - 1, -1, -1):
        if profile[i] > best_llr:
            best, best_llr = i, profile[i]
    return best


# A rise may have begun at a step when its profile log-likelihood is within this of the
# best's: the 95 % likelihood interval of a change point (chi-square, 1 df, halved).
RISE_INTERVAL_LLR: Final = 1.92


def rise_may_start_first(steps: Sequence[Counts], base_rate: float) -> bool:
    """Whether the first step is in the likelihood interval of where the rise began: a rise
    located a few steps later may have begun with the first as well."""
    profile = rise_profile(steps, base_rate)
    return bool(profile) and profile[0] > 0.0 and max(profile) - profile[0] <= RISE_INTERVAL_LLR


def _poisson_ll(bad: float, expected: float) -> float:
    """Log-likelihood of ``bad`` events where ``expected`` were due (the constant left out)."""
    return bad * math.log(expected) - expected if expected > 0 else 0.0


def ramp_over_step_llr(steps: Sequence[Counts], base_rate: float) -> float:
    """How much better, in log-likelihood, a rate ramping up linearly from the first step
    explains ``steps`` than the best single step up after the first: a gradual onset that
    began with a change against an incident that began later. Poisson counts; 0 or less
    when the step explains them as well."""
    base_rate = max(base_rate, 1e-6)
    xs = [i + 0.5 for i in range(len(steps))]
    bads = [float(b) for b, _ in steps]
    dues = [base_rate * t for _, t in steps]
    if len(steps) < 3 or sum(bads) <= sum(dues):
        return 0.0

    def slope_score(slope: float) -> float:  # d(log-likelihood)/d(slope), decreasing
        return sum(b * x / (1 + slope * x) - d * x for x, b, d in zip(xs, bads, dues, strict=True))

    lo, hi = 0.0, 1.0
    while slope_score(hi) > 0 and hi < 1e6:
        hi *= 2
    for _ in range(60):  # bisection: the score is monotone in the slope
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope_score(mid) > 0 else (lo, mid)
    ramp = sum(_poisson_ll(b, d * (1 + lo * x)) for x, b, d in zip(xs, bads, dues, strict=True))
    best_step = -math.inf
    for tau in range(1, len(steps)):
        calm = sum(_poisson_ll(b, d) for b, d in zip(bads[:tau], dues[:tau], strict=True))
        ratio = max(sum(bads[tau:]) / sum(dues[tau:]), 1.0) if sum(dues[tau:]) else 1.0
        risen = sum(_poisson_ll(b, d * ratio) for b, d in zip(bads[tau:], dues[tau:], strict=True))
        best_step = max(best_step, calm + risen)
    return ramp - best_step


HOP_PRIOR: Final = 0.5  # a callee's deploy is half as likely a cause as the service's own
EXTERNAL_MIN_DEGRADED: Final = 2  # controls degraded with the SLO: a shared cause


def episode_verdict(
    onset_ms: int,
    candidates: list[Candidate],
    pre: Counts,
    post: Counts,
    controls: list[tuple[Counts, Counts]],
) -> EpisodeVerdict:
    """Fuse the evidence on one budget-drop episode of one SLO (CORRELATION.md "Verdict").

    The episode itself only establishes *that* the bad rate rose (its onset is chosen by
    the data, so a before/after test anchored there proves nothing about a deploy). *Which*
    change did it comes from each candidate's own tests, anchored at the deploy: the version
    split, or before/after around the deploy with controls. Timing (onset vs deploy) and hops
    in the call graph rank the candidates; controls degraded at the same time say external.

    ``pre``/``post``: (bad, total) of the SLO in the hour before the onset and since;
    ``controls``: the same for services that are neither callers nor callees of the SLO's.
    """
    evidence: dict[str, Any] = {"onset_ms": onset_ms, "pre": list(pre), "post": list(post)}
    usable, degraded = degraded_controls(controls, min_ratio=3.0)
    evidence["controls"] = {"usable": usable, "degraded": degraded}
    weighted = [(c, timing_weight(onset_ms, c.started_ms) * HOP_PRIOR**c.hops) for c in candidates]
    weighted = sorted(((c, w) for c, w in weighted if w > 0), key=lambda cw: -cw[1])
    evidence["candidates"] = [c.deploy_id for c, _ in weighted]
    attributed = [(c, w) for c, w in weighted if c.verdict == "ATTRIBUTED"]
    if attributed:
        best, _ = attributed[0]
        method = "propagated" if best.hops else "deploy_test"
        return EpisodeVerdict("ATTRIBUTED", 0.95, best.deploy_id, evidence | {"method": method})
    if degraded >= EXTERNAL_MIN_DEGRADED or (usable and degraded / usable >= 0.5):
        # Services unrelated to this one degraded together: the cause is outside the deploys.
        return EpisodeVerdict("EXTERNAL", 0.9, None, evidence | {"method": "controls"})
    if not weighted:
        return EpisodeVerdict("EXTERNAL", 0.8, None, evidence | {"method": "no_candidate"})
    open_candidates = [(c, w) for c, w in weighted if c.verdict != "CLEARED"]
    if not open_candidates:
        return EpisodeVerdict("EXTERNAL", 0.8, None, evidence | {"method": "all_cleared"})
    best, weight = open_candidates[0]
    share = weight / sum(w for _, w in open_candidates)
    evidence["method"] = "timing"
    if len(open_candidates) > 1 and open_candidates[1][1] >= 0.85 * weight:
        return EpisodeVerdict("AMBIGUOUS", share, best.deploy_id, evidence)
    if best.verdict == "SUSPECTED":
        return EpisodeVerdict("SUSPECTED", share * CHANGE_PRIOR, best.deploy_id, evidence)
    return EpisodeVerdict("INCONCLUSIVE", share * CHANGE_PRIOR, best.deploy_id, evidence)
