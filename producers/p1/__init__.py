"""The `p1` producer: a DSMR smart meter's P1 port (serial or TCP) -> readings on `p1/{device}/reading`.

See README.md for what it publishes and every config key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bus.config import PluginConfig
from bus.envelope import NAME_PATTERN
from bus.plugin import Plugin
from producers.p1.obis import VERSIONS, metric_keys
from producers.p1.ports import parse_tcp

if TYPE_CHECKING:
    from bus.producer import ProducerContext

ROLES = ("grid", "solar", "load", "battery")
SUB_SUFFIXES = ("_gas", "_water")


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    port: str = "/dev/ttyUSB0"
    """Serial device (USB P1 cable), or `tcp://host:port` for a P1 WiFi dongle / ser2net."""
    dsmr: str = "5"
    """Meter specification: 2.2, 3, 4, 4+, 5, 5B (Belgium), 5L (Luxembourg), 5S (Sweden), Q3D, ISKRA_IE, 5EONHU."""
    device: str | None = None
    """Device name in topics; default: the config section's name. Gas/water go to `<device>_gas`/`_water`."""
    role: str = "grid"
    interval: float = 10.0
    """Seconds between published readings (0: every telegram)."""
    power: str = "mean"
    """Instantaneous values over an interval: `mean` of all telegrams, or the `latest` one."""
    timezone: str | None = None
    """Zone of the meter's clock; default: site.timezone."""
    meter_clock: bool = True
    """Stamp readings with the telegram's own time (0-0:1.0.0) when it has one; false: the host's clock."""
    timeout: float = 60.0
    """No complete telegram for this many seconds = the connection is dead: reconnect."""
    retry_max: float = 60.0
    """Longest wait between reconnection attempts (exponential backoff from 1 s)."""

    def __post_init__(self) -> None:
        if self.dsmr not in VERSIONS:
            raise ValueError(f"`dsmr`: unknown specification {self.dsmr!r} (expected one of {', '.join(VERSIONS)})")
        if self.role not in ROLES:
            raise ValueError(f"`role`: expected one of {', '.join(ROLES)}")
        if self.power not in ("mean", "latest"):
            raise ValueError('`power`: expected "mean" or "latest"')
        if self.interval < 0:
            raise ValueError("`interval`: expected seconds >= 0")
        if self.timeout <= 0 or self.retry_max <= 0:
            raise ValueError("`timeout` and `retry_max`: expected seconds > 0")
        if not self.port:
            raise ValueError('`port`: expected a serial device ("/dev/ttyUSB0") or "tcp://host:port"')
        try:
            parse_tcp(self.port)
        except ValueError as exc:
            raise ValueError(f"`port`: {exc}") from None
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"`timezone`: unknown time zone {self.timezone!r}") from None
        if self.device is not None and not re.match(NAME_PATTERN, self.device + max(SUB_SUFFIXES, key=len)):
            raise ValueError(f"`device`: {self.device!r} must match {NAME_PATTERN} and leave room for '_water'")


def run(ctx: ProducerContext, cfg: Config) -> None:
    """Read telegrams until ctx.stopping; reconnect with backoff when the port or connection is lost."""
    from producers.p1.service import P1Service

    P1Service(ctx, cfg).run()


def emulator(argv: list[str]) -> int:
    """``wattbus emulate p1``: telegrams on a pseudo-terminal or over TCP (``emulator.py``)."""
    from producers.p1.emulator import main

    return main(argv)


PLUGIN = Plugin("producer", "p1", Config, run, emulator=emulator, demo=Path(__file__).with_name("demo.toml"),
                metrics=metric_keys)

__all__ = ["Config", "PLUGIN", "run"]
