"""Budget state and active alerts to Redis: absolute values, one pipeline per flush.

Writes are buffered as the latest value per key, so an outage costs memory
bounded by the number of SLOs, never by the number of updates; the next
successful flush writes the newest state (idempotent absolutes).
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


class RedisStateSink:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._budgets: dict[str, dict[str, str]] = {}
        self._budget_at: dict[str, int] = {}  # event time of each SLO's newest state
        self._alerts: dict[str, dict[str, str] | None] = {}  # None: delete (resolved)
        self._index: set[str] = set()
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
        """Write everything buffered in one pipeline; keep it for the next try on failure."""
        if not self._budgets and not self._alerts:
            return True
        started = time.perf_counter()
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key, mapping in self._budgets.items():
                    pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                for key, alert in self._alerts.items():
                    pipe.delete(key)
                    if alert is not None:
                        pipe.hset(key, mapping=alert)  # type: ignore[arg-type]
                if self._index:
                    pipe.sadd(conventions.redis_key(self.namespace, "slos"), *self._index)
                pipe.execute()
        except redis.RedisError as exc:
            self.failures += 1
            log.warning("redis flush failed, keeping %d keys for the next try: %s",
                        self.pending, exc)  # fmt: skip
            return False
        log.debug("redis flush keys=%d duration_ms=%.1f", self.pending,
                  (time.perf_counter() - started) * 1000)  # fmt: skip
        self._budgets.clear()
        self._alerts.clear()
        self._index.clear()
        return True
