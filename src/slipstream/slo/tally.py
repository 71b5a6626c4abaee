"""Counting accepted request events straight from their decoded fields, per SLO and step.

The per-event path builds a ``Request`` and asks each SLO's ``Sli.is_bad``; for an SDK
batch of a hundred events that is most of the worker's time. Here each service's SLIs
are precomputed once from the catalogue (a status-code table and latency thresholds,
as a bit mask of the SLOs that call an event bad), and events are grouped as
``PartitionEngine.absorb_many`` groups them: runs of one service in one ``FAST_MS`` step
of event time, counted per version. The engine then absorbs each run's counts per SLO,
in the same order and with the same arguments as ``absorb_many`` would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from slipstream.slo.catalogue import Catalogue, Slo

# Inside a 10 s tick an alert may fire at this step of event time (see engine.py); counts
# are grouped per step so that a run is evaluated exactly as its events one by one.
FAST_MS: Final = 100
STATUS_CODES: Final = 600  # valid status codes are 100..599 (events.py)


@dataclass(frozen=True)
class ServiceSlis:
    """One service's SLOs and how each classifies an event, bit ``i`` for ``slos[i]``."""

    slos: tuple[Slo, ...]
    bad_by_status: tuple[int, ...]  # status code -> mask of the status-based SLOs it fails
    latency: tuple[tuple[float, int], ...]  # (threshold_ms, bit) of the latency SLOs


def service_slis(slos: tuple[Slo, ...]) -> ServiceSlis:
    by_status = [0] * STATUS_CODES
    latency = []
    for i, slo in enumerate(slos):
        sli = slo.sli
        if sli.kind == "latency":  # as Sli.is_bad: latency SLIs look at nothing else
            assert sli.threshold_ms is not None
            latency.append((sli.threshold_ms, 1 << i))
            continue
        for lo, hi in sli.bad_status:
            for code in range(max(lo, 0), min(hi + 1, STATUS_CODES)):
                by_status[code] |= 1 << i
    return ServiceSlis(slos, tuple(by_status), tuple(latency))


def catalogue_slis(catalogue: Catalogue) -> dict[str, ServiceSlis]:
    """Per service with SLOs; a service missing here counts as unknown, as in the engine."""
    return {name: service_slis(s.slos) for name, s in catalogue.services.items() if s.slos}


# ``Tally.add``: service, version, event time ms, status code, latency ms, callee.
AddEvent = Callable[[str, str | None, int, int, float, str | None], None]


@dataclass
class Run:
    """Events of one service in one ``FAST_MS`` step: per version, [total, bad per SLO,
    bad naming a callee per SLO]."""

    slos: tuple[Slo, ...]
    tick: int
    ts_ms: int  # the newest event time in the run
    versions: dict[str | None, list[int]] = field(default_factory=dict)


@dataclass
class Tally:
    """The accepted requests of one message, grouped in runs (in order of their first
    event) for ``PartitionEngine.absorb_tallied``."""

    slis: dict[str, ServiceSlis]
    runs: list[Run] = field(default_factory=list)
    accepted: int = 0
    unknown: int = 0  # of them, events of a service without SLOs
    _open: dict[str, Run] = field(default_factory=dict)  # service -> its latest run

    def add(
        self,
        service: str,
        version: str | None,
        ts_ms: int,
        status: int,
        latency_ms: float,
        callee: str | None = None,
    ) -> None:
        """Count one valid event (``status`` already checked to be 100..599)."""
        self.accepted += 1
        slis = self.slis.get(service)
        if slis is None:
            self.unknown += 1
            return
        tick = ts_ms // FAST_MS
        run = self._open.get(service)
        if run is None or run.tick != tick:
            run = self._open[service] = Run(slis.slos, tick, ts_ms)
            self.runs.append(run)
        elif ts_ms > run.ts_ms:
            run.ts_ms = ts_ms
        counts = run.versions.get(version)
        if counts is None:
            counts = run.versions[version] = [0] * (2 * len(slis.slos) + 1)
        counts[0] += 1
        bad = slis.bad_by_status[status]
        for threshold, bit in slis.latency:
            if latency_ms > threshold:
                bad |= bit
        if bad:
            _count_bad(counts, bad, 1)
            if callee is not None:
                _count_bad(counts, bad, 1 + len(slis.slos))


def _count_bad(counts: list[int], mask: int, first: int) -> None:
    """One more in ``counts[first + i]`` for each SLO ``i`` whose bit is set (rare: most
    events are good)."""
    i = first
    while mask:
        if mask & 1:
            counts[i] += 1
        mask >>= 1
        i += 1
