"""The homeassistant consumer at work: bus messages in, discovery and throttled states out.

Threads: readings arrive in batches on the main thread (``ConsumerContext.consume_readings``), status, health,
bucket and HA-birth messages on the MQTT thread; all of them only update the device registry under one lock
and mark what is due. One publisher thread sends what is due, at most once per ``min_interval`` per device,
and always the latest values, so a burst of readings costs HA one state per device and interval, and the last
value of a counter is published when the interval ends, never dropped. On stop everything pending goes out.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from bus import rollup, topics
from bus.consumer import ConsumerContext
from bus.envelope import NAME_PATTERN, SOURCES, Reading
from bus.mqtt import Message
from consumers.homeassistant import discovery as d
from consumers.homeassistant.devices import Device, DeviceRegistry, site_id

RETAINED_WAIT_S = 5.0
RETAINED_GRACE_S = 0.7
FORGET_CHECK_S = 3600.0
_NAME = re.compile(NAME_PATTERN)
DLQ_SNIPPET = 512
"""A hostile payload is quoted in the dead letter up to this many bytes."""


class Bridge:
    def __init__(self, ctx: ConsumerContext, cfg: Any, clock: Callable[[], float] = time.monotonic):
        self.ctx, self.cfg, self.clock = ctx, cfg, clock
        self.client = ctx.client
        self.prefix = cfg.discovery_prefix
        site = site_id(ctx.app.mqtt.topic_prefix)
        self.base_id = cfg.node_id + (f"_{site}" if site else "")
        self.relays = [d.Relay(r.name, r.title or r.name, r.process) for r in cfg.relays]
        self.registry = DeviceRegistry(self.base_id, ctx.tz, max_devices=cfg.max_devices, include=cfg.include,
                                       exclude=cfg.exclude, relays=self.relays)
        self.own_status = self.client.full(topics.process_status(ctx.name))
        self.retained: dict[str, dict[str, Any]] = {}
        """Discovery topic -> document as the broker holds it (what we published, or found at start)."""
        self.cv = threading.Condition()
        self.relays_due = True
        self.relays_forced = False
        self._last_forget = clock()
        ctx.add_health(lambda: {"devices": len(self.registry.devices), "layout": cfg.discovery})

    # -- start -----------------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Read our retained discovery and states back, rebuild the registry, clear what must go."""
        filters = [(d.device_topic(self.prefix, "+"), True)]
        filters += [(f"{self.prefix}/{p}/+/+/config", True) for p in d.PLATFORMS]
        filters += [(topics.ha_state("+", "+"), False)]
        got = _read_retained(self.client, filters)
        docs: dict[tuple[str, str], dict[str, Any]] = {}
        relay_topics: dict[str, list[str]] = {}
        states: dict[tuple[str, str], dict] = {}
        for topic, payload in got:
            body = _json_object(payload)
            if body is None:
                continue
            if topic.startswith(self.prefix + "/"):
                self._restore_doc(topic, body, docs, relay_topics)
            else:
                parts = topic.split("/")
                states[(parts[1], parts[2])] = body
        with self.cv:
            for (source, device), info in docs.items():
                dev = self.registry.restore_discovery(source, device, info["components"],
                                                      info["availability"], self.own_status, self.client.full,
                                                      info["currency"])
                if dev is None:
                    self._clear_topics(info["topics"], topics.ha_state(source, device))
                    self.ctx.log.info("cleared %s/%s from Home Assistant (excluded or over max_devices)",
                                      source, device)
                    continue
                if (source, device) in states:
                    self.registry.restore_state(dev, states[(source, device)])
                dev.discovery_due = True  # rebuilt and compared: republished only if it differs
            configured = {r.name for r in self.relays}
            for name, ts in relay_topics.items():
                if name not in configured:
                    self._clear_topics(ts)
                    self.ctx.log.info("cleared relay %s from Home Assistant (no longer configured)", name)
            self._prune_unconfigured()
            self._forget(force=True)
            self._clear_other_layout()
        self.ctx.log.info("restored %d device(s) from the broker; discovery layout %r under %s/",
                          len(self.registry.devices), self.cfg.discovery, self.prefix)

    def _restore_doc(self, topic: str, body: dict, docs: dict, relay_topics: dict) -> None:
        parts = topic.split("/")
        layout = "device" if parts[-3] == "device" else "entity"
        object_id = parts[-2] if layout == "device" else parts[-3]
        if not object_id.startswith(self.base_id + "_"):
            return  # another integration's, or another site's
        comps = body.get("components") if layout == "device" else {parts[-2]: body}
        if not isinstance(comps, dict):
            return
        owner = _owner(body, comps, self.client.strip, self.client.prefix)
        if owner is None:
            return
        self.retained[topic] = body
        kind, key = owner
        if kind == "relay":
            relay_topics.setdefault(key, []).append(topic)
            return
        info = docs.setdefault(key, {"components": set(), "availability": [], "currency": None, "topics": []})
        info["topics"].append(topic)
        info["components"] |= set(comps)
        avail = body.get("availability")
        if isinstance(avail, list):
            info["availability"] += [a["topic"] for a in avail
                                     if isinstance(a, dict) and isinstance(a.get("topic"), str)]
        for comp in comps.values():
            if isinstance(comp, dict) and comp.get("device_class") == "monetary":
                unit = comp.get("unit_of_measurement")
                info["currency"] = unit if isinstance(unit, str) else info["currency"]

    def _prune_unconfigured(self) -> None:
        """A device whose producer process left this config file goes from HA (see README for when)."""
        producers = self.ctx.app.producers
        if not self.cfg.prune_unconfigured or not producers:
            return
        for dev in list(self.registry.devices.values()):
            if dev.producer and dev.producer not in producers:
                self._clear_device(dev, f"its producer {dev.producer!r} is no longer configured")

    def _forget(self, force: bool = False) -> None:
        if not self.cfg.forget_after or (not force and self.clock() - self._last_forget < FORGET_CHECK_S):
            return
        self._last_forget = self.clock()
        limit = time.time() * 1000 - self.cfg.forget_after * 1000
        for dev in list(self.registry.devices.values()):
            last = max(dev.last_ts, dev.bucket_start)
            if last and last < limit:
                self._clear_device(dev, f"nothing heard for more than {self.cfg.forget_after:g} s")

    def _clear_other_layout(self) -> None:
        keep_device_layout = self.cfg.discovery == "device"
        for topic in list(self.retained):
            is_device_layout = topic.split("/")[-3] == "device"
            if is_device_layout != keep_device_layout:
                self._clear_topics([topic])

    # -- bus input (MQTT thread or main thread) --------------------------------------------------
    def on_readings(self, readings: list[Reading]) -> None:
        with self.cv:
            for r in readings:
                if r.quality == "missing" or not r.metrics:
                    continue
                dev = self.registry.get(r.source, r.device)
                if dev is None:
                    continue
                self.registry.apply_reading(dev, r.ts, r.metrics)
            self._count_over_cap()
            self.cv.notify()

    def _count_over_cap(self) -> None:
        if self.registry.over_cap > self.ctx.counters.get("devices_over_cap"):
            self.ctx.counters.set("devices_over_cap", self.registry.over_cap)
            self.ctx.bad_input_log.warning(
                "cap", "more devices than max_devices = %d: the others are not shown in Home Assistant "
                "(%d refused so far)", self.cfg.max_devices, self.registry.over_cap)

    def on_device_status(self, msg: Message) -> None:
        """``{source}/{device}/status`` and ``wattbus/{process}/status`` (the same filter catches both)."""
        parsed = topics.parse_device_topic(msg.topic)
        if not parsed:
            return
        with self.cv:
            if parsed[0] == "wattbus":
                online = msg.payload == b"online"
                changed = _NAME.match(parsed[1]) and self.registry.set_process_status(parsed[1], online)
            else:
                changed = parsed[0] in SOURCES and self.registry.set_status_seen(parsed[0], parsed[1])
            if changed:
                self.cv.notify()

    def on_health(self, msg: Message) -> None:
        process = msg.topic.split("/")[1]
        if not _NAME.match(process):
            return
        doc = _json_object(msg.payload)
        devices = doc.get("devices") if doc else None
        if not isinstance(devices, list) or doc.get("kind", "producer") != "producer":
            return
        with self.cv:
            if self.registry.set_producer(process, devices):
                self.cv.notify()

    def on_bucket(self, msg: Message) -> None:
        bucket, reason = parse_bucket(msg.topic, msg.payload, time.time() * 1000)
        if bucket is None:
            if reason == STALE:
                self.ctx.counters.inc("buckets_stale")  # not today's or yesterday's: not a "today" value
            else:
                self.ctx.dead_letter(msg.payload[:DLQ_SNIPPET], reason, msg.topic)
            return
        with self.cv:
            dev = self.registry.get(bucket.source, bucket.device)
            self._count_over_cap()
            if dev is not None and self.registry.apply_bucket(dev, bucket):
                self.cv.notify()

    def on_ha_status(self, msg: Message) -> None:
        """HA's birth message: send every discovery document and state again (HA may have lost them)."""
        if msg.payload != b"online":
            self.ctx.counters.inc("ha_status_ignored" if msg.payload != b"offline" else "ha_offline")
            if msg.payload != b"offline":
                self.ctx.bad_input_log.warning("ha_status", "ignored %d-byte payload on %s "
                                               "(expected online/offline)", len(msg.payload), msg.topic)
            return
        self.ctx.counters.inc("ha_online")
        with self.cv:
            for dev in self.registry.devices.values():
                dev.discovery_due = dev.discovery_forced = True
                dev.state_due = bool(dev.values)
            self.relays_due = self.relays_forced = True
            self.cv.notify()

    # -- output (publisher thread) ---------------------------------------------------------------
    def publisher(self) -> None:
        """Send what is due until the process stops, then everything still pending."""
        while not self.ctx.stopping.is_set():
            with self.cv:
                wait = self.publish_due()
                self._forget()
                self.cv.wait(min(wait, 1.0))
        with self.cv:
            self.publish_due(final=True)

    def publish_due(self, final: bool = False) -> float:
        """Publish every device that is due and whose interval is over; return seconds until the next one."""
        now = self.clock()
        if self.relays_due:
            self._publish_relays()
        next_in = float("inf")
        for dev in self.registry.devices.values():
            if not (dev.state_due or dev.discovery_due):
                continue
            left = dev.last_publish + self.cfg.min_interval - now
            if left > 0 and not final:
                next_in = min(next_in, left)
                continue
            self._publish_device(dev)
            dev.last_publish = now
        return next_in

    def _publish_device(self, dev: Device) -> None:
        if dev.discovery_due:
            self._publish_docs(self._documents(dev), dev.object_id, dev.discovery_forced)
            dev.discovery_due = dev.discovery_forced = False
        if dev.state_due and dev.values:
            self.client.publish(topics.ha_state(dev.source, dev.device), dev.state(), retain=True)
            self.ctx.counters.inc("states_published")
        dev.state_due = False

    def _documents(self, dev: Device) -> dict[str, dict[str, Any]]:
        comps = d.device_components(dev.object_id, dev.keys, dev.bucket_fields, dev.currency)
        if not comps:
            return {}
        full = self.client.full
        avail = ([full(topics.status(dev.source, dev.device))] if dev.has_status else []) + (
            [full(topics.process_status(dev.producer))] if dev.producer else []) + [self.own_status]
        shared = d.shared_options(avail, full(topics.ha_state(dev.source, dev.device)))
        block = d.device_block(dev.object_id, dev.name, dev.source)
        return self._layout(dev.object_id, block, comps, shared)

    def _layout(self, object_id: str, block: dict, comps: dict, shared: dict) -> dict[str, dict[str, Any]]:
        if self.cfg.discovery == "device":
            return {d.device_topic(self.prefix, object_id): d.device_document(block, comps, shared)}
        return d.entity_documents(self.prefix, object_id, block, comps, shared)

    def _publish_relays(self) -> None:
        full = self.client.full
        for relay in self.relays:
            object_id = self.registry.relay_object_id(relay.name)
            comps = d.relay_components(object_id, relay, full(topics.relay_state(relay.name)),
                                       full(topics.relay_set(relay.name)))
            avail = [full(topics.process_status(relay.process))] if relay.process else []
            shared = d.shared_options(avail + [self.own_status], None)
            block = d.device_block(object_id, relay.title, "relay")
            self._publish_docs(self._layout(object_id, block, comps, shared), object_id, self.relays_forced)
        self.relays_due = self.relays_forced = False

    def _publish_docs(self, docs: dict[str, dict[str, Any]], object_id: str, forced: bool) -> None:
        """Retained discovery, only where it differs from what the broker holds (or HA asked again)."""
        for topic, doc in docs.items():
            if forced or self.retained.get(topic) != doc:
                self.client.publish(topic, doc, retain=True, outside_prefix=True)
                self.retained[topic] = doc
                self.ctx.counters.inc("discovery_published")
        stale = [t for t in self.retained if t not in docs and _object_id_of(t) == object_id]
        self._clear_topics(stale)

    def _clear_device(self, dev: Device, why: str) -> None:
        self._clear_topics([t for t in self.retained if _object_id_of(t) == dev.object_id],
                           topics.ha_state(dev.source, dev.device))
        self.registry.remove(dev.source, dev.device)
        self.ctx.log.info("cleared %s/%s from Home Assistant: %s", dev.source, dev.device, why)

    def _clear_topics(self, discovery_topics: list[str], state_topic: str | None = None) -> None:
        """An empty retained message removes a discovery document (HA drops the entities) or a state."""
        for topic in discovery_topics:
            self.client.publish(topic, b"", retain=True, outside_prefix=True)
            self.retained.pop(topic, None)
            self.ctx.counters.inc("discovery_cleared")
        if state_topic:
            self.client.publish(state_topic, b"", retain=True)


