"""What the API knows from the bus right now, and the fan-out of it to server-sent-event clients.

MQTT callbacks run on paho's thread and the consumer's main thread; HTTP handlers run on the asyncio loop.
``LiveState`` is the meeting point: updates take its lock, handlers read copies under it. Every change is
also offered to the ``Feed``, which hands it to the loop with ``call_soon_threadsafe``; each SSE client
has a bounded queue, and a client too slow to keep up loses events (counted) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bus.envelope import Reading
from bus.rollup import Bucket

CLIENT_QUEUE = 256
"""Events buffered per SSE client before the oldest are dropped."""
BUCKETS_KEPT = 512
"""Latest buckets kept from ``agg/`` topics (one per source, device and period)."""


@dataclass(slots=True)
class DeviceLive:
    source: str
    device: str
    latest: Reading | None = None
    """The newest reading that carried values."""
    last_ts: int | None = None
    """The newest reading's time, values or not (a `missing` reading still says the device is there)."""
    status: str | None = None
    process: str | None = None


@dataclass(slots=True)
class ProcessLive:
    name: str
    status: str | None = None
    status_received: float | None = None
    health: dict[str, Any] | None = None
    health_received: float | None = None
    dlq_seen: int = 0
    dlq_last_reason: str | None = None
    dlq_last_ts: int | None = None


@dataclass(slots=True)
class MeterLive:
    serial: str
    heartbeat: dict[str, Any] | None = None
    heartbeat_received: float | None = None
    config: dict[str, Any] | None = None
    config_received: float | None = None
    waiters: list[threading.Event] = field(default_factory=list)


class Feed:
    """Fan-out of bus events to the SSE clients; safe to call from any thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clients: set[asyncio.Queue[tuple[str, bytes]]] = set()
        self.dropped = 0
        self.sent = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def publish(self, event: str, data: bytes) -> None:
        loop = self.loop
        if loop is None or not self.clients or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fanout, event, data)
        except RuntimeError:  # the loop closed between the check and the call (shutting down)
            pass

    def _fanout(self, event: str, data: bytes) -> None:
        for q in self.clients:
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait((event, data))
            self.sent += 1

    def attach(self) -> asyncio.Queue[tuple[str, bytes]]:
        q: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(CLIENT_QUEUE)
        self.clients.add(q)
        return q

    def detach(self, q: asyncio.Queue) -> None:
        self.clients.discard(q)


_enc = msgspec.json.Encoder()


class LiveState:
    def __init__(self, feed: Feed):
        self.feed = feed
        self.devices: dict[tuple[str, str], DeviceLive] = {}
        self.processes: dict[str, ProcessLive] = {}
        self.meters: dict[str, MeterLive] = {}
        self.buckets: dict[tuple[str, str, str], Bucket] = {}
        self.lock = threading.Lock()

    # -- updates (bus side) -------------------------------------------------------------------------
    def readings(self, readings: Iterable[Reading]) -> None:
        """A batch from the bus: keep each device's newest; publish one event per device per batch."""
        changed: dict[tuple[str, str], Reading] = {}
        with self.lock:
            for r in readings:
                key = (r.source, r.device)
                dev = self.devices.get(key)
                if dev is None:
                    dev = self.devices[key] = DeviceLive(r.source, r.device)
                if dev.last_ts is not None and r.ts < dev.last_ts:
                    continue  # an older reading (replay, backfill) never hides a newer one
                dev.last_ts = r.ts
                if r.metrics and r.quality != "missing":
                    dev.latest = r
                    changed[key] = r
        for r in changed.values():
            self.feed.publish("reading", _enc.encode(r))

    def device_status(self, source: str, device: str, status: str) -> None:
        with self.lock:
            dev = self.devices.setdefault((source, device), DeviceLive(source, device))
            changed = dev.status != status
            dev.status = status
        if changed:
            self.feed.publish("status", _enc.encode({"source": source, "device": device, "status": status}))

    def process_status(self, name: str, status: str) -> None:
        with self.lock:
            p = self.processes.setdefault(name, ProcessLive(name))
            changed = p.status != status
            p.status, p.status_received = status, time.time()
        if changed:
            self.feed.publish("status", _enc.encode({"process": name, "status": status}))

    def process_health(self, name: str, doc: dict[str, Any]) -> None:
        with self.lock:
            p = self.processes.setdefault(name, ProcessLive(name))
            p.health, p.health_received = doc, time.time()
            devices = doc.get("devices")
            if isinstance(devices, list):
                for key in devices:
                    if isinstance(key, str) and "/" in key:
                        source, _, device = key.partition("/")
                        self.devices.setdefault((source, device), DeviceLive(source, device)).process = name
        self.feed.publish("health", _enc.encode({"process": name, "health": doc}))

    def dead_letter(self, process: str, doc: dict[str, Any]) -> None:
        with self.lock:
            p = self.processes.setdefault(process, ProcessLive(process))
            p.dlq_seen += 1
            reason = doc.get("reason")
            p.dlq_last_reason = reason if isinstance(reason, str) else None
            ts = doc.get("ts")
            p.dlq_last_ts = ts if isinstance(ts, int) else int(time.time() * 1000)

    def bucket(self, b: Bucket) -> None:
        with self.lock:
            key = (b.source, b.device, b.period)
            self.buckets.pop(key, None)
            self.buckets[key] = b
            while len(self.buckets) > BUCKETS_KEPT:
                self.buckets.pop(next(iter(self.buckets)))
        self.feed.publish("bucket", _enc.encode(b))

    def meter_heartbeat(self, serial: str, doc: dict[str, Any]) -> None:
        with self.lock:
            m = self.meters.setdefault(serial, MeterLive(serial))
            m.heartbeat, m.heartbeat_received = doc, time.time()

    def meter_config(self, serial: str, doc: dict[str, Any]) -> None:
        with self.lock:
            m = self.meters.setdefault(serial, MeterLive(serial))
            m.config, m.config_received = doc, time.time()
            waiters, m.waiters = m.waiters, []
        for w in waiters:
            w.set()

    # -- reads (HTTP side) ----------------------------------------------------------------------
    def device(self, source: str, device: str) -> DeviceLive | None:
        with self.lock:
            dev = self.devices.get((source, device))
            return None if dev is None else DeviceLive(dev.source, dev.device, dev.latest, dev.last_ts,
                                                       dev.status, dev.process)

    def all_devices(self) -> list[DeviceLive]:
        with self.lock:
            return [DeviceLive(d.source, d.device, d.latest, d.last_ts, d.status, d.process)
                    for d in self.devices.values()]

    def all_processes(self) -> list[ProcessLive]:
        with self.lock:
            return [ProcessLive(p.name, p.status, p.status_received, p.health, p.health_received, p.dlq_seen,
                                p.dlq_last_reason, p.dlq_last_ts) for p in self.processes.values()]

    def all_meters(self) -> list[MeterLive]:
        with self.lock:
            return [MeterLive(m.serial, m.heartbeat, m.heartbeat_received, m.config, m.config_received)
                    for m in self.meters.values()]

    def expect_config(self, serial: str) -> threading.Event:
        """An event set when the meter next answers on its config topic."""
        ev = threading.Event()
        with self.lock:
            self.meters.setdefault(serial, MeterLive(serial)).waiters.append(ev)
        return ev
