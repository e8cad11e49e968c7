"""The device registry: what this consumer knows about each device it shows in Home Assistant.

A device is created by its first reading (or its first daily bucket) and grows one entity per metric key it
has sent: a metric never sent never becomes an entity. The registry also holds what availability needs (has
the device a status topic? which producer process publishes it?) and the latest values that make up the
device's state. It survives restarts without a file: it is rebuilt from the consumer's own retained discovery
documents and states on the broker (``restore_*``), so ``unique_id``s, entities and values carry on.

The number of devices is capped (``max_devices``): a flood of made-up device names costs a counter, not memory
and not thousands of entities in HA.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bus import topics
from bus.envelope import NAME_PATTERN
from bus.rollup import Bucket
from consumers.homeassistant.discovery import BUCKET_FIELDS, BUCKET_PREFIX, BUCKET_START, LAST_READING, Relay
from schemas import METRICS

_NAME = re.compile(NAME_PATTERN)
_SITE = re.compile(r"[^a-zA-Z0-9]+")


@dataclass(slots=True)
class Device:
    source: str
    device: str
    object_id: str
    keys: set[str] = field(default_factory=set)
    """Metric keys ever sent (one entity each)."""
    bucket_fields: set[str] = field(default_factory=set)
    currency: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    """The flat state: metric key -> latest value, ``today_*`` bucket fields, times."""
    last_ts: int = 0
    """Epoch ms of the latest reading (0: none yet)."""
    bucket_start: int = 0
    has_status: bool = False
    producer: str | None = None
    # publishing
    state_due: bool = False
    discovery_due: bool = False
    discovery_forced: bool = False
    last_publish: float = -1e18

    @property
    def name(self) -> str:
        return f"{self.source} {self.device}"

    def state(self) -> dict[str, Any]:
        return dict(self.values)


def site_id(topic_prefix: str) -> str:
    """``home1/`` -> ``home1``: the part of every id that keeps two sites on one broker apart."""
    return _SITE.sub("_", topic_prefix).strip("_")


class DeviceRegistry:
    """Devices by (source, device); not thread-safe on its own (the service holds one lock around it)."""

    def __init__(self, base_id: str, tz: ZoneInfo, *, max_devices: int, include: list[str],
                 exclude: list[str], relays: list[Relay] = ()):
        self.base_id = base_id
        self.tz = tz
        self.max_devices = max_devices
        self.include, self.exclude = include, exclude
        self.devices: dict[tuple[str, str], Device] = {}
        self.relays = {r.name: r for r in relays}
        self.status_seen: set[tuple[str, str]] = set()
        self.claims: dict[tuple[str, str], list[str]] = {}
        """Device -> the producer processes whose health named it, most recent last."""
        self.process_online: dict[str, bool] = {}
        self.over_cap = 0
        """Devices refused because ``max_devices`` was reached (counted once per message)."""

    # -- ids -------------------------------------------------------------------------------------
    def object_id(self, source: str, device: str) -> str:
        return f"{self.base_id}_{source}_{device}"

    def relay_object_id(self, name: str) -> str:
        return f"{self.base_id}_relay_{name}"

    def selected(self, source: str, device: str) -> bool:
        """``include`` / ``exclude`` patterns (fnmatch on ``source/device``)."""
        key = f"{source}/{device}"
        return (any(fnmatch.fnmatchcase(key, p) for p in self.include)
                and not any(fnmatch.fnmatchcase(key, p) for p in self.exclude))

    # -- devices ---------------------------------------------------------------------------------
    def get(self, source: str, device: str) -> Device | None:
        """The device, created if there is room; None when excluded, badly named or over the cap."""
        dev = self.devices.get((source, device))
        if dev is not None:
            return dev
        if not (_NAME.match(source) and _NAME.match(device)) or not self.selected(source, device):
            return None
        if len(self.devices) >= self.max_devices:
            self.over_cap += 1
            return None
        dev = self.devices[(source, device)] = Device(source, device, self.object_id(source, device))
        dev.has_status = (source, device) in self.status_seen
        dev.producer = self._owner((source, device))
        return dev

    def remove(self, source: str, device: str) -> Device | None:
        return self.devices.pop((source, device), None)

    # -- updates ---------------------------------------------------------------------------------
    def apply_reading(self, dev: Device, ts: int, metrics: dict[str, float]) -> bool:
        """Take a reading's values if it is not older than what the device shows; True when it changed."""
        if ts < dev.last_ts:
            return False  # a replayed or backfilled reading never hides a newer one
        new_keys = metrics.keys() - dev.keys
        if new_keys:
            dev.keys |= {k for k in new_keys if k in METRICS}
            dev.discovery_due = True
        dev.values.update(metrics)
        dev.last_ts = ts
        dev.values[LAST_READING] = datetime.fromtimestamp(ts / 1000, self.tz).isoformat()
        dev.state_due = True
        return True

    def apply_bucket(self, dev: Device, bucket: Bucket) -> bool:
        """Take today's ``1d`` bucket; an older bucket than the one shown is ignored."""
        if bucket.start < dev.bucket_start:
            return False
        fields = {f: getattr(bucket, f) for f in BUCKET_FIELDS if getattr(bucket, f) is not None}
        if not fields:
            return False
        if bucket.start > dev.bucket_start:  # a new day: yesterday's totals are not today's
            for f in dev.bucket_fields:
                dev.values[BUCKET_PREFIX + f] = None
        if fields.keys() - dev.bucket_fields or bucket.currency != dev.currency:
            dev.bucket_fields |= fields.keys()
            dev.currency = bucket.currency or dev.currency
            dev.discovery_due = True
        dev.bucket_start = bucket.start
        dev.values.update({BUCKET_PREFIX + f: v for f, v in fields.items()})
        dev.values[BUCKET_START] = datetime.fromtimestamp(bucket.start / 1000, self.tz).isoformat()
        dev.state_due = True
        return True

    def set_status_seen(self, source: str, device: str) -> Device | None:
        """A device status topic exists: it joins the device's availability. The device to rediscover."""
        key = (source, device)
        if key in self.status_seen or len(self.status_seen) >= 4 * self.max_devices:
            return None
        self.status_seen.add(key)
        dev = self.devices.get(key)
        if dev is not None and not dev.has_status:
            dev.has_status = True
            dev.discovery_due = True
            return dev
        return None

    def set_producer(self, process: str, device_keys: list[str]) -> list[Device]:
        """A producer's health names its devices: its status joins their availability (see ``_owner``)."""
        touched = []
        for item in device_keys[: 4 * self.max_devices]:
            if not isinstance(item, str) or item.count("/") != 1:
                continue
            key = tuple(item.split("/"))
            claimants = self.claims.get(key)
            if claimants is None:
                if len(self.claims) >= 4 * self.max_devices:
                    continue
                claimants = self.claims[key] = []
            if claimants[-1:] != [process]:
                if process in claimants:
                    claimants.remove(process)
                claimants.append(process)
                del claimants[:-8]
                touched.append(key)
        return self._reassign(touched)

    def set_process_status(self, process: str, online: bool) -> list[Device]:
        if self.process_online.get(process) == online or (
                process not in self.process_online and len(self.process_online) >= 4 * self.max_devices):
            return []
        self.process_online[process] = online
        return self._reassign([k for k, procs in self.claims.items() if process in procs])

    def _owner(self, key: tuple[str, str], current: str | None = None) -> str | None:
        """A device's producer: the latest online claimant, else the one it had, else the latest claimant.

        A renamed or moved producer leaves a retained health document behind that still names the device; it
        must not make the device unavailable for ever. A producer that stops keeps its devices (unavailable).
        """
        claimants = self.claims.get(key, [])
        online = [p for p in claimants if self.process_online.get(p)]
        if not online and current in claimants:
            return current
        return (online or claimants or [None])[-1]

    def _reassign(self, keys: list[tuple[str, str]]) -> list[Device]:
        changed = []
        for key in keys:
            dev = self.devices.get(key)
            owner = self._owner(key, dev.producer if dev is not None else None)
            if dev is not None and owner != dev.producer:
                dev.producer = owner
                dev.discovery_due = True
                changed.append(dev)
        return changed

    # -- restore from the broker -----------------------------------------------------------------
    def restore_discovery(self, source: str, device: str, component_ids: set[str], availability: list[str],
                          own_status: str, full: Any, currency: str | None = None) -> Device | None:
        """Rebuild a device from its retained discovery: entities, status topic, producer, currency."""
        dev = self.get(source, device)
        if dev is None:
            return None
        dev.currency = dev.currency or currency
        dev.keys |= {k for k in component_ids if k in METRICS}
        dev.bucket_fields |= {k[len(BUCKET_PREFIX):] for k in component_ids
                              if k.startswith(BUCKET_PREFIX) and k[len(BUCKET_PREFIX):] in BUCKET_FIELDS}
        for t in availability:
            if t == full(topics.status(source, device)):
                dev.has_status = True
                self.status_seen.add((source, device))
            elif t != own_status and t.startswith(full("wattbus/")) and t.endswith("/status"):
                process = t[len(full("wattbus/")):-len("/status")]
                if _NAME.match(process):
                    dev.producer = dev.producer or process
        return dev

    def restore_state(self, dev: Device, state: dict[str, Any]) -> None:
        """Take the values of the retained state, so the next state carries every entity's key.

        Only what this consumer writes is taken back: numbers (or null) for the device's metric and bucket
        keys, ISO times for the two time keys; anything else someone left on the topic is dropped.
        """
        numeric = dev.keys | {BUCKET_PREFIX + f for f in dev.bucket_fields}
        for k in numeric & state.keys():
            v = state[k]
            if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300):
                dev.values.setdefault(k, None if v is None else float(v))
        for k, attr in ((LAST_READING, "last_ts"), (BUCKET_START, "bucket_start")):
            v = state.get(k)
            if not isinstance(v, str) or len(v) > 40:
                continue
            try:
                ms = int(datetime.fromisoformat(v).timestamp() * 1000)
            except (ValueError, OverflowError, OSError):
                continue
            dev.values.setdefault(k, v)
            setattr(dev, attr, max(getattr(dev, attr), ms))
