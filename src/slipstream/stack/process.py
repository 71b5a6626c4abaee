"""Start, identify and stop the stack's server processes, by pid file only.

A pid file records the pid *and* the process start time from /proc, so a pid
reused by an unrelated process after a reboot or crash is never signalled:
``down`` stops only what ``up`` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """The local stack cannot do what was asked; the message says why and what to do."""


def require_binary(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise StackError(
            f"{binary} is not installed; run `make install` (or as root: apt-get install {package})"
        )
    return path


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces or ')'; fields after the last ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    state = fields[0]
    if state in ("Z", "X"):  # a zombie has exited: it only waits for its parent to reap it
        return None
    return int(fields[19])


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, chosen below the kernel's ephemeral range.

    Port 0 would hand out an ephemeral port, which any outgoing connection (a
    Kafka client, say) may take before the server we start can bind it.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        if port_is_free(host, port):
            return port
    raise StackError(f"no free port found on {host} between 20000 and {low}")


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int
    argv0: str


@dataclass
class ManagedProcess:
    """One server process of the stack: its command, pid file and log file."""

    name: str
    argv: Sequence[str]
    run_dir: Path
    env: dict[str, str] | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def record(self) -> PidRecord | None:
        """The pid record if the process it names is still the one we started."""
        rec = self._raw_record()
        if rec is None or process_start_ticks(rec.pid) != rec.start_ticks:
            return None
        return rec

    def is_running(self) -> bool:
        return self.record() is not None

    def start(self) -> PidRecord:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        with self.log_file.open("ab") as log:
            log.write(
                f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} start {self.argv[0]}\n".encode()
            )
            log.flush()
            # A session of its own: our own Ctrl-C does not reach the servers,
            # and stop() can signal the whole group.
            proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                env=env,
                start_new_session=True,
            )
        ticks = process_start_ticks(proc.pid)
        if ticks is None:
            raise StackError(f"{self.name} exited at once; see {self.log_file}")
        rec = PidRecord(proc.pid, ticks, str(self.argv[0]))
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec.__dict__))
        tmp.replace(self.pid_file)
        return rec

    def exit_status(self) -> str | None:
        """A description of how a just-started process died, or None while it lives."""
        rec = self._raw_record()
        if rec is None:
            return "no pid file"
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(rec.pid, os.WNOHANG)
            if pid == rec.pid:
                return f"exited with status {os.waitstatus_to_exitcode(status)}"
        if process_start_ticks(rec.pid) != rec.start_ticks:
            return "exited"
        return None

    def _raw_record(self) -> PidRecord | None:
        try:
            data = json.loads(self.pid_file.read_text())
            return PidRecord(int(data["pid"]), int(data["start_ticks"]), str(data["argv0"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM the process group we started, SIGKILL after the timeout.

        Returns True if a process of ours was running.
        """
        rec = self.record()
        if rec is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rec.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._alive(rec):
            time.sleep(0.1)
        if self._alive(rec):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(rec.pid, signal.SIGKILL)
            while self._alive(rec):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _alive(rec: PidRecord) -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(rec.pid, os.WNOHANG)  # reap it if it is our child
        return process_start_ticks(rec.pid) == rec.start_ticks

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: object,
    *,
    timeout_s: float,
    what: str,
    proc: ManagedProcess | None = None,
    interval_s: float = 0.2,
) -> None:
    """Poll ``check()`` until it is true; fail early if ``proc`` dies."""
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        if proc is not None:
            died = proc.exit_status()
            if died is not None:
                raise StackError(
                    f"{proc.name} {died} before {what}; last lines of {proc.log_file}:\n"
                    f"{proc.log_tail()}"
                )
        if time.monotonic() > deadline:
            detail = f"; see {proc.log_file}:\n{proc.log_tail()}" if proc else ""
            raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")
        time.sleep(interval_s)
