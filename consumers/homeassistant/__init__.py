"""Home Assistant consumer: every device on the bus in HA through MQTT discovery, Energy-dashboard ready."""

from __future__ import annotations

import re
import threading
from typing import Literal

import msgspec

from bus import topics
from bus.config import PluginConfig
from bus.consumer import ConsumerContext
from bus.envelope import NAME_RULE, is_name

_TOPIC_LEVEL = re.compile(r"^[a-zA-Z0-9_-]+(/[a-zA-Z0-9_-]+)*$")
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,32}$")


class RelayConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    """The relay's name in ``relay/{name}/state`` and ``relay/{name}/set``."""
    title: str = ""
    """Its name in Home Assistant (default: ``name``)."""
    process: str | None = None
    """The relay consumer's process name: its status joins the switch's availability."""

    def __post_init__(self) -> None:
        if not is_name(self.name):
            raise ValueError(f"`name` {self.name!r} is not allowed: {NAME_RULE}")
        if self.process is not None and not is_name(self.process):
            raise ValueError(f"`process` {self.process!r} is not allowed: {NAME_RULE}")


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    discovery: Literal["device", "entity"] = "device"
    """"device": one document per device (Home Assistant 2024.11 and later); "entity": one per entity."""
    discovery_prefix: str = "homeassistant"
    """HA's discovery prefix (HA's MQTT setting of the same name). Never gets wattbus's topic_prefix."""
    ha_status_topic: str = "homeassistant/status"
    """HA's birth/last-will topic: ``online`` there makes this consumer send all discovery again."""
    node_id: str = "wattbus"
    """First part of every unique_id, object id and entity id (``sensor.wattbus_p1_mains_power_w``)."""
    min_interval: float = 10.0
    """Seconds between two states of one device; the latest values are sent when the interval ends."""
    include: list[str] = msgspec.field(default_factory=lambda: ["*"])
    """Devices to show, as ``source/device`` patterns (fnmatch), e.g. ["p1/*", "shelly/solar"]."""
    exclude: list[str] = msgspec.field(default_factory=list)
    """Devices to hide (their discovery is cleared at start if it was published before)."""
    max_devices: int = 500
    """Cap on devices shown; devices past it are counted (``devices_over_cap``) and ignored."""
    forget_after: float = 0
    """Clear a device from HA when it sent nothing for this many seconds (0 = never)."""
    prune_unconfigured: bool = True
    """Clear a device from HA at start when its producer process is no longer in this config file (only
    when this file configures producers at all; set false when producers run from other config files)."""
    relays: list[RelayConfig] = msgspec.field(default_factory=list)
    """Relays of the relay consumer, each shown as a switch (output) and a select (mode auto/on/off)."""
    inflight: int = 1000

    def __post_init__(self) -> None:
        if not _TOPIC_LEVEL.match(self.discovery_prefix):
            raise ValueError("`discovery_prefix` must be topic levels of letters, digits, _ and - "
                             "(e.g. \"homeassistant\")")
        if not _TOPIC_LEVEL.match(self.ha_status_topic):
            raise ValueError("`ha_status_topic` must be a topic without wildcards "
                             "(e.g. \"homeassistant/status\")")
        if not _ID.match(self.node_id):
            raise ValueError("`node_id` must be 1-32 letters, digits, _ or -")
        if not self.min_interval >= 0:
            raise ValueError("`min_interval` must be >= 0 seconds")
        if not 0 < self.max_devices <= 100_000:
            raise ValueError("`max_devices` must be 1..100000")
        if not self.forget_after >= 0:
            raise ValueError("`forget_after` must be >= 0 seconds (0 = never)")
        if len({r.name for r in self.relays}) != len(self.relays):
            raise ValueError("`relays`: each relay name may appear once")


def run(ctx: ConsumerContext, cfg: Config) -> None:
    from consumers.homeassistant.bridge import Bridge

    bridge = Bridge(ctx, cfg)
    ctx.client.wait_connected(10)
    bridge.bootstrap()
    ctx.subscribe(cfg.ha_status_topic, bridge.on_ha_status, outside_prefix=True)
    ctx.subscribe(topics.ALL_STATUS, bridge.on_device_status)
    ctx.subscribe(topics.process_health("+"), bridge.on_health)
    ctx.subscribe(topics.aggregate("+", "+", "1d"), bridge.on_bucket)
    publisher = threading.Thread(target=bridge.publisher, name="ha-publisher", daemon=True)
    publisher.start()
    try:
        ctx.consume_readings(bridge.on_readings, batch_max=5000, batch_wait=0.1)
    finally:
        ctx.stopping.set()
        publisher.join(5.0)
