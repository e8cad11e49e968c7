"""A producer context without a broker, for unit tests of a plugin's loop (shelly, p1, adc).

``RecordingContext`` offers the ``bus.producer.ProducerContext`` surface a plugin uses and records what the
plugin does, in order. It is a stand-in only where the real thing cannot give the test what it needs: hours of
device time in milliseconds, or an exact order of events; each plugin also has end-to-end tests through a real
Mosquitto. Every reading goes through the real envelope encoder and is decoded back with the real validator
(schema and metrics table), so a reading the bus would reject fails the test.

Time: with a ``bus.clock.EmulatedClock``, ``wait(s)`` advances that clock instead of sleeping and runs the
events scheduled with ``at(t, action)``; without one it waits for real. ``stop_after_waits`` ends a loop
after that many waits (for loops paced by the host's clock).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from bus import envelope
from bus.clock import EmulatedClock
from bus.log import RateLimitedLog
from bus.runtime import Counters


class RecordingContext:
    def __init__(self, source: str, name: str = "test", *, clock: EmulatedClock | None = None,
                 states: dict[str, dict] | None = None, stop_after_waits: int | None = None,
                 connected: bool = True) -> None:
        self.source, self.name, self.clock = source, name, clock
        self.log = logging.getLogger(f"wattbus.{name}")
        self.bad_input_log = RateLimitedLog(self.log)
        self.tz = ZoneInfo("Europe/Brussels")
        self.stopping = threading.Event()
        self.counters = Counters()
        self.states: dict[str, dict] = states if states is not None else {}
        self.messages: list[list[envelope.Reading]] = []  # one list per published message
        self.events: list[tuple[str, str, Any]] = []  # ("reading" | "state" | "status" | "dlq", device, what)
        self.subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self.outside_prefix: set[str] = set()
        self.is_connected = connected
        self.stop_at: float | None = None
        self.stop_after_waits = stop_after_waits
        self._scheduled: list[tuple[float, Callable[[], None]]] = []
        self._lock = threading.Lock()

    # -- what a producer calls --------------------------------------------------------------------
    def wait(self, seconds: float) -> bool:
        if self.stop_after_waits is not None:
            self.stop_after_waits -= 1
            if self.stop_after_waits <= 0:
                self.stopping.set()
        if self.clock is None:
            return self.stopping.wait(max(0.0, seconds))
        now = self.clock.advance(max(0.0, seconds))
        while self._scheduled and self._scheduled[0][0] <= now:
            _, action = self._scheduled.pop(0)
            action()
        if self.stop_at is not None and now >= self.stop_at:
            self.stopping.set()
        return self.stopping.is_set()

    def publish_reading(self, device: str, metrics: dict[str, float], *, ts: int | None = None,
                        period_s: float = 0, quality: str = "ok") -> None:
        ts = int(time.time() * 1000) if ts is None else ts
        self._record(device, envelope.encode_reading(self.source, device, ts, metrics, seq=0,
                                                     period_s=period_s, quality=quality))

    def publish_readings(self, device: str, readings: list[dict[str, Any]]) -> None:
        self._record(device, envelope.encode_batch(self.source, device, [dict(r, seq=0) for r in readings]))

    def set_device_status(self, device: str, online: bool) -> None:
        with self._lock:
            self.events.append(("status", device, online))

    def load_state(self, device: str, timeout: float = 3.0) -> dict | None:
        return self.states.get(device)

    def save_state(self, device: str, state: dict) -> None:
        with self._lock:
            self.states[device] = state
            self.events.append(("state", device, state))

    def subscribe(self, topic_filter: str, callback: Callable[[str, bytes], None], *,
                  outside_prefix: bool = False) -> None:
        self.subscriptions[topic_filter] = callback
        if outside_prefix:
            self.outside_prefix.add(topic_filter)

    def dead_letter(self, payload: bytes, reason: str, topic: str = "") -> None:
        self.counters.inc("dead_letters")
        with self._lock:
            self.events.append(("dlq", topic, (payload, reason)))

    def connected(self) -> bool:
        return self.is_connected

    def flush(self, timeout: float) -> bool:
        return self.is_connected  # nothing is ever in flight here

    # -- what a test looks at -----------------------------------------------------------------------
    def at(self, t: float, action: Callable[[], None]) -> None:
        """Run ``action`` once the clock reaches ``t`` (from inside ``wait``)."""
        self._scheduled.append((t, action))
        self._scheduled.sort(key=lambda e: e[0])

    def _record(self, device: str, payload: bytes) -> None:
        decoded = envelope.decode(payload)  # raises if the bus would reject it
        with self._lock:
            self.messages.append(decoded)
            self.events.append(("reading", device, decoded))

    @property
    def readings(self) -> list[envelope.Reading]:
        with self._lock:
            return [r for msg in self.messages for r in msg]

    def of(self, device: str) -> list[envelope.Reading]:
        return [r for r in self.readings if r.device == device]

    @property
    def batches(self) -> list[list[envelope.Reading]]:
        """Messages that were batches (several readings, or readings covering a period)."""
        with self._lock:
            return [msg for msg in self.messages if len(msg) > 1 or msg[0].period_s > 0]

    def live(self) -> list[envelope.Reading]:
        return [r for r in self.readings if r.period_s == 0]

    def kinds(self, *kinds: str, device: str | None = None) -> list[tuple[str, str, Any]]:
        with self._lock:
            return [e for e in self.events if e[0] in kinds and (device is None or e[1] == device)]

    @property
    def device_status(self) -> list[tuple[str, bool]]:
        return [(d, online) for _, d, online in self.kinds("status")]

    @property
    def dead(self) -> list[tuple[bytes, str]]:
        return [what for _, _, what in self.kinds("dlq")]

    def count(self, name: str) -> float:
        return self.counters.get(name)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; readings={len(self.readings)} "
                                     f"status={self.device_status} counters={self.counters.snapshot()}")
            time.sleep(0.02)
