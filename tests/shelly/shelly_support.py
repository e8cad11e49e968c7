"""Test helpers for the shelly producer: the shared recording context (``tests/support/context.py``) driven
by an emulated clock, so hours of device time pass in milliseconds while the producer's own code (schedule,
retries, backfill) runs unchanged; a real poller on it; the emulator's exact counters.
"""

from __future__ import annotations

import time
from typing import Any

from bus.clock import EmulatedClock
from bus.state import StateSaver
from producers.shelly import Config
from producers.shelly.poller import DevicePoller
from tests.support.context import RecordingContext

# 2024-06-21 08:00:00 UTC (10:00 in Brussels): a sunny June morning, minute-aligned
JUNE_MORNING = 1718956800


def shelly_context(clock: EmulatedClock | None = None, *, states: dict[str, dict] | None = None,
                   name: str = "shelly-test") -> RecordingContext:
    """The shared recording context as the shelly producer sees it (source "shelly")."""
    return RecordingContext("shelly", name, clock=clock, states=states)


def make_poller(ctx: RecordingContext, emu, *, device: str = "mains", role: str = "grid",
                **cfg: Any) -> DevicePoller:
    """A real DevicePoller (real httpx client, real retries) on the fake context and clock."""
    cfg.setdefault("interval", 60.0)
    cfg.setdefault("timeout", 2.0)
    config = Config(type="shelly", device=device, host=emu.url, role=role, **cfg)
    spec = config.specs(ctx.name)[0]
    saver = _ImmediateSaver(ctx)
    return DevicePoller(ctx, spec, saver, clock=ctx.clock or time.monotonic)


class _ImmediateSaver(StateSaver):
    """Publishes states at once (the fake context has nothing in flight), without a thread."""

    def __init__(self, ctx: RecordingContext) -> None:  # noqa: D401 - no thread on purpose
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
