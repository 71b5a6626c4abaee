"""The latest state per SLO, in memory: what the Prometheus collector exports at scrape time.

Shipped as real code (not only a test double): the worker keeps one and the
collector reads it; tests read it too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from slipstream.slo.alerts import Transition
from slipstream.slo.deploys import Impact
from slipstream.slo.engine import BudgetSnapshot
from slipstream.slo.events import Deploy

MAX_DEPLOY_SERIES = 200


@dataclass(frozen=True)
class SloState:
    snapshot: BudgetSnapshot
    alert: Transition | None  # the open incident's last transition, None when none is open


class InMemoryStateSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes run on the metrics server's thread
        self._states: dict[tuple[str, str], SloState] = {}
        self.transitions: list[Transition] = []
        # The newest verdicts and deploys, bounded: they become labelled series.
        self._impacts: dict[tuple[str, str], Impact] = {}
        self._deploys: dict[str, Deploy] = {}

    def add_snapshot(self, snapshot: BudgetSnapshot) -> None:
        key = (snapshot.service, snapshot.slo)
        with self._lock:
            old = self._states.get(key)
            if old is not None and old.snapshot.updated_at_ms > snapshot.updated_at_ms:
                return  # an older state (a transition's, say) never replaces a newer one
            self._states[key] = SloState(snapshot, old.alert if old else None)

    def add_transition(self, transition: Transition, snapshot: BudgetSnapshot) -> None:
        key = (transition.service, transition.slo)
        alert = None if transition.state == "resolved" else transition
        with self._lock:
            old = self._states.get(key)
            if old is not None and old.snapshot.updated_at_ms > snapshot.updated_at_ms:
                snapshot = old.snapshot
            self._states[key] = SloState(snapshot, alert)
            self.transitions.append(transition)

    def add_impact(self, impact: Impact) -> None:
        with self._lock:
            self._impacts[(impact.deploy.deploy_id, impact.slo)] = impact
            while len(self._impacts) > MAX_DEPLOY_SERIES:
                del self._impacts[next(iter(self._impacts))]

    def add_deploy(self, deploy: Deploy) -> None:
        with self._lock:
            self._deploys.pop(deploy.deploy_id, None)
            self._deploys[deploy.deploy_id] = deploy
            while len(self._deploys) > MAX_DEPLOY_SERIES:
                del self._deploys[next(iter(self._deploys))]

    def impacts(self) -> list[Impact]:
        with self._lock:
            return list(self._impacts.values())

    def deploys(self) -> list[Deploy]:
        with self._lock:
            return list(self._deploys.values())

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
