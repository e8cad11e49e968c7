"""Test helpers for the shelly producer: a producer context without a broker, driven by a fake clock.

``FakeContext`` implements the ``ProducerContext`` surface the producer uses.  Every reading goes
through the real envelope encoder and is decoded back with the real validator (schema and metrics
table), so a reading the bus would reject fails the test.  ``wait(s)`` advances the shared fake
clock instead of sleeping and runs the test's scripted events, so hours of device time pass in
milliseconds while the producer's own code (schedule, retries, backfill) runs unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable
from zoneinfo import ZoneInfo

from bus import envelope
from bus.log import RateLimitedLog
from bus.runtime import Counters
from producers.shelly import Config
from producers.shelly.device import StateSaver
from producers.shelly.emulator import FakeClock
from producers.shelly.poller import DevicePoller

# 2024-06-21 08:00:00 UTC (10:00 in Brussels): a sunny June morning, minute-aligned
JUNE_MORNING = 1718956800


class FakeContext:
    source = "shelly"

    def __init__(self, clock: FakeClock | None = None, *, states: dict[str, dict] | None = None,
                 name: str = "shelly-test") -> None:
        self.name = name
        self.clock = clock
        self.log = logging.getLogger(f"wattbus.{name}")
        self.bad_input_log = RateLimitedLog(self.log)
        self.tz = ZoneInfo("Europe/Brussels")
        self.stopping = threading.Event()
        self.counters = Counters()
        self.messages: list[list[envelope.Reading]] = []  # one list per published message
        self.device_status: list[tuple[str, bool]] = []
        self.states = states if states is not None else {}
        self.subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self.dead: list[tuple[bytes, str]] = []
        self.events: list[tuple[float, Callable[[], None]]] = []
        self.stop_at: float | None = None
        self._lock = threading.Lock()

    # -- what the producer calls ------------------------------------------------------------------
    def wait(self, seconds: float) -> bool:
        if self.clock is not None:
            self.clock.advance(max(0.0, seconds))
            now = self.clock()
            while self.events and self.events[0][0] <= now:
                _, action = self.events.pop(0)
                action()
            if self.stop_at is not None and now >= self.stop_at:
                self.stopping.set()
            return self.stopping.is_set()
        return self.stopping.wait(max(0.0, seconds))  # no fake clock: real time

    def publish_reading(self, device: str, metrics: dict[str, float], *, ts: int | None = None,
                        period_s: float = 0, quality: str = "ok") -> None:
        assert ts is not None, "the shelly producer stamps readings with the device's time"
        payload = envelope.encode_reading("shelly", device, ts, metrics, seq=0, period_s=period_s, quality=quality)
        with self._lock:
            self.messages.append(envelope.decode(payload))

    def publish_readings(self, device: str, readings: list[dict[str, Any]]) -> None:
        payload = envelope.encode_batch("shelly", device, [dict(r, seq=0) for r in readings])
        with self._lock:
            self.messages.append(envelope.decode(payload))

    def set_device_status(self, device: str, online: bool) -> None:
        self.device_status.append((device, online))

    def load_state(self, device: str, timeout: float = 3.0) -> dict | None:
        return self.states.get(device)

    def save_state(self, device: str, state: dict) -> None:
        self.states[device] = state

    def subscribe(self, topic_filter: str, callback: Callable[[str, bytes], None]) -> None:
        self.subscriptions[topic_filter] = callback

    def dead_letter(self, payload: bytes, reason: str, topic: str = "") -> None:
        self.dead.append((payload, reason))

    # -- what the tests look at -------------------------------------------------------------------
    def at(self, t: float, action: Callable[[], None]) -> None:
        self.events.append((t, action))
        self.events.sort(key=lambda e: e[0])

    @property
    def readings(self) -> list[envelope.Reading]:
        with self._lock:
            return [r for msg in self.messages for r in msg]

    @property
    def batches(self) -> list[list[envelope.Reading]]:
        with self._lock:
            return [msg for msg in self.messages if len(msg) > 1 or msg[0].period_s > 0]

    def live(self) -> list[envelope.Reading]:
        return [r for r in self.readings if r.period_s == 0]

    def count(self, name: str) -> float:
        return self.counters.get(name)


def make_poller(ctx: FakeContext, emu, *, device: str = "mains", role: str = "grid", **cfg: Any) -> DevicePoller:
    """A real DevicePoller (real httpx client, real retries) on the fake context and clock."""
    cfg.setdefault("interval", 60.0)
    cfg.setdefault("timeout", 2.0)
    config = Config(type="shelly", device=device, host=emu.url, role=role, **cfg)
    spec = config.specs(ctx.name)[0]
    saver = _ImmediateSaver(ctx)
    return DevicePoller(ctx, spec, saver, clock=ctx.clock or time.monotonic)


class _ImmediateSaver(StateSaver):
    """Publishes states at once (the fake context has nothing in flight), without a thread."""

    def __init__(self, ctx: FakeContext) -> None:  # noqa: D401 - no thread on purpose
        self.ctx = ctx

    def offer(self, device: str, state: dict) -> None:
        self.ctx.save_state(device, state)

    def save_now(self, timeout: float = 3.0) -> bool:
        return True


def truth_counters(emu, ts: int, invert: bool = False) -> dict[str, float]:
    """The emulator's exact counters at minute boundary ``ts``, as the producer would name them."""
    imp, exp = emu.meter.truth[ts]
    if invert:
        imp, exp = exp, imp
    out = {"energy_import_wh": sum(imp), "energy_export_wh": sum(exp)}
    for n in range(3):
        out[f"energy_import_l{n + 1}_wh"] = imp[n]
        out[f"energy_export_l{n + 1}_wh"] = exp[n]
    return out
