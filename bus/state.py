"""Retained producer state that never runs ahead of the readings it accounts for.

A producer that integrates counters keeps them in its retained ``{source}/{device}/state`` message (DESIGN:
no SD-card writes). Publishing that state before the readings it covers are acknowledged would, after a
crash, restore counters past readings that never reached the broker. So states are offered here and
published by a background thread only once the producer's outbox is flushed; the device loop never waits.
"""

from __future__ import annotations

import threading
from typing import Any


class StateSaver:
    """Publishes the latest offered state per device once every reading queued before it is acknowledged.

    ``min_interval_s`` limits how often states are published (an accelerated clock needs no more). On a
    context without ``flush`` (unit-test fakes) states are published at once.
    """

    def __init__(self, ctx: Any, min_interval_s: float = 0.0, name: str = "state") -> None:
        self.ctx, self.min_interval_s = ctx, min_interval_s
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flush = getattr(ctx, "flush", None)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def offer(self, device: str, state: dict[str, Any]) -> None:
        with self._lock:
            self._pending[device] = state
        self._wake.set()

    def save_now(self, timeout: float = 3.0) -> bool:
        """On stop: wait for the readings to be acknowledged, then publish the last states."""
        if self._flush is not None and not self._flush(timeout):
            return False
        self._publish()
        return True

    def _publish(self) -> None:
        with self._lock:
            states, self._pending = self._pending, {}
        for device, state in states.items():
            self.ctx.save_state(device, state)

    def _loop(self) -> None:
        while not self.ctx.stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if not self._pending:
                continue
            if self._flush is None or self._flush(1.0):
                self._publish()
                if self.min_interval_s:
                    self.ctx.stopping.wait(self.min_interval_s)
            else:
                self._wake.set()  # not acknowledged yet: look again
