"""Retained producer state, published in step with the readings it accounts for.

A producer that keeps counters keeps them in its retained ``{source}/{device}/state`` message (DESIGN: no
SD-card writes) and restores them at start. When that state is published relative to its readings decides
what a crash can do, and there are two right answers, one per kind of producer:

- ``after_acked=True`` (default): a state goes out only once every reading queued before it is acknowledged
  by the broker, so it never runs ahead of the broker. For producers that can rebuild what is missing: the
  sim meters regenerate the same readings, a Shelly re-reads its own counters and fills gaps from its records.
- ``after_acked=False``: a state goes out at once, before the reading that carries the same totals, so it is
  never behind a reading the broker has. For producers that are the only ones counting (the adc integrates
  power itself): restoring an older state would make a published counter step back.

Either way states are coalesced per device (only the latest matters), nothing piles up while the broker is
away, and the device loop never waits.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bus.producer import ProducerContext


class StateSaver:
    """Publishes the latest offered state per device by the chosen rule; ``save_now`` on stop."""

    def __init__(self, ctx: ProducerContext, *, after_acked: bool = True, min_interval_s: float = 0.0,
                 name: str = "state") -> None:
        """``min_interval_s`` limits how often acknowledged states are published (an accelerated clock needs
        no more); it does not apply with ``after_acked=False``, where every state precedes its reading."""
        self.ctx, self.after_acked, self.min_interval_s = ctx, after_acked, min_interval_s
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def offer(self, device: str, state: dict[str, Any]) -> None:
        with self._lock:
            self._pending[device] = state
        if not self.after_acked and self.ctx.connected():
            self._publish()  # now, in the caller's thread: before the reading it is about to queue
        else:
            self._wake.set()

    def save_now(self, timeout: float = 3.0) -> bool:
        """On stop: (wait for the readings to be acknowledged, then) publish the last states."""
        if self.after_acked and not self.ctx.flush(timeout):
            return False
        self._publish()
        return True

    def _publish(self) -> None:
        with self._lock:
            states, self._pending = self._pending, {}
        for device, state in states.items():
            self.ctx.save_state(device, state)

    def _ready(self, timeout: float) -> bool:
        return self.ctx.flush(timeout) if self.after_acked else self.ctx.connected()

    def _loop(self) -> None:
        while not self.ctx.stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if not self._pending:
                continue
            if self._ready(1.0):
                self._publish()
                if self.min_interval_s and self.after_acked:
                    self.ctx.stopping.wait(self.min_interval_s)
            else:
                self._wake.set()  # not acknowledged (or not connected) yet: look again
                self.ctx.stopping.wait(0.2)
