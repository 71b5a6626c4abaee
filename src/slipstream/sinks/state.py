"""The latest state per SLO, in memory: what the Prometheus collector exports at scrape time.

Shipped as real code (not only a test double): the worker keeps one and the
collector reads it; tests read it too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from slipstream.slo.alerts import Transition
from slipstream.slo.engine import BudgetSnapshot


@dataclass(frozen=True)
class SloState:
    snapshot: BudgetSnapshot
    alert: Transition | None  # the open incident's last transition, None when none is open


class InMemoryStateSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes run on the metrics server's thread
        self._states: dict[tuple[str, str], SloState] = {}
        self.transitions: list[Transition] = []

    def add_snapshot(self, snapshot: BudgetSnapshot) -> None:
        key = (snapshot.service, snapshot.slo)
        with self._lock:
            old = self._states.get(key)
            self._states[key] = SloState(snapshot, old.alert if old else None)

    def add_transition(self, transition: Transition, snapshot: BudgetSnapshot) -> None:
        key = (transition.service, transition.slo)
        alert = None if transition.state == "resolved" else transition
        with self._lock:
            self._states[key] = SloState(snapshot, alert)
            self.transitions.append(transition)

    def forget(self, keys: set[tuple[str, str]]) -> None:
        """Drop SLOs this worker no longer owns (their partition moved to another worker)."""
        with self._lock:
            for key in keys:
                self._states.pop(key, None)

    def states(self) -> list[SloState]:
        with self._lock:
            return list(self._states.values())

    def flush(self) -> None:
        """Nothing to send: the state is read where it lies."""
