"""Dose-response: which of overlapping changes explains a service's bad rate (CORRELATION.md).

Each candidate change serves a fraction of its service's traffic over time (its rollout
fraction: its *dose*). A change that makes its version fail ``r`` times as often adds
``(r - 1) * fraction`` to its own service's rate ratio; a called service's change adds to
its callers' rate likewise, in proportion to how much of its traffic is on the new
version. So the victim's bad count in a minute ``t`` is Poisson with mean

    a_t * (1 + sum_d theta_d * x_d(t)),   theta_d = r_d - 1 >= 0,

where ``a_t`` is what the minute's traffic fails at the usual rate. The rate is linear in
the fractions, not log-linear: a version mix fails at the traffic-weighted mean of the
versions' rates, so a canary's 5 % of a 10x change adds 0.45, not a factor 10 ** 0.05.

The fractions are step functions, so minutes with the same doses are pooled: the fit runs
on a handful of groups, whatever the span. Candidates whose doses moved together
(collinear) cannot be told apart: each one's own test then fails while their joint test
passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

MAX_ITERATIONS: Final = 100
TOLERANCE: Final = 1e-10


class DoseFit(NamedTuple):
    """The fitted rate ratios and, per candidate, the one-sided likelihood-ratio test that
    it adds nothing once the others explain what they can."""

    ratios: dict[str, float]  # 1 + theta: the bad-rate ratio of the change at full rollout
    p_values: dict[str, float]  # H0 theta_d = 0, the other candidates fitted freely
    joint_p_value: float  # H0 every theta = 0


def fraction_at(phases: Sequence[tuple[int, float]], ts_ms: int) -> float:
    """The rollout fraction at ``ts_ms`` from (timestamp, fraction) phases in time order:
    the latest phase by then, 0 before the first."""
    fraction = 0.0
    for at_ms, value in phases:
        if at_ms > ts_ms:
            break
        fraction = value
    return fraction


def dose_response(
    steps: Sequence[tuple[int, int]],
    doses: Mapping[str, Sequence[float]],
    base_rate: float,
) -> DoseFit:
    """Fit the candidates' rate ratios to ``steps`` ((bad, total) per minute) given each
    candidate's dose per minute and the usual bad rate ``base_rate``."""
    names = list(doses)
    groups: dict[tuple[float, ...], list[float]] = {}
    for i, (bad, total) in enumerate(steps):
        if not total:
            continue
        group = groups.setdefault(tuple(doses[n][i] for n in names), [0.0, 0.0])
        group[0] += bad
        group[1] += total * base_rate
    pooled = [(x, b, a) for x, (b, a) in groups.items() if a > 0]
    size = len(names)
    full, full_ll = _fit(pooled, size, set(range(size)))
    p_values = {}
    for k, name in enumerate(names):
        if full[k] <= 0.0:
            p_values[name] = 1.0
            continue
        _, without_ll = _fit(pooled, size, set(range(size)) - {k})
        p_values[name] = _one_sided_p(full_ll - without_ll)
    joint = (
        1.0
        if not any(full)
        else _chi2_sf(2 * (full_ll - _log_lik(pooled, [0.0] * len(names))), len(names))
    )
    return DoseFit({n: 1.0 + full[k] for k, n in enumerate(names)}, p_values, joint)


def _fit(
    pooled: Sequence[tuple[tuple[float, ...], float, float]], size: int, free: set[int]
) -> tuple[list[float], float]:
    """Maximum-likelihood thetas (>= 0) of the ``free`` candidates, the others at 0: Newton
    steps on the candidates not held at 0 (the log-likelihood is concave), halved until
    they climb, and projected onto theta >= 0. A candidate at 0 whose gradient points
    below 0 stays there."""
    theta = [0.0] * size
    ll = _log_lik(pooled, theta)
    for _ in range(MAX_ITERATIONS):
        grad = [0.0] * size
        hess = [[0.0] * size for _ in range(size)]
        for x, bad, a in pooled:
            mean = 1.0 + sum(t * xk for t, xk in zip(theta, x, strict=True))
            for k in free:
                grad[k] += (bad / mean - a) * x[k]
                for j in free:
                    hess[k][j] += bad * x[k] * x[j] / (mean * mean)
        moving = sorted(k for k in free if theta[k] > 0.0 or grad[k] > 0.0)
        if not moving:
            break
        step = _solve([[hess[k][j] for j in moving] for k in moving], [grad[k] for k in moving])
        scale, improved = 1.0, False
        while scale > 1e-12:
            trial = list(theta)
            for k, d in zip(moving, step, strict=True):
                trial[k] = max(theta[k] + scale * d, 0.0)
            trial_ll = _log_lik(pooled, trial)
            if trial_ll > ll:
                improved = True
                break
            scale /= 2
        if not improved:
            break
        gain, theta, ll = trial_ll - ll, trial, trial_ll
        if gain <= TOLERANCE * max(1.0, abs(ll)):
            break
    return theta, ll


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """x with (matrix + ridge) x = rhs for a small positive semi-definite matrix, by Gaussian
    elimination; the ridge keeps collinear candidates (a singular matrix) solvable."""
    n = len(rhs)
    ridge = 1e-9 * max([1.0, *(matrix[i][i] for i in range(n))])
    m = [
        [*row[:i], row[i] + ridge, *row[i + 1 :], b]
        for i, (row, b) in enumerate(zip(matrix, rhs, strict=True))
    ]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            factor = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= factor * m[col][c]
    x = [0.0] * n
    for r in reversed(range(n)):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def _log_lik(
    pooled: Sequence[tuple[tuple[float, ...], float, float]], theta: Sequence[float]
) -> float:
    """Poisson log-likelihood, less the terms that do not depend on theta."""
    ll = 0.0
    for x, bad, a in pooled:
        lift = sum(t * xk for t, xk in zip(theta, x, strict=True))
        ll += (bad * math.log1p(lift) if bad else 0.0) - a * lift
    return ll


def _one_sided_p(log_lr: float) -> float:
    """P-value of a likelihood ratio for one parameter on its boundary (theta = 0): half a
    chi-square with one degree of freedom (Self and Liang)."""
    return 0.5 * math.erfc(math.sqrt(max(log_lr, 0.0)))


def _chi2_sf(x: float, df: int) -> float:
    """P(chi-square with ``df`` degrees of freedom > ``x``): conservative for parameters on
    their boundary, whose null distribution is a mixture of fewer degrees of freedom."""
    x = max(x, 0.0)
    half = x / 2
    if df % 2 == 0:
        term = total = math.exp(-half)
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return min(total, 1.0)
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(2 * x / math.pi) * math.exp(-half) if x > 0 else 0.0
    for i in range(1, (df + 1) // 2):
        total += term
        term *= x / (2 * i + 1)
    return min(total, 1.0)
