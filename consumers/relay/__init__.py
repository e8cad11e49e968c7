"""Relay consumer: switch loads on solar surplus, cheap hours, a schedule or by hand, and safely.

One ``[consumer.NAME]`` drives one or more relays (``[consumer.NAME.relay.RELAY]``); each has its rules and
one output (``consumers/relay/outputs``: GPIO, Shelly over HTTP or MQTT RPC, Tasmota, a plain MQTT topic).
The decisions are in ``engine.py`` (pure), the bus glue in ``service.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from bus.config import PluginConfig
from bus.envelope import NAME_RULE, is_name
from bus.plugin import Plugin
from bus.tariff import Window, parse_hhmm
from consumers.relay.outputs import OutputConfig

if TYPE_CHECKING:
    from bus.consumer import ConsumerContext
    from consumers.relay.engine import Rules

DAY_S = 86_400.0


def _device(value: str, key: str) -> tuple[str, str]:
    source, _, device = value.partition("/")
    if not (is_name(source) and is_name(device)):
        raise ValueError(f"`{key}`: expected \"source/device\" (e.g. \"shelly/mains\"), got {value[:80]!r}; "
                         f"each part: {NAME_RULE}")
    return source, device


def _seconds(value: float, key: str, most: float = 7 * DAY_S) -> None:
    if not 0 <= value <= most:
        raise ValueError(f"`{key}` must be 0..{most:g} seconds, got {value!r}")


class SurplusConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """On when the site exports at least ``on_export_w`` for ``on_delay`` s; off again when, with the load
    on, it imports more than ``off_import_w`` for ``off_delay`` s."""

    on_export_w: float | None = None
    """Default: the relay's ``load_w`` (switch on once the surplus covers the whole load)."""
    off_import_w: float = 500.0
    on_delay: float = 300.0
    off_delay: float = 600.0

    def __post_init__(self) -> None:
        for key in ("on_export_w", "off_import_w"):
            v = getattr(self, key)
            if v is not None and not 0 <= v <= 1e6:
                raise ValueError(f"`{key}` must be 0..1000000 W, got {v!r}")
        for key in ("on_delay", "off_delay"):
            _seconds(getattr(self, key), key, DAY_S)


class CheapestConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """On during the cheapest ``hours`` of each daily window (import prices from ``[tariff]``, dynamic
    prices from its file or topic included)."""

    hours: float
    from_: str = msgspec.field(name="from", default="00:00")
    to: str = "24:00"
    slot: Literal["15m", "1h"] = "1h"

    def __post_init__(self) -> None:
        for key, text, allow_24 in (("from", self.from_, False), ("to", self.to, True)):
            try:
                parse_hhmm(text, allow_24=allow_24)
            except ValueError as exc:
                raise ValueError(f"`{key}`: {exc}") from None
        length_h = ((parse_hhmm(self.to, allow_24=True) - parse_hhmm(self.from_)) % 1440 or 1440) / 60
        if not 0 < self.hours <= length_h:
            raise ValueError(f"`hours` must be more than 0 and at most the window's {length_h:g} h, "
                             f"got {self.hours!r}")


class RelayConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    output: OutputConfig
    """Where the relay is: ``{kind = "gpio" | "shelly_http" | "shelly_mqtt" | "tasmota" | "mqtt", ...}``."""
    load_w: float = 0.0
    """The switched load's nominal draw (W): counted as the relay's own when no ``load`` meter is set."""
    load: str | None = None
    """``source/device`` of a meter measuring the load itself (its ``power_w``)."""
    surplus: SurplusConfig | None = None
    cheapest: CheapestConfig | None = None
    windows: list[Window] = msgspec.field(default_factory=list)
    """Local-time windows in which the relay is on (``{days = "mon-fri", from = "06:00", to = "07:00"}``)."""
    min_on: float = 300.0
    min_off: float = 300.0
    max_switches_per_hour: int = 6
    """0 = no cap. Manual commands and the safe state are not held back by it."""
    safe_state: Literal["off", "on"] = "off"
    stale_after: float = 120.0
    """Seconds without a grid reading before the relay goes to its safe state (surplus rule only)."""
    manual_timeout: float = 4 * 3600.0
    """Seconds after which a manual on/off falls back to auto (0 = never)."""

    def __post_init__(self) -> None:
        if not 0 <= self.load_w <= 1e6:
            raise ValueError(f"`load_w` must be 0..1000000 W, got {self.load_w!r}")
        if self.load is not None:
            _device(self.load, "load")
        for key in ("min_on", "min_off", "stale_after", "manual_timeout"):
            _seconds(getattr(self, key), key)
        if self.stale_after == 0:
            raise ValueError("`stale_after` must be more than 0 seconds")
        if not 0 <= self.max_switches_per_hour <= 3600:
            raise ValueError(f"`max_switches_per_hour` must be 0..3600 (0 = no cap), "
                             f"got {self.max_switches_per_hour!r}")
        if self.surplus is not None and self.surplus.on_export_w is None and self.load_w == 0:
            raise ValueError("`surplus.on_export_w`: set it, or set `load_w` (the default threshold)")

    def rules(self) -> Rules:
        from consumers.relay.engine import Cheapest, Rules, Surplus

        s, c = self.surplus, self.cheapest
        return Rules(
            load_w=self.load_w,
            surplus=None if s is None else Surplus(
                on_export_w=self.load_w if s.on_export_w is None else s.on_export_w,
                off_import_w=s.off_import_w, on_delay_s=s.on_delay, off_delay_s=s.off_delay),
            cheapest=None if c is None else Cheapest(
                hours=c.hours, start=parse_hhmm(c.from_), end=parse_hhmm(c.to, allow_24=True) % 1440,
                slot_s=900 if c.slot == "15m" else 3600),
            windows=tuple(self.windows), min_on_s=self.min_on, min_off_s=self.min_off,
            max_switches_per_hour=self.max_switches_per_hour, safe_state=self.safe_state == "on",
            stale_after_s=self.stale_after, manual_timeout_s=self.manual_timeout)


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    grid: str | None = None
    """``source/device`` of the grid meter (net ``power_w``, import positive); needed by surplus rules."""
    relay: dict[str, RelayConfig] = msgspec.field(default_factory=dict)
    tick: float = 1.0
    """Seconds between two decisions when no reading comes (delays, expiries, staleness)."""

    def __post_init__(self) -> None:
        if self.grid is not None:
            _device(self.grid, "grid")
        if not self.relay:
            raise ValueError("`relay`: configure at least one relay ([consumer.NAME.relay.RELAY])")
        for name, r in self.relay.items():
            if not is_name(name):
                raise ValueError(f"`relay.{name[:40]}`: a relay name must match {NAME_RULE}")
            if r.surplus is not None and self.grid is None:
                raise ValueError(f"`relay.{name}.surplus` needs `grid` (the grid meter, e.g. \"shelly/mains\")")
        if not 0.05 <= self.tick <= 60:
            raise ValueError(f"`tick` must be 0.05..60 seconds, got {self.tick!r}")


def run(ctx: ConsumerContext, cfg: Config) -> None:
    from consumers.relay.service import serve

    serve(ctx, cfg)


def emulator(argv: list[str]) -> int:
    from consumers.relay.emulator_tasmota import main

    return main(argv)


PLUGIN = Plugin("consumer", "relay", Config, run, emulator=emulator, demo=Path(__file__).with_name("demo.toml"))
