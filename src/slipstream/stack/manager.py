"""``slipstream stack up | down | status``: the local stack as one idempotent unit."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from slipstream.settings import Settings
from slipstream.stack.kafka import KafkaServer
from slipstream.stack.process import ManagedProcess, StackError, port_is_free, wait_until
from slipstream.stack.servers import AlertmanagerServer, PrometheusServer, RedisServer

READY_TIMEOUT_S = {"kafka": 120.0, "redis": 20.0, "prometheus": 30.0, "alertmanager": 30.0}

# The setting that moves each component's ports, named in port-conflict errors.
PORT_SETTING = {
    "kafka": "--kafka-bootstrap / SLIPSTREAM_KAFKA_BOOTSTRAP "
    "(controller: SLIPSTREAM_KAFKA_CONTROLLER_PORT)",
    "redis": "--redis-url / SLIPSTREAM_REDIS_URL",
    "prometheus": "--prometheus-url / SLIPSTREAM_PROMETHEUS_URL",
    "alertmanager": "--alertmanager-url / SLIPSTREAM_ALERTMANAGER_URL",
}


class Component(Protocol):
    name: str
    process: ManagedProcess

    @property
    def address(self) -> str: ...

    def ports(self) -> list[int]: ...

    def prepare(self) -> None: ...

    def is_ready(self) -> bool: ...


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # running | starting | stopped
    pid: int | None
    address: str
    log: str


class StackManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = Path(settings.stack_dir)
        self.components: list[Component] = [
            KafkaServer(settings, self.run_dir),
            RedisServer(settings, self.run_dir),
            PrometheusServer(settings, self.run_dir),
            AlertmanagerServer(settings, self.run_dir),
        ]

    def component(self, name: str) -> Component:
        for comp in self.components:
            if comp.name == name:
                return comp
        raise KeyError(name)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two `stack up`s at once (two terminals, parallel tests) must not race.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def up(self, report: Callable[[str], None] = print) -> list[str]:
        """Start whatever is not running; return the names of the components started."""
        with self._lock():
            return self._up(report)

    def _up(self, report: Callable[[str], None]) -> list[str]:
        host = self.settings.kafka_host_port[0]
        to_start = [c for c in self.components if not c.process.is_running()]
        for comp in self.components:
            if comp not in to_start:
                report(f"{comp.name:<13} already running (pid {_pid(comp)}) at {comp.address}")
        # Check every port before starting anything, so a conflict leaves nothing half-up.
        for comp in to_start:
            for port in comp.ports():
                if not port_is_free(host, port):
                    raise StackError(
                        f"port {port} on {host} ({comp.name}) is already in use by a process "
                        f"the stack did not start; stop it, or move {comp.name} with "
                        f"{PORT_SETTING[comp.name]}"
                    )
        started: list[Component] = []
        try:
            for comp in to_start:
                comp.prepare()
                comp.process.start()
                started.append(comp)
            for comp in self.components:
                t0 = time.monotonic()
                wait_until(
                    comp.is_ready,
                    timeout_s=READY_TIMEOUT_S[comp.name],
                    what=f"{comp.name} to be ready at {comp.address}",
                    proc=comp.process,
                )
                if comp in started:
                    report(
                        f"{comp.name:<13} started (pid {_pid(comp)}) at {comp.address} "
                        f"in {time.monotonic() - t0:.1f}s"
                    )
        except BaseException:
            for comp in reversed(started):
                comp.process.stop()
            raise
        return [c.name for c in started]

    def down(self, report: Callable[[str], None] = print) -> list[str]:
        """Stop the processes `up` started (by pid file); return their names."""
        stopped = []
        with self._lock():
            for comp in reversed(self.components):
                if comp.process.stop():
                    stopped.append(comp.name)
                    report(f"{comp.name:<13} stopped")
                else:
                    report(f"{comp.name:<13} was not running")
        return stopped

    def status(self) -> list[ComponentStatus]:
        out = []
        for comp in self.components:
            rec = comp.process.record()
            ready = rec is not None and comp.is_ready()
            state = "stopped" if rec is None else ("running" if ready else "starting")
            out.append(
                ComponentStatus(
                    comp.name,
                    state,
                    rec.pid if rec else None,
                    comp.address,
                    str(comp.process.log_file),
                )
            )
        return out

    def all_running(self) -> bool:
        return all(s.state == "running" for s in self.status())


def _pid(comp: Component) -> int | None:
    rec = comp.process.record()
    return rec.pid if rec else None
