"""The reading verbs: ``status`` (budget state from Redis) and ``alerts`` (from slo.alerts)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition

from slipstream import conventions
from slipstream.client.trace import parse_timestamp
from slipstream.connect import kafka_options, redis_client
from slipstream.schemas.codec import AvroCodec, CodecError
from slipstream.settings import Settings
from slipstream.sinks.records import status_row

EXIT_OK, EXIT_ERROR = 0, 2


def add_parsers(verbs: Any, common: argparse.ArgumentParser) -> None:
    status = verbs.add_parser("status", parents=[common], help="budget and burn rates per SLO")
    status.add_argument("--json", action="store_true", help="one JSON array (stable fields)")
    alerts = verbs.add_parser("alerts", parents=[common], help="alert transitions")
    alerts.add_argument("--json", action="store_true", help="one JSON array (stable fields)")
    alerts.add_argument("--since", help="only transitions at or after this event time")
    alerts.add_argument("--follow", "-f", action="store_true",
                        help="then keep printing new transitions as they come (Ctrl-C ends; "
                             "with --json, one JSON object per line)")  # fmt: skip
    deploys = verbs.add_parser("deploys", parents=[common], help="deploy verdicts")
    deploys.add_argument("--json", action="store_true", help="one JSON array (stable fields)")


def read_status(settings: Settings) -> list[dict[str, Any]]:
    client = redis_client(settings, decode_responses=True, socket_timeout=5)
    try:
        index = conventions.redis_key(settings.namespace, "slos")
        members: set[str] = client.smembers(index)  # type: ignore[assignment]
        rows = []
        for member in sorted(members):
            service, slo = member.split("/", 1)
            key = conventions.redis_budget_key(settings.namespace, service, slo)
            fields: dict[str, str] = client.hgetall(key)  # type: ignore[assignment]
            if fields:
                rows.append(status_row(fields))
        return rows
    finally:
        client.close()


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    try:
        rows = read_status(settings)
    except redis.RedisError as exc:
        print(f"slipstream status: Redis at {settings.redis_url}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    if not rows:
        print("no SLO state yet (is a worker running on this namespace?)")
        return EXIT_OK
    print(f"{'service':<12}{'slo':<14}{'objective':>10}{'budget left':>13}"
          f"{'burn 5m':>9}{'burn 1h':>9}{'burn 6h':>9}  alerts")  # fmt: skip
    for r in rows:
        b = r["burn_rates"]
        print(f"{r['service']:<12}{r['slo']:<14}{r['objective']:>9}%"
              f"{r['budget_remaining_ratio']:>12.1%}{b['5m']:>9.2f}{b['1h']:>9.2f}{b['6h']:>9.2f}"
              f"  {','.join(r['active_alerts']) or '-'}")  # fmt: skip
    return EXIT_OK


def read_records(settings: Settings, base_topic: str, schema: str) -> list[dict[str, Any]]:
    """Every decodable ``schema`` record of a topic, from the beginning to its current end."""
    topic = conventions.topic_name(settings.namespace, base_topic)
    codec = AvroCodec()
    out: list[dict[str, Any]] = []
    consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False,
                             client_id="slipstream-cli")  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return out
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    try:
                        out.append(codec.decode(rec.value, {schema}).record)
                    except CodecError:
                        continue  # another type on the topic is not this reader's business
    finally:
        consumer.close()
    return out


def read_alerts(settings: Settings, since_ms: int | None = None) -> list[dict[str, Any]]:
    rows = [
        r for r in read_records(settings, conventions.ALERTS_TOPIC, "BurnRateAlert")
        if since_ms is None or r["event_time_ms"] >= since_ms
    ]  # fmt: skip
    return sorted(rows, key=lambda r: (r["event_time_ms"], r["service"], r["slo"]))


def run_alerts(args: argparse.Namespace, settings: Settings) -> int:
    since = None
    if args.since:
        since = parse_timestamp(int(args.since) if args.since.isdigit() else args.since)
    if args.follow:
        return follow_alerts(settings, since, as_json=args.json)
    rows = read_alerts(settings, since)
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    for r in rows:
        print(alert_line(r))
    return EXIT_OK


def alert_line(r: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["event_time_ms"] / 1000))
    tier = f"{r['long_window_s'] // 60}m/{r['short_window_s'] // 60}m"
    left = r["budget_remaining_ratio"]
    return (f"{when}Z  {r['state']:<9} {r['severity']:<6} {r['service']}/{r['slo']}  "
            f"burn {r['burn_rate_long']:.1f}x/{r['burn_rate_short']:.1f}x over {tier} "
            f"(factor {r['factor']:g}), budget left {left:.1%}")  # fmt: skip


def follow_alerts(settings: Settings, since_ms: int | None, as_json: bool) -> int:
    """Print the transitions since ``since_ms`` (none before now when None), then every
    new one as it comes, until interrupted. No consumer group: a tail commits nothing."""
    topic = conventions.topic_name(settings.namespace, conventions.ALERTS_TOPIC)
    consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False,
                             client_id="slipstream-cli-follow")  # fmt: skip
    codec = AvroCodec()
    # Ctrl-C or SIGTERM ends the loop between polls. A KeyboardInterrupt raised inside the
    # client could leave one of its locks held, and its close() then waited for ever.
    interrupted = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: interrupted.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            print(f"slipstream alerts: no topic {topic}", file=sys.stderr)
            return EXIT_ERROR
        consumer.assign(tps)
        if since_ms is None:
            consumer.seek_to_end(*tps)
        else:
            consumer.seek_to_beginning(*tps)
        while not interrupted.is_set():
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    try:
                        r = codec.decode(rec.value, {"BurnRateAlert"}).record
                    except CodecError:
                        continue
                    if since_ms is not None and r["event_time_ms"] < since_ms:
                        continue
                    print(json.dumps(r) if as_json else alert_line(r), flush=True)
        return EXIT_OK
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        consumer.close()


def read_impacts(settings: Settings) -> list[dict[str, Any]]:
    """The latest verdict per (deploy, SLO) from slo.deploy-impact, evidence as an object."""
    latest: dict[tuple[str, str | None], dict[str, Any]] = {}
    for row in read_records(settings, conventions.DEPLOY_IMPACT_TOPIC, "DeployImpact"):
        row["evidence"] = json.loads(row.pop("evidence_json"))
        latest[(row["deploy_id"], row["slo"])] = row
    return sorted(latest.values(), key=lambda r: (r["decided_at_ms"], r["deploy_id"]))


def run_deploys(args: argparse.Namespace, settings: Settings) -> int:
    rows = read_impacts(settings)
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    for r in rows:
        rr = r["evidence"].get("rate_ratio")
        ratio = f"rate ratio {rr:.1f}x" if rr else "no version split yet"
        spent = r["budget_consumed_ratio"]
        print(f"{r['deploy_id']:<36} {r['service']}/{r['slo']:<14} {r['verdict']:<12} "
              f"confidence {r['confidence']:.2f}  budget {spent:.1%}  {ratio}")  # fmt: skip
    return EXIT_OK
