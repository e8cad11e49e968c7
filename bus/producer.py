"""The producer side of the bus: what a producer plugin's ``run(ctx, cfg)`` works with.

The device loop calls ``publish_reading`` and moves on: the reading goes into the outbox, and a sender
thread hands it to the broker at QoS 1 when connected, keeping at most the broker's receive-maximum in
flight. Nothing here blocks on the network.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from paho.mqtt.client import MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS

from bus import envelope, topics
from bus.mqtt import Message
from bus.outbox import DiskOutbox, Item, MemoryOutbox, Outbox
from bus.runtime import ProcessContext


RETAINED_GRACE_S = 0.5


class ProducerContext(ProcessContext):
    kind = "producer"

    def __init__(self, *args: Any, source: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.source = source
        self.boot = int(time.time() * 1000)
        self._seq: dict[str, int] = {}
        m = self.app.mqtt
        self.outbox: Outbox = (DiskOutbox(m.queue_dir, self.name, m.queue_max) if m.queue_dir
                               else MemoryOutbox(m.queue_max))
        self._inflight: dict[int, Item] = {}
        self._in_hand = 0  # taken from the outbox, not yet registered in flight
        self._closing = threading.Event()  # set by flush(): the plugin has returned, nothing more will come
        self._early_acks: dict[int, float] = {}  # PUBACKs that beat the sender to registering the mid
        self._inflight_lock = threading.Lock()
        self._window = threading.Semaphore(0)
        self._window_size = 0
        self.client.on_publish(self._acked)
        self.client.on_connect(self._connected)
        self._sender = threading.Thread(target=self._send_loop, name="sender", daemon=True)
        self._sender.start()
        self.devices: set[str] = set()
        self.add_health(lambda: {"queued": len(self.outbox), "dropped": self.outbox.dropped,
                                 "inflight": len(self._inflight),
                                 "devices": sorted(f"{self.source}/{d}" for d in self.devices)})

    # -- readings -------------------------------------------------------------------------------
    def next_seq(self, device: str) -> int:
        if device not in self._seq:
            self.devices.add(device)
        seq = self._seq.get(device, 0) + 1
        self._seq[device] = seq
        return seq

    def publish_reading(self, device: str, metrics: dict[str, float], *, ts: int | None = None,
                        period_s: float = 0, quality: str = "ok") -> None:
        """Queue one reading of ``device``; ``ts`` in epoch ms (default now)."""
        ts = int(time.time() * 1000) if ts is None else int(ts)
        payload = envelope.encode_reading(self.source, device, ts, metrics, seq=self.next_seq(device),
                                          period_s=period_s, quality=quality, boot=self.boot)
        self._enqueue(topics.reading(self.source, device), payload)
        self.counters.inc("readings")

    def publish_readings(self, device: str, readings: list[dict[str, Any]]) -> None:
        """Queue a batch of readings of ``device`` as one message (replay, backfill, daily upload)."""
        if not readings:
            return
        for r in readings:
            r["seq"] = self.next_seq(device)
        payload = envelope.encode_batch(self.source, device, readings, boot=self.boot)
        self._enqueue(topics.reading(self.source, device), payload)
        self.counters.inc("readings", len(readings))

    def _enqueue(self, topic: str, payload: bytes, retain: bool = False) -> None:
        before = self.outbox.dropped
        self.outbox.put(topic, payload, retain)
        if self.outbox.dropped != before:
            self.counters.inc("queue_dropped", self.outbox.dropped - before)
            self.bad_input_log.warning("queue_full", "offline queue full: dropped the oldest message")

    # -- device status and state -----------------------------------------------------------------
    def set_device_status(self, device: str, online: bool) -> None:
        self.devices.add(device)
        self.client.publish(topics.status(self.source, device), b"online" if online else b"offline", retain=True)

    def save_state(self, device: str, state: dict[str, Any]) -> None:
        self.client.publish(topics.state(self.source, device), state, retain=True)

    def load_state(self, device: str, timeout: float = 3.0) -> dict[str, Any] | None:
        """The producer's retained state for ``device`` (DESIGN: restored from the broker, not the SD card)."""
        got: list[bytes] = []
        done = threading.Event()
        topic = topics.state(self.source, device)

        def cb(msg: Message) -> None:
            got.append(msg.payload)
            msg.ack()
            done.set()

        deadline = time.monotonic() + timeout
        self.client.wait_connected(timeout)
        acked = self.client.subscribe(topic, cb)
        if acked is not None and acked.wait(max(0.0, deadline - time.monotonic())):
            # the broker sends a retained message right after the SUBACK; a short grace is enough
            done.wait(min(RETAINED_GRACE_S, max(0.0, deadline - time.monotonic())))
        else:
            done.wait(max(0.0, deadline - time.monotonic()))
        self.client.unsubscribe(topic)
        if not got or not got[-1]:
            return None
        try:
            return orjson.loads(got[-1])
        except orjson.JSONDecodeError:
            self.log.warning("ignoring unreadable retained state on %s", topic)
            return None

    def subscribe(self, topic_filter: str, callback: Callable[[str, bytes], None], *,
                  outside_prefix: bool = False) -> None:
        """Call ``callback(topic, payload)`` for messages on ``topic_filter`` (runs on the MQTT thread).

        ``outside_prefix``: the filter is a device's own topic, not a wattbus one; the site's ``topic_prefix``
        is not put in front (a Shelly publishes where it was told to, whatever the site calls itself).
        """

        def cb(msg: Message) -> None:
            try:
                callback(msg.topic, msg.payload)
            finally:
                msg.ack()

        self.client.subscribe(topic_filter, cb, outside_prefix=outside_prefix)

    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self.client.connected.is_set()

    # -- sender ----------------------------------------------------------------------------------
    def _connected(self, session_present: bool) -> None:
        size = max(1, min(100, self.client.server_receive_maximum))
        with self._inflight_lock:
            grow = size - self._window_size
            self._window_size = size
        for _ in range(max(0, grow)):
            self._window.release()

    def _acked(self, mid: int) -> None:
        with self._inflight_lock:
            item = self._inflight.pop(mid, None)
            if item is None:
                now = time.monotonic()
                self._early_acks[mid] = now
                if len(self._early_acks) > 1000:  # acks of status/state/health publishes
                    self._early_acks = {m: t for m, t in self._early_acks.items() if now - t < 30}
        if item is not None:
            self.outbox.done(item[0])
            self._window.release()

    def _send_loop(self) -> None:
        while True:
            if not self.client.connected.wait(0.5):
                if self._stopped_and_empty():
                    return
                continue
            if not self._window.acquire(timeout=0.5):
                continue
            self._in_hand = 1
            items = self.outbox.take(1, 0.2)
            if not items:
                self._in_hand = 0
                self._window.release()
                if self._stopped_and_empty():
                    return
                continue
            item = items[0]
            # paho calls on_publish under its own lock: never hold ours across publish().
            info = self.client.publish(item[1], item[2], qos=1, retain=item[3])
            if info.rc not in (MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN):  # NO_CONN: paho sends it on reconnect
                self.outbox.requeue(items)
                self._in_hand = 0
                self._window.release()
                time.sleep(0.2)
                continue
            with self._inflight_lock:
                early = self._early_acks.pop(info.mid, None) is not None
                if not early:
                    self._inflight[info.mid] = item
            self._in_hand = 0
            if early:
                self.outbox.done(item[0])
                self._window.release()
            self.counters.inc("published")

    def _stopped_and_empty(self) -> bool:
        return self._closing.is_set() and self.idle()

    def idle(self) -> bool:
        """True when every queued message has been acknowledged by the broker."""
        return len(self.outbox) == 0 and not self._inflight and not self._in_hand

    def flush(self, timeout: float) -> bool:
        """Wait until every queued reading is acknowledged by the broker (on stop)."""
        if self.stopping.is_set():
            self._closing.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            if not self.client.connected.is_set():
                return False
            time.sleep(0.02)
        return False
