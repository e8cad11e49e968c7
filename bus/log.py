"""Logging: one line per event, naming the process, so ``journalctl -u wattbus@NAME`` reads well."""

from __future__ import annotations

import logging
import sys
import threading
import time


def setup_logging(process: str, level: str = "info") -> logging.Logger:
    """Configure the root logger for a wattbus process and return the process's logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("paho").setLevel(logging.WARNING)
    return logging.getLogger(f"wattbus.{process}")


class RateLimitedLog:
    """Logs a repeated event at most once per ``every`` seconds per key, with how many were suppressed.

    Bad input can arrive thousands of times a second; the log must stay readable and the SD card unworn.
    """

    def __init__(self, log: logging.Logger, every: float = 10.0):
        self.log, self.every = log, every
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (-1e18, 0))
            if now - last < self.every:
                self._last[key] = (last, suppressed + 1)
                return
            self._last[key] = (now, 0)
        if suppressed:
            msg += f" (+{suppressed} more like this)"
        self.log.warning(msg, *args)
