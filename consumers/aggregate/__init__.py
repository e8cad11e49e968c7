"""Aggregate consumer: readings into calendar buckets (15m .. 1y, local time), the site balance, costs.

Each changed bucket is upserted into the ``rollups`` table of ``sink`` and published retained on
``agg/{source}/{device}/{period}``; messages are acknowledged only once the buckets are in the sink. See
README.md for what is computed and how, engine.py for the mechanics.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from bus import topics
from bus.config import PluginConfig
from bus.consumer import ConsumerContext
from bus.envelope import NAME_CORE, NAME_RULE, is_name
from bus.plugin import Plugin

_DEVICE_REF = re.compile(rf"{NAME_CORE}/{NAME_CORE}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?\s*$")
_UNITS_MS = {"ms": 1, "s": 1000, None: 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000,
             "w": 604_800_000}


def duration_ms(value: str | float, key: str) -> int:
    """'7d', '15m', '90s', '2h' or a number of seconds -> milliseconds; ValueError naming ``key``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"`{key}`: expected a duration >= 0")
        return int(value * 1000)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"`{key}`: {value!r} is not a duration "
                         "(expected e.g. \"90s\", \"15m\", \"2h\", \"7d\")")
    return int(float(m.group(1)) * _UNITS_MS[m.group(2)])


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    sink: str = "sqlite:///var/lib/wattbus/wattbus.db"
    """Where the ``rollups`` go, by URL (any store sink: sqlite, mysql, mongodb, influx)."""
    readings: str | None = None
    """Where the raw readings are (read at start to resume exactly); default: the store consumer's sink."""
    topics: list[str] = msgspec.field(default_factory=lambda: [topics.ALL_READINGS])
    site: str = "home"
    """Name of the site balance device: buckets on agg/site/{site}/{period}."""
    grid: list[str] = msgspec.field(default_factory=list)
    """The grid connection's meter(s), as "source/device" (e.g. "shelly/mains", "p1/meter")."""
    solar: list[str] = msgspec.field(default_factory=list)
    battery: list[str] = msgspec.field(default_factory=list)
    loads: list[str] = msgspec.field(default_factory=list)
    """Devices that measure consumers (priced at the import price; not part of the balance)."""
    grace: str | float = "7d"
    """How long after its end a bucket still takes late readings (Shelly backfills up to 7 days)."""
    gap: str | float = "15m"
    """Instantaneous readings further apart than this leave a gap: not integrated, coverage < 1."""
    complete: float = 0.99
    """Coverage from which a finished bucket is `complete` instead of `partial`."""
    max_power_w: float = 100_000.0
    """A counter rising faster than this could deliver was swapped or reset: that span is not counted."""
    restore_wait: str | float = "30s"
    """At start: how long to wait for the store to hold the readings counted before the restart."""
    tick: str | float = "30s"
    """How often statuses are re-checked by the wall clock (a silent meter's buckets close)."""
    batch_max: int = 10_000
    """Readings handled (and buckets written) at once, at most."""
    batch_wait: float = 0.1
    inflight: int = 10
    """Messages the broker may send before they are acknowledged: the bound on what waits in memory (a
    replayed message carries up to a few thousand readings)."""

    def __post_init__(self) -> None:
        from urllib.parse import urlsplit

        from bus.sinks.base import SINKS

        for key in ("sink", "readings"):
            url = getattr(self, key)
            if url is not None and urlsplit(url).scheme not in SINKS:
                raise ValueError(f"`{key}`: unknown URL scheme {urlsplit(url).scheme!r}; expected one of "
                                 f"{', '.join(SINKS)}")
        if not is_name(self.site):
            raise ValueError(f"`site`: {self.site!r} is not allowed: {NAME_RULE}")
        seen: dict[str, str] = {}
        for key in ("grid", "solar", "battery", "loads"):
            for ref in getattr(self, key):
                if not _DEVICE_REF.fullmatch(ref):
                    raise ValueError(f"`{key}`: {ref!r} is not \"source/device\" (e.g. \"shelly/mains\")")
                if ref in seen:
                    raise ValueError(f"`{key}`: {ref} is already listed in `{seen[ref]}`; "
                                     "a device has one role")
                seen[ref] = key
        if (self.solar or self.battery) and not self.grid:
            raise ValueError("`grid`: the site balance needs the grid meter(s) when solar or battery "
                             "is given")
        for key in ("grace", "gap", "restore_wait", "tick"):
            duration_ms(getattr(self, key), key)
        if duration_ms(self.gap, "gap") < 1000:
            raise ValueError("`gap`: expected at least 1 s")
        if not 0 < self.complete <= 1:
            raise ValueError("`complete`: expected a fraction in (0, 1]")
        if self.max_power_w <= 0:
            raise ValueError("`max_power_w`: expected a power > 0")
        if self.batch_max < 1:
            raise ValueError("`batch_max`: expected >= 1")


def run(ctx: ConsumerContext, cfg: Config) -> None:
    from consumers.aggregate.service import AggregateService

    service = AggregateService(ctx, cfg)
    try:
        service.run()
    finally:
        service.close()


def _bench(argv: list[str]) -> int:
    from consumers.aggregate.bench import main

    return main(argv)


def _buckets_sink(cfg: Config) -> str:
    return cfg.sink


PLUGIN = Plugin("consumer", "aggregate", Config, run, bench=_bench, demo=Path(__file__).with_name("demo.toml"),
                buckets_sink=_buckets_sink)
