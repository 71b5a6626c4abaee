"""``slipstream gate``: the release gate CI pipelines call, and its recorded override.

Exit 0: releases allowed (not frozen, or frozen under an active override);
1: frozen by the error-budget policy (the reason and numbers are printed);
2: unknown (no state for the service yet, or Redis cannot be asked).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

import redis
from kafka import KafkaProducer
from kafka.errors import KafkaError

from slipstream import conventions
from slipstream.connect import kafka_options, redis_client
from slipstream.schemas.codec import AvroCodec
from slipstream.settings import Settings, mask_url
from slipstream.simulate.scenario import ScenarioError, parse_duration_ms
from slipstream.streams.topics import ensure_topics

EXIT_ALLOWED, EXIT_FROZEN, EXIT_UNKNOWN = 0, 1, 2


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    gate = verbs.add_parser("gate", parents=[common], help="release gate for CI (exit 0/1/2)")
    gate.add_argument("--service", required=True)
    gate.add_argument("--json", action="store_true")
    gate.add_argument(
        "--override",
        action="store_true",
        help="allow releases despite a freeze (needs --reason and --actor)",
    )
    gate.add_argument("--reason", help="why the override is needed")
    gate.add_argument("--actor", help="who or what overrides (recorded on slo.policy)")
    gate.add_argument("--for", dest="duration", default="2h", help="override length (2h)")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def gate_decision(client: redis.Redis, namespace: str, service: str) -> tuple[int, dict[str, Any]]:
    policy: dict[str, str] = client.hgetall(conventions.redis_key(namespace, "policy", service))  # type: ignore[assignment]
    override: dict[str, str] = client.hgetall(conventions.redis_key(namespace, "override", service))  # type: ignore[assignment]
    index: set[str] = client.smembers(conventions.redis_key(namespace, "slos"))  # type: ignore[assignment]
    known = any(m.split("/", 1)[0] == service for m in index)
    out: dict[str, Any] = {"service": service, "frozen": policy.get("frozen") == "1"}
    if policy:
        out |= {"reason": policy.get("reason"), "slo": policy.get("slo") or None,
                "since_ms": int(policy["since_ms"]),
                "budget_remaining_ratio": float(policy["budget_remaining_ratio"])}  # fmt: skip
    if override:
        out["override"] = {"reason": override["reason"], "actor": override["actor"],
                           "expires_at_ms": int(override["expires_at_ms"])}  # fmt: skip
    if not policy and not known:
        out["decision"] = "unknown"
        return EXIT_UNKNOWN, out
    if out["frozen"] and not override:
        out["decision"] = "frozen"
        return EXIT_FROZEN, out
    out["decision"] = "allowed"
    return EXIT_ALLOWED, out


def record_override(settings: Settings, service: str, reason: str, actor: str,
                    duration_ms: int) -> dict[str, Any]:  # fmt: skip
    """Write the override to Redis (expiring) and record it on slo.policy."""
    now = _now_ms()
    record = {
        "event_id": uuid.uuid4().hex, "service": service, "slo": None, "action": "override",
        "reason": reason, "actor": actor, "timestamp": now, "budget_remaining_ratio": None,
        "expires_at_ms": now + duration_ms,
    }  # fmt: skip
    ensure_topics(settings)
    producer = KafkaProducer(**kafka_options(settings), acks="all",
                             bootstrap_timeout_ms=15_000, max_block_ms=15_000)  # fmt: skip
    try:
        topic = conventions.topic_name(settings.namespace, conventions.POLICY_TOPIC)
        value = AvroCodec().encode("PolicyEvent", record)
        producer.send(topic, key=service.encode(), value=value).get(timeout=15)
    finally:
        producer.close(timeout=5)
    client = redis_client(settings, decode_responses=True, socket_timeout=5)
    try:
        key = conventions.redis_key(settings.namespace, "override", service)
        client.hset(key, mapping={"reason": reason, "actor": actor,
                                  "expires_at_ms": str(now + duration_ms)})  # fmt: skip
        client.pexpire(key, duration_ms)
    finally:
        client.close()
    return record


def run_gate(args: argparse.Namespace, settings: Settings) -> int:
    if args.override:
        if not args.reason or not args.actor:
            print("slipstream gate: an override needs --reason and --actor", file=sys.stderr)
            return EXIT_UNKNOWN
        try:
            duration_ms = parse_duration_ms(args.duration, "--for")
            record = record_override(settings, args.service, args.reason, args.actor, duration_ms)
        except (ScenarioError, KafkaError, redis.RedisError) as exc:
            print(f"slipstream gate: override not recorded: {exc}", file=sys.stderr)
            return EXIT_UNKNOWN
        print(f"override recorded for {args.service} until {record['expires_at_ms']} "
              f"(event {record['event_id']})")  # fmt: skip
    client = redis_client(settings, decode_responses=True, socket_timeout=5)
    try:
        code, out = gate_decision(client, settings.namespace, args.service)
    except redis.RedisError as exc:
        print(
            f"slipstream gate: unknown: Redis at {mask_url(settings.redis_url)}: {exc}",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
    finally:
        client.close()
    if args.json:
        print(json.dumps(out))
    elif code == EXIT_FROZEN:
        print(f"FROZEN: releases of {args.service} are frozen: {out['reason']} "
              f"(budget left {out['budget_remaining_ratio']:.1%})")  # fmt: skip
    elif code == EXIT_UNKNOWN:
        print(f"UNKNOWN: no SLO state for {args.service} (no worker, or no traffic yet)")
    elif "override" in out and out["frozen"]:
        o = out["override"]
        print(f"ALLOWED (override by {o['actor']}: {o['reason']}) despite: {out['reason']}")
    else:
        print(f"ALLOWED: {args.service} has error budget left")
    return code
