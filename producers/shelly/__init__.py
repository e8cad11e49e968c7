"""Shelly Pro 3EM producer: Gen2 HTTP RPC polling (or the device's own MQTT), with backfill.

Publishes per-phase and total power, voltage, current, apparent power, power factor, frequency,
neutral current and never-decreasing import/export counters on ``shelly/{device}/reading``; fills
outages from the device's minute records.  See README.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from bus.config import ConfigError, PluginConfig
from bus.envelope import NAME_PATTERN
from bus.plugin import Plugin
from bus.secrets import SecretError, read_secret

from .fields import metric_keys

if TYPE_CHECKING:
    from bus.producer import ProducerContext

Role = Literal["grid", "solar", "load", "battery"]
Mode = Literal["poll", "mqtt"]
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]


class DeviceEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One device of a multi-device section (``[[producer.NAME.devices]]``); unset keys inherit."""

    device: Name
    host: str | None = None
    role: Role | None = None
    invert: bool | None = None
    password_file: str | None = None
    password_env: str | None = None
    mqtt_prefix: str | None = None


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    """``[producer.NAME] type = "shelly"``."""

    device: Name | None = None
    """Device name on the bus (default: the section name)."""
    host: str | None = None
    """The device's address: ``192.168.1.20``, ``shelly-mains.lan:80`` or ``http://...``."""
    role: Role = "grid"
    interval: Annotated[float, msgspec.Meta(ge=1)] = 60.0
    mode: Mode = "poll"
    mqtt_prefix: str | None = None
    """The device's MQTT topic prefix (mode = "mqtt"; default: its device id, asked over HTTP)."""
    password_file: str | None = None
    password_env: str | None = None
    invert: bool | None = None
    """Negate power and swap import/export; default: true for role "solar", else false."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    retries: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    backfill_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    """Seconds per EMData request (a day of records takes a real device ~25 s)."""
    backfill: bool = True
    backfill_max_days: Annotated[float, msgspec.Meta(gt=0, le=60)] = 7.0
    devices: list[DeviceEntry] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        entries = self.devices or [DeviceEntry(device=self.device or "shelly")]
        names = [e.device for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"`devices`: device {dupes[0]!r} appears more than once; device names must be unique")
        if self.devices and (self.device or self.host):
            raise ValueError("`devices`: give either `device`/`host` or a `devices` list, not both")
        for e in entries:
            host = e.host or (self.host if not self.devices else None)
            prefix = e.mqtt_prefix or self.mqtt_prefix
            if self.mode == "poll" and not host:
                raise ValueError(f"`host`: required in poll mode (the device's address, e.g. \"192.168.1.20\")"
                                 f"{f' for device {e.device!r}' if self.devices else ''}")
            if self.mode == "mqtt" and not (host or prefix):
                raise ValueError("`mqtt_prefix`: mode = \"mqtt\" needs the device's topic prefix (or `host`, to "
                                 "ask the device for its id)")
            if (e.password_file or self.password_file) and (e.password_env or self.password_env):
                raise ValueError("`password_file`: give password_file or password_env, not both")
        if self.mqtt_prefix is not None and (not self.mqtt_prefix or any(c in self.mqtt_prefix for c in "#+$")):
            raise ValueError("`mqtt_prefix`: a topic prefix without #, + or $ "
                             "(e.g. \"shellypro3em-fce8c0dba900\")")

    def specs(self, section: str) -> list["DeviceSpec"]:
        """The devices of this section with inherited keys resolved and passwords read."""
        entries = self.devices or [DeviceEntry(device=self.device or section, host=self.host)]
        out = []
        for e in entries:
            role = e.role or self.role
            invert = e.invert if e.invert is not None else self.invert
            out.append(DeviceSpec(
                device=e.device, host=e.host or (self.host if not self.devices else None), role=role,
                invert=(role == "solar") if invert is None else invert,
                password=_password(section, e.password_file or self.password_file,
                                   e.password_env or self.password_env),
                mqtt_prefix=e.mqtt_prefix or self.mqtt_prefix, mode=self.mode, interval=self.interval,
                timeout=self.timeout, backfill_timeout=self.backfill_timeout, retries=self.retries,
                backfill=self.backfill,
                backfill_max_s=self.backfill_max_days * 86400))
        return out


@dataclass(frozen=True)
class DeviceSpec:
    device: str
    host: str | None
    role: str
    invert: bool
    password: str | None
    mqtt_prefix: str | None
    mode: str
    interval: float
    timeout: float
    backfill_timeout: float
    retries: int
    backfill: bool
    backfill_max_s: float


def _password(section: str, path: str | None, env: str | None) -> str | None:
    try:
        return read_secret(path, env, env_required=True)
    except SecretError as exc:
        key = "password_file" if path else "password_env"
        raise ConfigError([f"producer.{section}.{key}: {exc}"]) from None


def run(ctx: ProducerContext, cfg: Config) -> None:
    """Poll (or follow) every configured device until ``ctx.stopping`` is set."""
    from bus.state import StateSaver

    from .follower import MqttFollower
    from .poller import DevicePoller

    specs = cfg.specs(ctx.name)
    saver = StateSaver(ctx)
    workers = [MqttFollower(ctx, s, saver) if s.mode == "mqtt" else DevicePoller(ctx, s, saver) for s in specs]
    for s in specs:
        ctx.log.info("%s: %s %s every %g s as %s%s", s.device, "polling" if s.mode == "poll" else "following",
                     s.host if s.mode == "poll" else (s.mqtt_prefix or s.host), s.interval, s.role,
                     " (power and counters inverted)" if s.invert else "")
    if len(workers) == 1:
        workers[0].run()
    else:
        threads = [threading.Thread(target=w.run, name=f"shelly-{s.device}", daemon=True)
                   for w, s in zip(workers, specs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if not saver.save_now(3.0):
        ctx.log.warning("stopping before the broker acknowledged every reading: last state not saved")


def emulator(argv: list[str]) -> int:
    """``wattbus emulate shelly``: a Pro 3EM over HTTP RPC (``emulator.py``)."""
    from .emulator import main

    return main(argv)


PLUGIN = Plugin("producer", "shelly", Config, run, emulator=emulator, demo=Path(__file__).with_name("demo.toml"),
                metrics=metric_keys)

__all__ = ["Config", "DeviceEntry", "DeviceSpec", "PLUGIN", "run"]
