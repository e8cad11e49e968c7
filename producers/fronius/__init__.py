"""fronius producer: a Fronius PV inverter (Symo, Primo, GEN24, ... with a Datamanager) through its local
Solar API v1 over HTTP, polled like the Shelly.

One section publishes one device of the site's power flow (``GetPowerFlowRealtimeData``): the PV production
(``role = "solar"``, with the inverter's voltage, current, frequency, per-phase values and lifetime energy
from ``GetInverterRealtimeData``), or the grid, the house load or the battery as the inverter's meter sees
them. Night-time (inverter asleep) is told apart from an outage. See README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from bus.config import PluginConfig
from bus.envelope import NAME_PATTERN
from bus.plugin import Plugin

from .fields import metric_keys

if TYPE_CHECKING:
    from bus.producer import ProducerContext

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    """``[producer.NAME] type = "fronius"``."""

    host: str
    """The Datamanager's (or GEN24's) address: ``192.168.1.30``, ``fronius.lan:80`` or ``http://...``."""
    role: Literal["solar", "grid", "load", "battery"] = "solar"
    """Which flow of the site this section publishes: solar (PV production and the inverter's own data), grid
    (needs a Fronius Smart Meter), load (the house), battery (with its state of charge)."""
    device: Name | None = None
    """Device name on the bus (default: the section name)."""
    interval: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 10.0
    inverter: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    """The inverter's DeviceId on the Solar Net (1 unless there are several)."""
    three_phase: bool | None = None
    """Read 3PInverterData (per-phase voltage and current); default: ask, and stop asking if it is refused."""
    asleep_readings: bool = True
    """While the inverter sleeps (no answer after it reported no production), publish 0 W (quality
    "estimated") every interval rather than nothing."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    retries: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    max_clock_skew_s: Annotated[float, msgspec.Meta(ge=0)] = 120.0
    """The device's clock stamps the readings unless it is further than this from the host's."""

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ValueError("`host`: the Datamanager's address, e.g. \"192.168.1.30\"")
        if self.role != "solar" and self.three_phase:
            raise ValueError("`three_phase`: per-phase inverter data is published by a role = \"solar\" "
                             "section")


def run(ctx: ProducerContext, cfg: Config) -> None:
    """Poll the Datamanager every ``interval`` until ``ctx.stopping`` is set."""
    from .poller import Poller

    Poller(ctx, cfg).run()


def emulator(argv: list[str]) -> int:
    """``wattbus emulate fronius``: a Datamanager serving the Solar API v1 (``emulator.py``)."""
    from .emulator import main

    return main(argv)


PLUGIN = Plugin("producer", "fronius", Config, run, emulator=emulator,
                demo=Path(__file__).with_name("demo.toml"), metrics=metric_keys)

__all__ = ["Config", "PLUGIN", "run"]