STALE = "stale"


def parse_bucket(topic: str, payload: bytes, now_ms: float) -> tuple[rollup.Bucket | None, str]:
    """A daily bucket from ``agg/{source}/{device}/1d``, or None and why (``STALE``: a bucket of long ago)."""
    try:
        bucket = rollup.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return None, f"not a bucket: {exc}"
    parts = topic.split("/")
    if len(parts) != 4 or (bucket.source, bucket.device, bucket.period) != (parts[1], parts[2], parts[3]):
        return None, "bucket source/device/period do not match the topic"
    if not bucket.start < bucket.end:
        return None, "bucket end is not after its start"
    if bucket.end < now_ms - 86_400_000:
        return None, STALE
    return bucket, ""


def _object_id_of(topic: str) -> str:
    parts = topic.split("/")
    return parts[-2] if parts[-3] == "device" else parts[-3]


def _owner(body: dict, comps: dict, strip: Callable[[str], str], prefix: str) -> tuple[str, Any] | None:
    """Which device (by its state topic) or relay (by its command topic) a retained document is for."""
    candidates = [body] + [c for c in comps.values() if isinstance(c, dict)]
    for part in candidates:
        state = part.get("state_topic")
        if isinstance(state, str) and state.startswith(prefix):
            bits = strip(state).split("/")
            if len(bits) == 4 and bits[0] == "ha" and bits[3] == "state":
                return "device", (bits[1], bits[2])
        command = part.get("command_topic")
        if isinstance(command, str) and command.startswith(prefix):
            bits = strip(command).split("/")
            if len(bits) == 3 and bits[0] == "relay" and bits[2] == "set":
                return "relay", bits[1]
    return None


def _json_object(payload: bytes) -> dict | None:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _read_retained(client, filters: list[tuple[str, bool]]) -> list[tuple[str, bytes]]:
    """The retained messages on ``filters`` right now (subscribe, wait for the SUBACKs, unsubscribe).

    Unsubscribing first matters: a resumed session still holding the subscription would get no retained
    messages (the bus subscribes with retain-handling 1).
    """
    got: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def cb(msg: Message) -> None:
        with lock:
            if msg.retain:
                got.append((msg.topic, msg.payload))
        msg.ack()

    events = []
    for f, outside in filters:
        events.append(client.subscribe(f, cb, outside_prefix=outside))
    deadline = time.monotonic() + RETAINED_WAIT_S
    for e in events:
        if e is not None:
            e.wait(max(0.0, deadline - time.monotonic()))
    time.sleep(RETAINED_GRACE_S)  # retained messages follow their SUBACK; a short grace is enough
    for f, outside in filters:
        client.unsubscribe(f, outside_prefix=outside)
    with lock:
        return list(got)
