"""Test helpers for the fronius producer: the shared recording context (``tests/support/context.py``) on an
emulated clock, so a night passes in milliseconds while the producer's own code (schedule, retries, night
handling) runs unchanged against the emulator's real HTTP server."""

from __future__ import annotations

from typing import Any

import msgspec

from bus.clock import EmulatedClock
from producers.fronius import Config
from producers.fronius.poller import Poller
from tests.support.context import RecordingContext

# 2024-06-21 10:00 UTC (12:00 in Brussels): midsummer noon
JUNE_NOON = 1718964000.0
# the same day, 22:00 UTC (midnight in Brussels): the inverter has slept for a while
JUNE_NIGHT = JUNE_NOON + 12 * 3600


def context(clock: EmulatedClock, name: str = "pv") -> RecordingContext:
    return RecordingContext("fronius", name, clock=clock)


def poller(ctx: RecordingContext, emu, **cfg: Any) -> Poller:
    """A real Poller (real httpx client, real retries) on the recording context and its clock."""
    cfg.setdefault("timeout", 2.0)
    config = msgspec.convert({"type": "fronius", "host": emu.url, **cfg}, Config)
    return Poller(ctx, config, clock=ctx.clock, host_time=ctx.clock)


def run_until(ctx: RecordingContext, p: Poller, t: float) -> None:
    ctx.stop_at = t
    ctx.stopping.clear()
    p.run()
