"""Fencing a zombie worker: one that was paused (SIGSTOP, a frozen VM, a stalled
container) long enough for the group to give its partitions to another worker.

When it runs again it does not know yet: its consumer learns of the rebalance only at
its next heartbeat. Meanwhile it would finish the batch it was in and write the
partition state, budget records and Redis values it computed before the pause, over
the newer ones its successor has written since (Kafka has no fencing for a plain
producer). A thread that ticks every 100 ms sees such a pause as a gap in its own
ticks, and the worker checks the same clock before it writes anything; past the limit
(half the group session timeout: the group may already have moved on) the process exits
at once, unacknowledged and without writing, and its service manager restarts it to
recover the current state from the changelog like any restart.

A long batch is not a pause: the tick thread keeps running beside it (the interpreter
switches threads every few milliseconds), and so do the consumer's heartbeats.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

EXIT_STALLED = 75  # EX_TEMPFAIL: restart me
TICK_S = 0.1


class StallGuard:
    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.last_tick = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="stall-guard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(TICK_S)
            self.check()
            self.last_tick = time.monotonic()

    def check(self) -> None:
        """Exit if the process has not run for longer than the limit (call before writing)."""
        gap = time.monotonic() - self.last_tick
        if gap > self.limit_s:
            self.trip(gap)

    def trip(self, gap_s: float) -> None:
        log.critical("this process did not run for %.1f s (limit %.1f s): the group may have "
                     "given its partitions to another worker; exiting before writing anything "
                     "stale (exit code %d: restart to recover the current state)",
                     gap_s, self.limit_s, EXIT_STALLED)  # fmt: skip
        logging.shutdown()
        os._exit(EXIT_STALLED)
