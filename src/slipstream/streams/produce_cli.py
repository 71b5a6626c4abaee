"""The producing verbs: ``deploy`` (CI/CD), ``replay`` (a JSON Lines trace) and ``simulate``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from kafka.errors import KafkaError

from slipstream.client.emit import EmitStats, emit
from slipstream.client.producer import DeliveryError, SlipstreamProducer, producer_from_settings
from slipstream.client.trace import (
    TraceError,
    TraceEvent,
    format_event,
    parse_timestamp,
    read_trace,
)
from slipstream.settings import Settings
from slipstream.simulate.generator import generate
from slipstream.simulate.scenario import ScenarioError, load_scenario, parse_duration_ms
from slipstream.slo.events import CHANGE_TYPES, DEPLOY_PHASES, InvalidEventError
from slipstream.streams.progress import ProgressLine
from slipstream.streams.topics import ensure_topics

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parsers(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    deploy = verbs.add_parser("deploy", parents=[common], help="announce a deploy (for CI/CD)")
    deploy.add_argument("--service", required=True)
    deploy.add_argument("--version", required=True, dest="deploy_version")
    deploy.add_argument("--previous-version")
    deploy.add_argument("--change-type", default="code", choices=sorted(CHANGE_TYPES))
    deploy.add_argument("--phase", default="started", choices=sorted(DEPLOY_PHASES))
    deploy.add_argument("--rollout-fraction", type=float, default=1.0)
    deploy.add_argument("--actor", default=os.environ.get("CI_PIPELINE_NAME", "ci"))
    deploy.add_argument("--commit")
    deploy.add_argument("--description")
    deploy.add_argument("--deploy-id", help="same id for every phase of one deploy")
    deploy.add_argument("--timestamp", help="epoch ms or ISO-8601 (default: now)")
    deploy.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for the broker"
    )
    deploy.add_argument("--json", action="store_true")

    replay = verbs.add_parser("replay", parents=[common], help="produce a JSON Lines trace")
    replay.add_argument("file", help="trace file, '-' for standard input")
    _pacing(replay, default_max=True)
    replay.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip and count bad lines instead of stopping at the first",
    )

    sim = verbs.add_parser("simulate", parents=[common], help="synthetic traffic from a scenario")
    sim.add_argument("--scenario", required=True, help="shipped name or a YAML file")
    sim.add_argument("--out", help="write the trace as JSON Lines here instead of producing it")
    sim.add_argument("--start", help="event time of the first event (ISO-8601 or epoch ms)")
    sim.add_argument("--duration", help="override the scenario's duration (e.g. 5m)")
    sim.add_argument("--seed", type=int, help="override the scenario's seed")
    _pacing(sim, default_max=False)


def _pacing(parser: argparse.ArgumentParser, *, default_max: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--max", action="store_true", help="as fast as possible"
                       + (" (default)" if default_max else ""))  # fmt: skip
    group.add_argument("--speed", type=float, help="N times the events' own pace"
                       + ("" if default_max else " (default 1: live)"))  # fmt: skip


def _speed(args: argparse.Namespace, *, default_max: bool) -> float | None:
    if args.max:
        return None
    if args.speed is not None:
        if args.speed <= 0:
            raise ValueError("--speed must be > 0")
        return float(args.speed)
    return None if default_max else 1.0


def run_deploy(args: argparse.Namespace, settings: Settings) -> int:
    ts = parse_timestamp(int(args.timestamp) if (args.timestamp or "").isdigit()
                         else args.timestamp) if args.timestamp else None  # fmt: skip
    try:
        producer = producer_from_settings(
            settings, connect_timeout_s=args.timeout, delivery_timeout_s=args.timeout,
            register_atexit=False,
        )  # fmt: skip
    except KafkaError as exc:
        print(f"slipstream deploy: not announced: cannot reach Kafka at "
              f"{settings.kafka_bootstrap} within {args.timeout:.0f}s ({exc})",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    try:
        ensure_topics(settings)
        receipt = producer.announce_deploy(
            args.service, args.deploy_version, previous_version=args.previous_version,
            change_type=args.change_type, phase=args.phase,
            rollout_fraction=args.rollout_fraction, actor=args.actor, commit=args.commit,
            description=args.description, deploy_id=args.deploy_id, timestamp_ms=ts,
            timeout_s=args.timeout,
        )  # fmt: skip
    except InvalidEventError as exc:
        print(f"slipstream deploy: invalid deploy event: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DeliveryError, KafkaError) as exc:
        print(f"slipstream deploy: not announced: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _close_quietly(producer)
    if args.json:
        print(json.dumps(receipt.__dict__))
    else:
        print(f"deploy {receipt.deploy_id} acknowledged: {receipt.topic}"
              f"[{receipt.partition}]@{receipt.offset}")  # fmt: skip
    return EXIT_OK


class _CountingLines:
    """Lines of a binary file, decoded, counting bytes for the progress bar."""

    def __init__(self, stream: IO[bytes], size: int | None) -> None:
        self.stream, self.size, self.read = stream, size, 0

    def __iter__(self) -> Iterator[str]:
        for raw in self.stream:
            self.read += len(raw)
            yield raw.decode("utf-8", errors="replace")

    def fraction(self) -> float | None:
        return min(self.read / self.size, 1.0) if self.size else None


def _report(verb: str, stats: EmitStats) -> None:
    print(f"{verb}: sent {stats.requests} requests and {stats.deploys} deploys in "
          f"{stats.elapsed_s:.1f}s ({stats.rate():,.0f} events/s)"
          + (f"; skipped {stats.skipped} invalid lines" if stats.skipped else ""))  # fmt: skip


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    speed = _speed(args, default_max=True)
    if args.file == "-":
        lines = _CountingLines(sys.stdin.buffer, None)
    else:
        path = Path(args.file)
        try:
            lines = _CountingLines(path.open("rb"), path.stat().st_size)
        except OSError as exc:
            print(f"slipstream replay: {args.file}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    progress = ProgressLine("replay", lines.fraction)
    events = read_trace(lines, args.skip_invalid)
    return _send("replay", settings, events, speed, progress, args.file)


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        scenario = load_scenario(args.scenario)
        if args.duration:
            duration_ms = parse_duration_ms(args.duration, "--duration")
            scenario = dataclasses.replace(scenario, duration_ms=duration_ms)
        if args.seed is not None:
            scenario = dataclasses.replace(scenario, seed=args.seed)
    except ScenarioError as exc:
        print(f"slipstream simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    speed = _speed(args, default_max=False)
    now_ms = time.time_ns() // 1_000_000
    if args.start:
        start_ms = parse_timestamp(int(args.start) if args.start.isdigit() else args.start)
    elif args.out or speed != 1.0:
        start_ms = now_ms - scenario.duration_ms  # the whole scenario lies in the past
    else:
        start_ms = now_ms  # live
    events = generate(scenario, start_ms)
    if args.out:
        count = 0
        with open(args.out, "w", encoding="utf-8") as out:
            for event in events:
                out.write(format_event(event) + "\n")
                count += 1
        print(f"simulate: wrote {count} events of scenario {scenario.name!r} to {args.out}")
        return EXIT_OK
    total_ms = max(scenario.duration_ms, 1)
    sent_until = [start_ms]

    def fraction() -> float:
        return min(max((sent_until[0] - start_ms) / total_ms, 0.0), 1.0)

    def tracked() -> Iterator[TraceEvent]:
        for event in events:
            sent_until[0] = event.timestamp_ms
            yield event

    progress = ProgressLine(f"simulate {scenario.name}", fraction)
    return _send("simulate", settings, tracked(), speed, progress, args.scenario)


def _send(
    verb: str,
    settings: Settings,
    events: Iterable[TraceEvent | TraceError],
    speed: float | None,
    progress: ProgressLine,
    source: str,
) -> int:
    """Create the topics if needed, send, and report; every failure is one clear line."""
    ensure_topics(settings)
    producer = producer_from_settings(settings, register_atexit=False)
    try:
        try:
            stats = emit(events, producer, speed=speed, on_progress=progress)
        finally:
            progress.finish()
        producer.close()
    except TraceError as exc:
        _close_quietly(producer)
        print(f"slipstream {verb}: {source}: {exc} (the events before it were sent; "
              "--skip-invalid skips bad lines)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    except DeliveryError as exc:
        _close_quietly(producer)
        print(f"slipstream {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _report(verb, stats)
    return EXIT_OK


def _close_quietly(producer: SlipstreamProducer) -> None:
    # The error that matters was reported; what close() finds on top is the same loss.
    with contextlib.suppress(DeliveryError, KafkaError):
        producer.close(timeout_s=10)
