"""A progress line for long work on a terminal (silent when not a TTY, e.g. under systemd or CI)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, unit: str = "", stream=sys.stderr):
        self.label, self.unit, self.stream = label, unit, stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self._last = 0.0

    def __enter__(self) -> "Progress":
        return self

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        pct = 100.0 * done / total if total else 100.0
        bar = "#" * int(pct / 4)
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.label} [{bar:<25}] {pct:5.1f}% {done:,}/{total:,} {self.unit} "
                          f"({rate:,.0f}/s)")
        self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        if self.tty:
            self.stream.write("\n")
