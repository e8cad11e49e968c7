"""Simulated electricity meters: realistic household load, solar and EV profiles on the bus.

Each configured meter (by serial) publishes instantaneous power and never-decreasing import/export
counters every ``interval``, live or as one batch per day, pings a heartbeat, and takes profile changes
over MQTT. See README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bus.plugin import Plugin
from producers.sim.config import Config

if TYPE_CHECKING:
    from bus.producer import ProducerContext


def run(ctx: ProducerContext, cfg: Config) -> None:
    from producers.sim.loop import run as loop

    loop(ctx, cfg)


PLUGIN = Plugin("producer", "sim", Config, run, demo=Path(__file__).with_name("demo.toml"))

__all__ = ["Config", "PLUGIN", "run"]
