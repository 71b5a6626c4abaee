"""The multi-window, multi-burn-rate alert policy of the SRE Workbook, derived from the period."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

# The windows every SLO reports burn rates for (DESIGN.md's `burn_rates` keys).
REPORTED_WINDOWS_MS: Final = {
    "5m": 5 * MINUTE_MS, "30m": 30 * MINUTE_MS, "1h": HOUR_MS, "2h": 2 * HOUR_MS,
    "6h": 6 * HOUR_MS, "1d": DAY_MS, "3d": 3 * DAY_MS,
}  # fmt: skip


def burn_rate_factor(budget_fraction: float, period_ms: int, long_window_ms: int) -> float:
    """The burn rate that spends ``budget_fraction`` of the period's budget in the long window."""
    return budget_fraction * period_ms / long_window_ms


@dataclass(frozen=True)
class AlertTier:
    name: str
    severity: str  # page | ticket
    long_window_ms: int
    short_window_ms: int
    factor: float
    budget_fraction: float | None = None  # the budget spent when it fires, if derived


# name, severity, budget fraction, long window; short = long / 12 (Workbook table 5-8).
DEFAULT_TIERS: Final = (
    ("page-1h", "page", 0.02, HOUR_MS),
    ("page-6h", "page", 0.05, 6 * HOUR_MS),
    ("ticket-1d", "ticket", 0.10, DAY_MS),
    ("ticket-3d", "ticket", 0.10, 3 * DAY_MS),
)


def default_tiers(period_days: int) -> tuple[AlertTier, ...]:
    period_ms = period_days * DAY_MS
    return tuple(
        AlertTier(
            name,
            severity,
            long_ms,
            long_ms // 12,
            burn_rate_factor(fraction, period_ms, long_ms),
            fraction,
        )
        for name, severity, fraction, long_ms in DEFAULT_TIERS
    )


def detection_time_ms(error_ratio: float, objective: float, tier: AlertTier) -> float:
    """How long a constant ``error_ratio`` takes to trip ``tier`` from a clean start.

    The long window must reach the factor (``factor · ε · L / e``), and the short
    window cannot trip sooner than its own ``factor · ε · S / e``.
    """
    budget = 1.0 - objective
    long_ms = tier.factor * budget * tier.long_window_ms / error_ratio
    short_ms = tier.factor * budget * tier.short_window_ms / error_ratio
    return max(long_ms, short_ms)
