"""Test helpers for the weather producer: the shared recording context (``tests/support/context.py``) on an
emulated clock, a real Poller (real httpx client, real retries) against the emulator's HTTP server, and the
forecasts it would publish, kept in a list (the recording context has no broker; the e2e test has one)."""

from __future__ import annotations

from typing import Any

import msgspec

from bus import envelope
from bus.clock import EmulatedClock
from producers.weather import Config
from producers.weather.poller import Poller
from tests.support.context import RecordingContext

# 2024-06-21 10:07 UTC: a June late morning, not on an hour
JUNE = 1718964420.0
KEY = "0123456789abcdef0123456789abcdef"


class Forecasts(list):
    """(topic, decoded readings) of every forecast published."""

    def __call__(self, topic: str, payload: bytes) -> None:
        self.append((topic, envelope.decode(payload)))


def context(clock: EmulatedClock, name: str = "weather") -> RecordingContext:
    return RecordingContext("weather", name, clock=clock)


def poller(ctx: RecordingContext, emu, forecasts: Forecasts | None = None, **cfg: Any) -> Poller:
    cfg.setdefault("latitude", 50.85)
    cfg.setdefault("longitude", 4.35)
    cfg.setdefault("timeout", 2.0)
    config = msgspec.convert({"type": "weather", "base_url": emu.url, **cfg}, Config)
    return Poller(ctx, config, clock=ctx.clock, host_time=ctx.clock,
                  publish_forecast=forecasts if forecasts is not None else Forecasts())
