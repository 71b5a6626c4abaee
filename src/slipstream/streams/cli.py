"""The ``slipstream`` command: parses flags into Settings and hands over to the parts.

Thin on purpose: each verb is a few lines that wire settings into a module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from kafka.errors import KafkaError

from slipstream.connect import AccessError
from slipstream.settings import (
    KAFKA_PROTOCOLS,
    SASL_MECHANISMS,
    Settings,
    SettingsError,
    load_settings,
)
from slipstream.slo.catalogue import CatalogueError
from slipstream.stack.process import StackError
from slipstream.streams.topics import TopicAdminError

EXIT_OK = 0
EXIT_ERROR = 2


def _settings_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("settings (flag, then SLIPSTREAM_<NAME>, then default)")
    g.add_argument("--kafka-bootstrap", dest="kafka_bootstrap", metavar="HOST:PORT")
    g.add_argument("--redis-url", dest="redis_url", metavar="URL")
    g.add_argument("--prometheus-url", dest="prometheus_url", metavar="URL")
    g.add_argument("--alertmanager-url", dest="alertmanager_url", metavar="URL")
    g.add_argument("--metrics-addr", dest="metrics_addr", metavar="HOST:PORT")
    g.add_argument("--namespace", dest="namespace", metavar="NS")
    g.add_argument("--consumer-group", dest="consumer_group", metavar="GROUP")
    g.add_argument("--instance-id", dest="instance_id", metavar="ID")
    g.add_argument("--session-timeout", dest="session_timeout_s", type=float, metavar="SECONDS")
    g.add_argument("--checkpoint-interval", dest="checkpoint_interval_s", type=float,
                   metavar="SECONDS", help="local state checkpoints at most this often "
                   "per partition (0: none; default 30)")  # fmt: skip
    g.add_argument("--catalogue", dest="catalogue", metavar="FILE")
    g.add_argument("--partitions", dest="partitions", type=int, metavar="N")
    g.add_argument("--stack-dir", dest="stack_dir", metavar="DIR")
    sec = common.add_argument_group(
        "security (passwords only from SLIPSTREAM_KAFKA_PASSWORD / SLIPSTREAM_REDIS_PASSWORD "
        "or a file: never a flag, which any user could read in the process list)"
    )
    sec.add_argument("--kafka-security-protocol", dest="kafka_security_protocol",
                     choices=KAFKA_PROTOCOLS)  # fmt: skip
    sec.add_argument("--kafka-sasl-mechanism", dest="kafka_sasl_mechanism",
                     choices=SASL_MECHANISMS)  # fmt: skip
    sec.add_argument("--kafka-username", dest="kafka_username", metavar="USER")
    sec.add_argument("--kafka-password-file", dest="kafka_password_file", metavar="FILE")
    sec.add_argument("--kafka-ca-file", dest="kafka_ca_file", metavar="PEM")
    sec.add_argument("--redis-username", dest="redis_username", metavar="USER")
    sec.add_argument("--redis-password-file", dest="redis_password_file", metavar="FILE")
    sec.add_argument("--redis-ca-file", dest="redis_ca_file", metavar="PEM")
    sec.add_argument("--metrics-tls-cert", dest="metrics_tls_cert", metavar="PEM")
    sec.add_argument("--metrics-tls-key", dest="metrics_tls_key", metavar="PEM")
    return common


SETTINGS_KEYS = (
    "kafka_bootstrap", "redis_url", "prometheus_url", "alertmanager_url", "metrics_addr",
    "namespace", "consumer_group", "instance_id", "session_timeout_s", "catalogue", "partitions",
    "stack_dir", "checkpoint_interval_s",
    "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_username", "kafka_password_file",
    "kafka_ca_file", "redis_username", "redis_password_file", "redis_ca_file",
    "metrics_tls_cert", "metrics_tls_key",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    common = _settings_flags()
    parser = argparse.ArgumentParser(
        prog="slipstream",
        description="Real-time SLO pipeline: burn-rate alerts, error budgets, deploy verdicts.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    stack = verbs.add_parser("stack", parents=[common], help="local Kafka, Redis, Prometheus")
    stack.add_argument("action", choices=["up", "down", "status", "fetch"])
    stack.add_argument("--json", action="store_true", help="status as JSON")

    worker = verbs.add_parser("worker", parents=[common], help="run the stream processors")
    worker.add_argument("--loglevel", default="warning")

    from slipstream.streams import (
        alertmanager_cli,
        gate_cli,
        produce_cli,
        read_cli,
        report_cli,
        spec_cli,
    )

    produce_cli.add_parsers(verbs, common)
    read_cli.add_parsers(verbs, common)
    gate_cli.add_parser(verbs, common)
    report_cli.add_parser(verbs, common)
    spec_cli.add_parsers(verbs, common)
    alertmanager_cli.add_parser(verbs, common)
    from slipstream.bench import cli as bench_cli

    bench_cli.add_parser(verbs, common)

    demo = verbs.add_parser("demo", parents=[common], help="stack + worker + live traffic")
    demo.add_argument("--no-stack", action="store_true", help="use the configured servers")
    demo.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until Ctrl-C")
    demo.add_argument("--scenario", default="bad-deploy", help="shipped name or a YAML file")
    demo.add_argument("--speed", type=float, default=30.0, help="times the scenario's own pace")
    demo.add_argument("--worker-running", action="store_true",
                      help="feed a worker already running (docker compose) instead of "
                      "starting one; its /metrics is read at --metrics-addr")  # fmt: skip
    demo.add_argument("--worker-wait", type=float, default=120.0, metavar="SECONDS",
                      help="with --worker-running: how long to wait for it to answer")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings({k: getattr(args, k, None) for k in SETTINGS_KEYS})
        return _dispatch(args, settings)
    except (SettingsError, StackError, TopicAdminError, CatalogueError, AccessError) as exc:
        print(f"slipstream: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KafkaError as exc:
        bootstrap = getattr(args, "kafka_bootstrap", None) or "the configured bootstrap servers"
        print(f"slipstream: error: Kafka at {bootstrap}: {exc!r}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.verb == "stack":
        return _stack(args, settings)
    if args.verb == "worker":
        from slipstream.streams.worker import run_worker

        return run_worker(settings, loglevel=args.loglevel)
    if args.verb == "demo":
        from slipstream.streams.demo import run_demo

        return run_demo(settings, start_stack=not args.no_stack, duration_s=args.duration,
                        scenario_name=args.scenario, speed=args.speed,
                        worker_running=args.worker_running,
                        worker_wait_s=args.worker_wait)  # fmt: skip
    if args.verb in ("deploy", "replay", "simulate"):
        from slipstream.streams import produce_cli

        run = {"deploy": produce_cli.run_deploy, "replay": produce_cli.run_replay,
               "simulate": produce_cli.run_simulate}[args.verb]  # fmt: skip
        return run(args, settings)
    if args.verb in ("status", "alerts", "deploys"):
        from slipstream.streams import read_cli

        reader = {"status": read_cli.run_status, "alerts": read_cli.run_alerts,
                  "deploys": read_cli.run_deploys}[args.verb]  # fmt: skip
        return reader(args, settings)
    if args.verb == "bench":
        from slipstream.bench import cli as bench_cli

        return bench_cli.run_bench(args, settings)
    if args.verb == "report":
        from slipstream.streams import report_cli

        return report_cli.run_report(args, settings)
    if args.verb in ("import", "validate"):
        from slipstream.streams import spec_cli

        return spec_cli.run_import(args) if args.verb == "import" else spec_cli.run_validate(args)
    if args.verb == "alertmanager":
        from slipstream.streams.alertmanager_cli import run_alertmanager

        return run_alertmanager(args, settings)
    if args.verb == "gate":
        from slipstream.streams import gate_cli

        return gate_cli.run_gate(args, settings)
    raise AssertionError(args.verb)


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from slipstream.stack.kafka import ensure_jars, jars_cached
    from slipstream.stack.manager import StackManager

    if args.action == "fetch":
        cached = jars_cached(settings)
        libs = ensure_jars(settings)
        print(f"kafka {settings.kafka_version} jars {'cached' if cached else 'resolved'}: {libs}")
        return EXIT_OK
    manager = StackManager(settings)
    if args.action == "up":
        manager.up()
        print(f"stack is up; data and logs in {manager.run_dir}")
        return EXIT_OK
    if args.action == "down":
        manager.down()
        return EXIT_OK
    rows = manager.status()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        for r in rows:
            pid = str(r.pid) if r.pid else "-"
            print(f"{r.name:<13} {r.state:<9} pid={pid:<8} {r.address:<28} log={r.log}")
    return EXIT_OK if all(r.state == "running" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
