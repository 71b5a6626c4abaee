"""The zombie fence: a paused process exits when it runs again; a busy one does not."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from slipstream.streams.stall_guard import EXIT_STALLED, StallGuard

GUARDED = """
import time
from slipstream.streams.stall_guard import StallGuard
StallGuard(limit_s=1.0).start()
print("ready", flush=True)
time.sleep(60)
"""


def test_a_process_paused_past_the_limit_exits_when_it_resumes() -> None:
    proc = subprocess.Popen([sys.executable, "-c", GUARDED], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=30) == EXIT_STALLED
        assert "did not run for" in (proc.stderr.read() if proc.stderr else "")
    finally:
        proc.kill()


def test_a_long_busy_stretch_is_not_a_pause() -> None:
    trips: list[float] = []
    guard = StallGuard(limit_s=0.5)
    guard.trip = trips.append  # type: ignore[method-assign,assignment]
    guard.start()
    deadline = time.monotonic() + 2.0
    total = 0
    while time.monotonic() < deadline:  # pure Python, never yielding on purpose
        total += sum(range(1000))
    guard.check()
    assert trips == [] and total > 0


def test_check_trips_on_a_gap_in_the_ticks() -> None:
    trips: list[float] = []
    guard = StallGuard(limit_s=1.0)
    guard.trip = trips.append  # type: ignore[method-assign,assignment]
    guard.last_tick -= 5.0  # as if the process had not run for five seconds
    guard.check()
    assert len(trips) == 1 and trips[0] >= 5.0
