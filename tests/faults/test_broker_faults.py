"""The broker fails under a running worker: SIGKILL, SIGTERM, and a hang (SIGSTOP, then
SIGCONT), each mid-stream. The test runs a Kafka of its own (the shared one serves the
other tests) and plays the part of a supervisor: a worker that exits is started again,
as systemd or Kubernetes would. Nothing may be lost or counted twice, and the pipeline
must drain without any other action."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from slipstream.bench.load import now_ms, preload, write_catalogue
from slipstream.settings import Settings
from slipstream.stack.kafka import KafkaServer
from slipstream.stack.process import free_port

from faultkit import (
    EVENTS_PER_S,
    FULL,
    Worker,
    consumed,
    drained,
    reckon,
    record,
    replay_records,
    wait_for,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICES = 20
EVENTS = 300_000 if FULL else 60_000  # per fault: loaded before it, drained after it
HANG_S = 30 if FULL else 10
FAULTS = ("SIGKILL", "SIGTERM", "SIGSTOP")


@pytest.fixture
def own_kafka(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, KafkaServer]]:
    mine = settings.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}",
                            kafka_controller_port=free_port(),
                            stack_dir=str(tmp_path / "stack"))  # fmt: skip
    kafka = KafkaServer(mine, tmp_path / "stack")
    kafka.prepare()
    kafka.process.start()
    wait_for(kafka.is_ready, 120, "the test's own Kafka")
    try:
        yield mine, kafka
    finally:
        kafka.process.stop()


def _broker_pid(kafka: KafkaServer) -> int:
    rec = kafka.process.record()
    assert rec is not None, "the test's Kafka is not running"
    return rec.pid


class Supervisor:
    """Starts the worker again whenever it exits, like a service manager."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.exits: list[int] = []
        self._running = ExitStack()

    def check(self) -> bool:
        proc = self.worker.proc
        if proc is not None and proc.poll() is not None:
            self.exits.append(proc.returncode)
            self.stop()
            self.start()
        return True

    def start(self) -> None:
        self._running.enter_context(self.worker.running())

    def stop(self) -> None:
        self._running.close()


def test_broker_kill_stop_and_hang_lose_nothing(
    own_kafka: tuple[Settings, KafkaServer], tmp_path: Path
) -> None:
    base, kafka = own_kafka
    catalogue = write_catalogue(tmp_path / "catalogue.yaml", SERVICES)
    settings = worker_settings(base, catalogue)
    worker = Worker(settings, tmp_path / "worker.log")
    total = EVENTS * len(FAULTS)
    records = replay_records(total, SERVICES, 51, now_ms() - total * 1000 // EVENTS_PER_S)
    supervisor = Supervisor(worker)
    recover_s: dict[str, float] = {}
    supervisor.start()
    try:
        for fault in FAULTS:
            preload(settings, "batched", EVENTS, SERVICES, 51,
                    records=(next(records) for _ in range(EVENTS)))  # fmt: skip
            wait_for(lambda: supervisor.check() and consumed(worker.addr) > 0, 120,
                     "the worker to consume", worker)  # fmt: skip
            pid = _broker_pid(kafka)
            if fault == "SIGSTOP":
                os.kill(pid, signal.SIGSTOP)
                time.sleep(HANG_S)
                os.kill(pid, signal.SIGCONT)
            else:
                os.killpg(pid, getattr(signal, fault))
                wait_for(lambda: not kafka.process.is_running(), 60, "the broker to stop")
                kafka.process.start()
            t0 = time.monotonic()
            wait_for(kafka.is_ready, 120, f"the broker back after {fault}")
            wait_for(lambda: supervisor.check() and drained(settings)(), 600,
                     f"the pipeline to drain after {fault}")  # fmt: skip
            recover_s[fault] = round(time.monotonic() - t0, 1)
    finally:
        supervisor.stop()
    result = reckon(settings)
    c = result.comparison
    record(
        "broker SIGKILL, SIGTERM and SIGSTOP mid-stream",
        events=total,
        hang_s=HANG_S,
        worker_exits=supervisor.exits,
        seconds_from_broker_back_to_drained=recover_s,
        events_lost=c.lost,
        events_double_counted=c.doubled,
        alert_transitions=result.transitions_expected,
        alerts_missing=len(result.transitions_missing),
        offset_jumps=worker.offset_jumps(),
        offset_rewinds=worker.offset_rewinds(),
    )
    assert c.events == 2 * total
    assert (c.lost, c.doubled, c.wrong_bad) == (0, 0, 0), c
    assert not c.missing_keys and not c.extra_keys, c
    assert result.alerts_identical, result
