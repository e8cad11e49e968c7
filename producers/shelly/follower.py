"""``mode = "mqtt"``: follow the device's own MQTT status topics instead of polling it.

The Shelly publishes the whole status object of each component on ``<prefix>/status/<component>``
(``em:0``, ``emdata:0``; ``em1:N``, ``em1data:N`` in monophase) and NotifyStatus deltas on
``<prefix>/events/rpc`` ("some or all unchanged attributes may not be visible": they are laid over
the last full status, a ``null`` removes a key).  Every ``interval`` the merged status becomes one
reading through the same ``DeviceTracker`` as polling.  Those topics carry no timestamp, so the
reading is stamped with the host's clock.  When ``host`` is configured too, the device is
identified and gaps are backfilled over HTTP.

The device's topics are its own, outside wattbus's ``topic_prefix``: they are subscribed with
``outside_prefix=True`` so a site prefix is never put in front of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .backfill import Rows, fetch_rows
from bus.state import StateSaver

from .device import DeviceTracker
from .fields import MeterLayout, profile_for
from .rpc import ShellyError, ShellyRpc

if TYPE_CHECKING:
    from bus.producer import ProducerContext

    from . import DeviceSpec

_COMPONENTS = ("em:", "emdata:", "em1:", "em1data:")


class MqttFollower:
    def __init__(self, ctx: "ProducerContext", spec: "DeviceSpec", saver: StateSaver, *,
                 host_time: Callable[[], float] = time.time) -> None:
        self.ctx, self.spec, self.host_time = ctx, spec, host_time
        self.rpc = (ShellyRpc(spec.host, password=spec.password, timeout=spec.timeout,
                             data_timeout=spec.backfill_timeout, retries=spec.retries,
                              sleep=ctx.wait, should_stop=ctx.stopping.is_set, count=ctx.counters.inc)
                    if spec.host else None)
        self.tracker = DeviceTracker(ctx, spec.device, interval=spec.interval, invert=spec.invert, saver=saver,
                                     backfill=spec.backfill, backfill_max_s=spec.backfill_max_s)
        self.prefix = spec.mqtt_prefix
        self.device_id: str | None = None
        self.profile_name: str | None = None
        self._lock = threading.Lock()
        self._status: dict[str, dict[str, Any]] = {}
        self._full: set[str] = set()  # components seen whole at least once
        self._dirty = False

    # -- MQTT thread ----------------------------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes) -> None:
        ctx = self.ctx
        if topic.endswith("/online"):
            self.tracker.set_online(payload.strip().lower() in (b"true", b"1", b"online"))
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            ctx.counters.inc("bad_messages")
            ctx.dead_letter(payload, "not JSON", topic)
            return
        if not isinstance(obj, dict):
            ctx.counters.inc("bad_messages")
            ctx.dead_letter(payload, "not a JSON object", topic)
            return
        ctx.counters.inc("device_messages")
        if "/status/" in topic:
            comp = topic.rsplit("/", 1)[1]
            if comp.startswith(_COMPONENTS):
                with self._lock:
                    self._status[comp] = obj
                    self._full.add(comp)
                    self._dirty = True
            return
        if topic.endswith("/events/rpc"):
            method, params = obj.get("method"), obj.get("params")
            if method not in ("NotifyStatus", "NotifyFullStatus") or not isinstance(params, dict):
                return
            if isinstance(obj.get("src"), str) and self.device_id is None:
                self.device_id = obj["src"]
            with self._lock:
                for comp, delta in params.items():
                    if not comp.startswith(_COMPONENTS) or not isinstance(delta, dict):
                        continue
                    if method == "NotifyFullStatus":
                        self._status[comp] = dict(delta)
                        self._full.add(comp)
                    else:
                        base = self._status.setdefault(comp, {})
                        for key, value in delta.items():
                            if value is None:
                                base.pop(key, None)
                            else:
                                base[key] = value
                    self._dirty = True

    # -- device loop ------------------------------------------------------------------------------------
    def snapshot(self) -> tuple[dict[str, Any], MeterLayout] | None:
        with self._lock:
            if not self._dirty:
                return None
            profile = profile_for(self.profile_name, self._full)
            if not all(c in self._full for c in profile.status_components):
                return None  # not every component seen whole yet: deltas have nothing to lie on
            self._dirty = False
            return {k: dict(v) for k, v in self._status.items()}, profile

    def fetch_for(self, profile: MeterLayout) -> Callable[[int, int], Rows] | None:
        if self.rpc is None or not self.spec.backfill:
            return None
        rpc = self.rpc
        return lambda start, end: fetch_rows(rpc, profile, start, end, should_stop=self.ctx.stopping.is_set)

    def step(self) -> bool:
        snap = self.snapshot()
        if snap is None:
            return False
        components, profile = snap
        if self.tracker.state.get("device_id") != (self.device_id or self.prefix):
            self.tracker.identify(self.device_id or str(self.prefix), profile)
        return self.tracker.on_snapshot(int(self.host_time()), components, profile, self.fetch_for(profile))

    def _identify_over_http(self) -> None:
        if self.rpc is None:
            return
        try:
            info = self.rpc.device_info()
        except ShellyError as exc:
            self.ctx.log.warning("%s: cannot ask %s who it is (%s); using MQTT prefix %s", self.spec.device,
                                 self.rpc.url, exc, self.prefix)
            return
        if isinstance(info.get("id"), str):
            self.device_id = info["id"]
            self.profile_name = info.get("profile")
            if self.prefix is None:
                self.prefix = self.device_id  # the device's default topic prefix is its id

    def run(self) -> None:
        ctx = self.ctx
        self.tracker.restore()
        self._identify_over_http()
        if not self.prefix:
            ctx.log.error("%s: no mqtt_prefix configured and the device could not be asked for its id",
                          self.spec.device)
            return
        for topic in (f"{self.prefix}/status/+", f"{self.prefix}/events/rpc", f"{self.prefix}/online"):
            ctx.subscribe(topic, self.on_message, outside_prefix=True)
        ctx.log.info("%s: following the device's MQTT topics %s/status/+ and %s/events/rpc", self.spec.device,
                     self.prefix, self.prefix)
        try:
            while not ctx.wait(self.spec.interval):
                try:
                    self.step()
                except Exception:
                    ctx.counters.inc("internal_errors")
                    ctx.log.exception("%s: unexpected error handling the device's status", self.spec.device)
        finally:
            self.tracker.close()
            if self.rpc is not None:
                self.rpc.close()
