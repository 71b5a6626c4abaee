"""What slipstream can read out of a PromQL SLI query.

slipstream does not run queries: it classifies request events itself. A spec written for
Prometheus carries the SLI as PromQL, and two shapes of it map onto slipstream's SLIs:

- a status-code matcher on the error (or good) series, ``code=~"5.."`` or
  ``status!~"5..|429"``: an availability SLI with those codes bad;
- a histogram bucket bound, ``..._seconds_bucket{le="0.3"}``: a latency SLI with that
  threshold.

Anything else cannot be expressed, and the importer says so rather than guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATUS_MATCHER = re.compile(
    r'\b(?:code|status|status_code|http_status|response_code)\s*(=~|!~|=|!=)\s*"([^"]*)"'
)
_LE_MATCHER = re.compile(r'\ble\s*=\s*"([0-9.eE+-]+)"')
_METRIC_UNIT = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)_bucket\b")


@dataclass(frozen=True)
class SliGuess:
    sli: dict[str, object] | None  # the catalogue's sli mapping, or None
    reason: str  # why not, when None


def status_ranges(pattern: str) -> list[list[int]] | None:
    """``5..`` -> [[500, 599]]; ``(5..|429)`` -> [[500, 599], [429, 429]]; None if the
    regex is not a list of codes and code classes."""
    ranges: list[list[int]] = []
    for part in pattern.strip("()").split("|"):
        alt = part.strip()
        if re.fullmatch(r"[1-5](\.\.|xx|\.\*|\[0-9\]\[0-9\]|\\d\\d|\\d\{2\})", alt):
            ranges.append([int(alt[0]) * 100, int(alt[0]) * 100 + 99])
        elif re.fullmatch(r"[1-5][0-9]{2}", alt):
            ranges.append([int(alt), int(alt)])
        else:
            return None
    return ranges or None


def _complement(ranges: list[list[int]]) -> list[list[int]]:
    """The codes 100..599 not in ``ranges``."""
    out, low = [], 100
    for a, b in sorted(ranges):
        if a > low:
            out.append([low, a - 1])
        low = max(low, b + 1)
    if low <= 599:
        out.append([low, 599])
    return out


def guess_sli(*, bad: str | None = None, good: str | None = None) -> SliGuess:
    """The SLI a pair of queries describes (either may be missing)."""
    for query in (bad, good):
        if not query:
            continue
        le = _LE_MATCHER.search(query)
        if le:
            bound = float(le.group(1))
            metric = _METRIC_UNIT.search(query)
            unit_ms = (
                1.0 if metric and re.search(r"_(milliseconds|ms)$", metric.group(1)) else 1000.0
            )
            return SliGuess({"kind": "latency", "threshold_ms": round(bound * unit_ms, 3)}, "")
    for query, is_bad in ((bad, True), (good, False)):
        if not query:
            continue
        match = _STATUS_MATCHER.search(query)
        if not match:
            continue
        op, pattern = match.groups()
        codes = status_ranges(pattern) if op in ("=~", "!~") else status_ranges(pattern.strip())
        if codes is None:
            return SliGuess(None, f"status matcher {match.group(0)!r} is not a list of codes")
        # Bad when the bad query selects them, or the good query excludes them.
        selects = op in ("=~", "=")
        bad_codes = codes if selects == is_bad else _complement(codes)
        if not bad_codes:
            return SliGuess(None, f"status matcher {match.group(0)!r} leaves no bad code")
        return SliGuess({"kind": "availability", "bad_status": bad_codes}, "")
    return SliGuess(
        None,
        "no status-code matcher and no histogram bucket bound (le) in the "
        "queries: slipstream classifies request events by status or latency",
    )
