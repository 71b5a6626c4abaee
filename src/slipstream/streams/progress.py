"""A one-line progress display on stderr: events sent, rate, and share done when known."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from slipstream.client.emit import EmitStats


class ProgressLine:
    """Redraws one line on a terminal; elsewhere prints a line every ``every_s`` seconds."""

    def __init__(
        self,
        label: str,
        done_fraction: Callable[[], float | None] = lambda: None,
        stream: TextIO | None = None,
        every_s: float = 5.0,
    ) -> None:
        self.label = label
        self.done_fraction = done_fraction
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self._last_print_s = -every_s

    def __call__(self, stats: EmitStats) -> None:
        if not self.tty and stats.elapsed_s - self._last_print_s < self.every_s:
            return
        self._last_print_s = stats.elapsed_s
        fraction = self.done_fraction()
        bar = ""
        if fraction is not None:
            filled = int(fraction * 24)
            bar = f"[{'#' * filled}{'.' * (24 - filled)}] {fraction * 100:5.1f}% "
        line = (
            f"{self.label} {bar}{stats.events:>10,} events  {stats.rate():>9,.0f}/s  "
            f"deploys {stats.deploys}  skipped {stats.skipped}  {stats.elapsed_s:6.1f}s"
        )
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
