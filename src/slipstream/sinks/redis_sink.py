"""Budget state and active alerts to Redis: absolute values, one pipeline per flush.

Writes are buffered as the latest value per key, so an outage costs memory
bounded by the number of SLOs, never by the number of updates; the next
successful flush writes the newest state (idempotent absolutes).

A Redis that comes back after an outage, or restarts between two flushes (its
``run_id`` changes), may have lost what was written before: the next flush then
writes the whole current state again, not just what changed, so Redis converges
within one flush interval of being reachable.
"""

from __future__ import annotations

import json
import logging
import time

import redis

from slipstream import conventions
from slipstream.sinks.records import redis_budget_hash
from slipstream.slo.alerts import Transition
from slipstream.slo.deploys import Impact
from slipstream.slo.engine import BudgetSnapshot, PolicyChange

log = logging.getLogger(__name__)

# Keys of the known state kept for a rewrite (budgets, deploy verdicts, policies).
KNOWN_KEYS_MAX = 200_000


class RedisStateSink:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._budgets: dict[str, dict[str, str]] = {}
        self._budget_at: dict[str, int] = {}  # event time of each SLO's newest state
        self._alerts: dict[str, dict[str, str] | None] = {}  # None: delete (resolved)
        self._index: set[str] = set()
        # The whole current state, written again after an outage or a Redis restart.
        self._known: dict[str, dict[str, str]] = {}
        self._known_alerts: dict[str, dict[str, str]] = {}
        self._known_index: set[str] = set()
        self._resync = False
        self._run_id: str | None = None
        self.failures = 0

    @classmethod
    def from_url(cls, url: str, namespace: str) -> RedisStateSink:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), namespace)

    def add_snapshot(self, snapshot: BudgetSnapshot) -> None:
        key = conventions.redis_budget_key(self.namespace, snapshot.service, snapshot.slo)
        if self._budget_at.get(key, snapshot.updated_at_ms) > snapshot.updated_at_ms:
            return  # an older state (a transition's, say) never replaces a newer one
        self._budget_at[key] = snapshot.updated_at_ms
        self._budgets[key] = redis_budget_hash(snapshot)
        self._index.add(f"{snapshot.service}/{snapshot.slo}")

    def add_transition(self, t: Transition, snapshot: BudgetSnapshot) -> None:
        self.add_snapshot(snapshot)
        key = conventions.redis_key(self.namespace, "alert", t.service, t.slo)
        if t.state == "resolved":
            self._alerts[key] = None
        else:
            self._alerts[key] = {
                "alert_id": t.alert_id, "state": t.state, "severity": t.severity,
                "tier": t.tier.name, "opened_at_ms": str(t.opened_at_ms),
                "event_time_ms": str(t.event_time_ms),
                "burn_rate_long": repr(t.burn_rate_long),
                "burn_rate_short": repr(t.burn_rate_short),
            }  # fmt: skip

    def add_impact(self, impact: Impact) -> None:
        d = impact.deploy
        key = conventions.redis_key(self.namespace, "deploy", d.deploy_id, impact.slo)
        self._budgets[key] = {
            "deploy_id": d.deploy_id, "service": d.service, "version": d.version,
            "slo": impact.slo, "verdict": impact.verdict.verdict,
            "confidence": repr(impact.verdict.confidence),
            "budget_consumed_ratio": repr(impact.budget_consumed_ratio),
            "decided_at_ms": str(impact.decided_at_ms),
            "evidence": json.dumps(impact.evidence, sort_keys=True),
        }  # fmt: skip

    def add_policy(self, change: PolicyChange) -> None:
        key = conventions.redis_key(self.namespace, "policy", change.service)
        self._budgets[key] = {
            "service": change.service,
            "frozen": "1" if change.action == "freeze" else "0",
            "reason": change.reason,
            "slo": change.slo or "",
            "since_ms": str(change.event_time_ms),
            "budget_remaining_ratio": repr(change.budget_remaining_ratio),
        }

    @property
    def pending(self) -> int:
        return len(self._budgets) + len(self._alerts)

    def flush(self) -> bool:
        """Write everything buffered in one pipeline; keep it for the next try on failure.
        After a failure or a Redis restart, write the whole known state instead."""
        self._remember()
        started = time.perf_counter()
        try:
            run_id = self._server_run_id()
            if self._run_id is not None and run_id != self._run_id:
                self._resync = True  # restarted since the last flush: it may be empty
            if not self._resync and not self._budgets and not self._alerts:
                self._run_id = run_id
                return True
            resync = self._resync
            budgets = self._known if resync else self._budgets
            alerts: dict[str, dict[str, str] | None] = (
                dict(self._known_alerts) if resync else self._alerts
            )
            index = self._known_index if resync else self._index
            with self.client.pipeline(transaction=False) as pipe:
                for key, mapping in budgets.items():
                    pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                for key, alert in alerts.items():
                    pipe.delete(key)
                    if alert is not None:
                        pipe.hset(key, mapping=alert)  # type: ignore[arg-type]
                if index:
                    pipe.sadd(conventions.redis_key(self.namespace, "slos"), *index)
                pipe.execute()
        except redis.RedisError as exc:
            self.failures += 1
            self._resync = True
            log.warning("redis flush failed, keeping %d keys for the next try: %s",
                        len(self._known) + len(self._known_alerts), exc)  # fmt: skip
            return False
        if resync:
            log.info("redis: wrote the whole state again (%d keys)", len(budgets) + len(alerts))
        log.debug("redis flush keys=%d duration_ms=%.1f", self.pending,
                  (time.perf_counter() - started) * 1000)  # fmt: skip
        self._run_id = run_id
        self._resync = False
        self._budgets.clear()
        self._alerts.clear()
        self._index.clear()
        return True

    def _server_run_id(self) -> str:
        """Redis's ``run_id`` (new at every start); "" where INFO is not allowed (an ACL
        user without +info: a restart is then noticed only when a flush fails)."""
        try:
            return str(self.client.info("server").get("run_id", ""))
        except redis.ResponseError:
            return ""

    def _remember(self) -> None:
        """Fold what is buffered into the known state (bounded: one entry per key)."""
        self._known.update(self._budgets)
        for key, alert in self._alerts.items():
            if alert is None:
                self._known_alerts.pop(key, None)
            else:
                self._known_alerts[key] = alert
        self._known_index |= self._index
        while len(self._known) > KNOWN_KEYS_MAX:  # the keys first written go first
            del self._known[next(iter(self._known))]
