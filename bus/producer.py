"""The producer side of the bus: what a producer plugin's ``run(ctx, cfg)`` works with.

The device loop calls ``publish_reading`` and moves on: the reading goes into the outbox, and a sender
thread hands it to the broker at QoS 1 when connected, keeping at most the broker's receive-maximum in
flight. Nothing here blocks on the network.

What is checked on the way in: the device name (it becomes a topic level), every value against the
envelope's bounds and the plausibility limits (a NaN, 1e308 W, a negative counter, a clock in 1970 go to
``wattbus/dlq/{process}`` with the reason, never to the broker), and the size of every message: a batch is
split so each message fits the broker's packet limit.

Delivery, and why each piece is there:

- A message leaves the outbox only when the broker acknowledged it with a *success* reason code. A PUBACK
  >= 0x80 (not authorized, quota exceeded, ...) means not delivered: the message stays queued and is tried
  again with a growing pause (1 s .. 60 s), ``publish_refused`` counts it and the log names the topic and the
  broker's reason.
- The resend window. Mosquitto 2.0 keeps messages in memory and writes them to disk only every
  ``autosave_interval`` (and at a clean shutdown), so a broker that is killed (OOM, power cut, ``kill -9``)
  comes back without what it acknowledged since its last save. The producer therefore keeps every
  acknowledged message for ``[mqtt] resend_window_s`` (default 75 s: the shipped 60 s autosave plus margin)
  and sends the window again after every reconnect. The sinks' upserts on ``(source, device, ts)`` absorb
  the copies. The window costs memory, not SD-card writes; it is bounded by ``resend_window_mb`` (16 MB: a
  live device needs kilobytes). A flat-out replay fills it in seconds; then, by default, the oldest entry
  is forgotten and counted (``resend_window_overflow``, logged): a replay keeps its speed and can be run
  again. ``resend_window_full = "wait"`` keeps the guarantee at any rate instead: the sender waits for the
  oldest entry to age out, so a replay slows to ``resend_window_mb`` per ``resend_window_s``.
- Device statuses are retained ``online``/``offline``; one connection has one last will (the process's
  status), so a device's ``offline`` is published at stop when the broker is reachable, and otherwise at the
  next start: the previous run's devices (from its retained health document) that this run has not claimed
  are set ``offline`` before the first health document of the new run replaces that list.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from paho.mqtt.client import MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS

from bus import envelope, topics
from bus.envelope import EnvelopeError, is_name
from bus.mqtt import Message, PacketTooLarge
from bus.outbox import DiskOutbox, Item, MemoryOutbox, Outbox
from bus.runtime import ProcessContext

RETAINED_GRACE_S = 0.5
REFUSED_BACKOFF_S = (1.0, 60.0)
NOT_IN_OUTBOX = -1
"""Item id of a message re-sent from the window: it left the outbox when first acknowledged."""


class ProducerContext(ProcessContext):
    kind = "producer"

    def __init__(self, *args: Any, source: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.source = source
        self.boot = int(time.time() * 1000)
        self.limits = self.app.readings.limits()
        self._seq: dict[str, int] = {}
        m = self.app.mqtt
        self.outbox: Outbox = (DiskOutbox(m.queue_dir, self.name, m.queue_max) if m.queue_dir
                               else MemoryOutbox(m.queue_max))
        self._lock = threading.Lock()  # in-hand count, inflight table, resend queue, window
        self._inflight: dict[int, Item] = {}
        self._in_hand = 0  # taken from the outbox or the resend queue, not yet registered in flight
        self._closing = threading.Event()  # set by the final flush(): the plugin returned, nothing more comes
        self._early_acks: dict[int, tuple[float, int]] = {}  # PUBACKs that beat the sender to the mid
        self._work = threading.Event()
        self._window = threading.Semaphore(0)
        self._window_size = 0
        self._resend_s = m.resend_window_s
        self._resend_max = int(m.resend_window_mb * 1048576)
        self._resend_wait = m.resend_window_full == "wait"
        self._acked_window: deque[tuple[float, Item]] = deque()  # (acknowledged at, item), oldest first
        self._acked_bytes = 0
        self._resend: deque[Item] = deque()
        self._refused_pause = 0.0
        self._retry_at = 0.0
        self._connects = 0
        self._status: dict[str, bool] = {}
        self._status_lock = threading.Lock()
        self.client.on_publish(self._acked)
        self.client.on_connect(self._connected)
        self._sender = threading.Thread(target=self._send_loop, name="sender", daemon=True)
        self._sender.start()
        self.devices: set[str] = set()
        self.before_first_health.append(self._clear_stale_devices)
        self.add_health(lambda: {"queued": len(self.outbox), "dropped": self.outbox.dropped,
                                 "inflight": len(self._inflight), "resend_window": len(self._acked_window),
                                 "resend_window_mb": round(self._acked_bytes / 1048576, 2),
                                 "client_id": self.client.client_id,
                                 "devices": sorted(f"{self.source}/{d}" for d in self.devices)})

    # -- readings -------------------------------------------------------------------------------
    def next_seq(self, device: str) -> int:
        if device not in self._seq:
            self._claim(device)
        seq = self._seq.get(device, 0) + 1
        self._seq[device] = seq
        return seq

    def publish_reading(self, device: str, metrics: dict[str, float], *, ts: int | None = None,
                        period_s: float = 0, quality: str = "ok") -> None:
        """Queue one reading of ``device``; ``ts`` in epoch ms (default now). A bad one goes to the DLQ."""
        now = int(time.time() * 1000)
        ts = now if ts is None else _int_ms(ts)
        topic = self._device_topic(device)
        if topic is None:
            return
        problem = self._problem(ts, metrics, period_s, quality, now)
        if problem:
            self._reject(device, [{"ts": ts, "period_s": period_s, "quality": quality, "metrics": metrics}],
                         problem)
            return
        payload = envelope.encode_reading(self.source, device, ts, metrics, seq=self.next_seq(device),
                                          period_s=period_s, quality=quality, boot=self.boot)
        if len(payload) > self.client.room(topic):
            self._reject(device, [{"ts": ts, "metrics": metrics}], f"{len(payload)} bytes: larger than a "
                         f"message may be ({self.client.room(topic)} bytes)")
            return
        self._enqueue(topic, payload)
        self.counters.inc("readings")

    def publish_readings(self, device: str, readings: list[dict[str, Any]]) -> None:
        """Queue a batch of readings of ``device`` (replay, backfill, daily upload), in as many messages as
        the broker's packet limit needs. Bad readings go to the DLQ; the rest are sent."""
        topic = self._device_topic(device)
        if topic is None or not readings:
            return
        now = int(time.time() * 1000)
        for r in readings:
            if "ts" in r:
                r["ts"] = _int_ms(r["ts"])
        if envelope.items_ok(readings, self.limits, now, self.source):
            good = readings  # the common case, checked in one pass in C
        else:
            good = []
            for r in readings:
                problem = envelope.batch_item_problem(r, self.limits, now, self.source)
                if problem:
                    self._reject(device, [r], problem)
                else:
                    good.append(r)
        if not good:
            return
        for r in good:
            r["seq"] = self.next_seq(device)
        try:
            payloads = envelope.encode_batches(self.source, device, good, self.client.room(topic),
                                               boot=self.boot)
        except EnvelopeError as exc:  # one reading bigger than a message: split what fits, reject the rest
            payloads = []
            for r in good:
                try:
                    payloads += envelope.encode_batches(self.source, device, [r], self.client.room(topic),
                                                        boot=self.boot)
                except EnvelopeError:
                    self._reject(device, [r], str(exc))
        for payload in payloads:
            self._enqueue(topic, payload)
        self.counters.inc("readings", len(good))
        if len(payloads) > 1:
            self.counters.inc("batches_split")

    def _device_topic(self, device: str) -> str | None:
        if is_name(device):
            return topics.reading(self.source, device)
        self.counters.inc("bad_device_names")
        self.dead_letter(repr(device).encode()[:200],
                         f"device name {device!r:.80} is not allowed: {envelope.NAME_RULE}")
        return None

    def _problem(self, ts: Any, metrics: Any, period_s: Any, quality: Any, now_ms: int) -> str | None:
        problem = envelope.item_problem(ts, metrics, None, period_s, quality)
        if problem is None and not self.limits.min_ts <= ts <= now_ms + self.limits.max_future_ms:
            problem = envelope.ts_problem(ts, self.limits, now_ms, self.source)
        elif problem is None and self.limits.max_age_ms:
            problem = envelope.ts_problem(ts, self.limits, now_ms, self.source)
        return problem

    def _reject(self, device: str, items: list[dict[str, Any]], reason: str) -> None:
        self.counters.inc("readings_rejected", len(items))
        try:
            payload = orjson.dumps({"v": 1, "source": self.source, "device": device, "readings": items},
                                   option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            payload = repr(items).encode()
        self.dead_letter(payload, f"not published: {reason}", topics.reading(self.source, device))

    def _enqueue(self, topic: str, payload: bytes, retain: bool = False) -> None:
        before = self.outbox.dropped
        self.outbox.put(topic, payload, retain)
        self._work.set()
        if self.outbox.dropped != before:
            self.counters.inc("queue_dropped", self.outbox.dropped - before)
            self.bad_input_log.warning("queue_full", "offline queue full: dropped the oldest message")

    # -- device status and state -----------------------------------------------------------------
    def set_device_status(self, device: str, online: bool) -> None:
        if not is_name(device):
            self._device_topic(device)
            return
        self._claim(device)
        with self._status_lock:
            self._status[device] = online
            self.client.publish(topics.status(self.source, device), b"online" if online else b"offline",
                                retain=True)

    def _claim(self, device: str) -> None:
        """A device of this run: listed in health at once, so the next start knows it (stale statuses)."""
        with self._status_lock:
            if device in self.devices:
                return
            self.devices.add(device)
        if self.health_started.is_set():
            self.publish_health()

    def save_state(self, device: str, state: dict[str, Any]) -> None:
        self.client.publish(topics.state(self.source, device), state, retain=True)

    def load_state(self, device: str, timeout: float = 3.0) -> dict[str, Any] | None:
        """The producer's retained state for ``device`` (DESIGN: restored from the broker, not the SD card)."""
        got = self._retained(topics.state(self.source, device), timeout)
        if not got:
            return None
        try:
            return orjson.loads(got)
        except orjson.JSONDecodeError:
            self.log.warning("ignoring unreadable retained state on %s", topics.state(self.source, device))
            return None

    def _retained(self, topic: str, timeout: float) -> bytes | None:
        """The retained message on ``topic`` (None if there is none); every wait here ends on stop."""
        got: list[bytes] = []
        done = threading.Event()

        def cb(msg: Message) -> None:
            got.append(msg.payload)
            msg.ack()
            done.set()

        deadline = time.monotonic() + timeout
        self._wait(self.client.connected, deadline)
        acked = self.client.subscribe(topic, cb)
        if acked is not None and self._wait(acked, deadline):
            # the broker sends a retained message right after the SUBACK; a short grace is enough
            self._wait(done, min(deadline, time.monotonic() + RETAINED_GRACE_S))
        else:
            self._wait(done, deadline)
        self.client.unsubscribe(topic)
        return got[-1] if got and got[-1] else None

    def _wait(self, event: threading.Event, deadline: float) -> bool:
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self.stopping.is_set():
                return False
            event.wait(min(left, 0.1))
        return True

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

    def _clear_stale_devices(self) -> None:
        """Set ``offline`` the devices an earlier run of this process left ``online`` and this run has not
        claimed (it was killed, or stopped while the broker was away). Their names come from that run's
        retained health document; a document from another live copy (another client id) is left alone."""
        raw = self._retained(topics.process_health(self.name), 2.0)
        try:
            doc = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict) or doc.get("client_id", self.client.client_id) != self.client.client_id:
            return
        listed = doc.get("devices") if isinstance(doc.get("devices"), list) else []
        with self._status_lock:
            stale = sorted({d.partition("/")[2] for d in listed if isinstance(d, str)
                            and d.partition("/")[0] == self.source and is_name(d.partition("/")[2])}
                           - self.devices)
            infos = [self.client.publish(topics.status(self.source, device), b"offline", retain=True)
                     for device in stale]
        deadline = time.monotonic() + 2.0
        for info in infos:  # acknowledged before the log says so, and before the new health replaces the list
            while not info.is_published() and time.monotonic() < deadline and not self.stopping.is_set():
                time.sleep(0.02)
        if stale:
            self.log.info("marked %d device(s) of an earlier run offline: %s", len(stale),
                          ", ".join(stale[:20]))

    # -- stopping ---------------------------------------------------------------------------------
    def pending(self) -> int:
        """Messages not yet acknowledged by the broker (queued, in flight, waiting to be sent again)."""
        with self._lock:
            return len(self.outbox) + len(self._inflight) + self._in_hand + len(self._resend)

    def stop(self, timeout: float = 4.0) -> None:
        """At SIGTERM, after the plugin returned: flush, say what is left, set every device offline."""
        self.stopping.set()
        if not self.flush(timeout):
            left = self.pending()
            if self.app.mqtt.queue_dir:
                self.log.warning("stopping with %d messages not acknowledged by the broker; %d kept in %s "
                                 "and sent at the next start", left, len(self.outbox),
                                 self.app.mqtt.queue_dir)
            elif left:
                self.log.warning("stopping with %d messages not acknowledged by the broker: dropped (set "
                                 "[mqtt] queue_dir to keep them across a restart)", left)
                self.counters.inc("dropped_at_stop", left)
        if not self.client.connected.is_set():
            if self.devices:
                self.log.warning("broker unreachable: %d device status(es) stay as they are until the next "
                                 "start sets them offline", len(self.devices))
            return
        with self._status_lock:
            infos = [self.client.publish(topics.status(self.source, d), b"offline", retain=True)
                     for d in sorted(self.devices)]
        deadline = time.monotonic() + 1.5
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                break

    # -- sender ----------------------------------------------------------------------------------
    def _connected(self, session_present: bool) -> None:
        size = max(1, min(100, self.client.server_receive_maximum))
        with self._lock:
            grow = size - self._window_size
            self._window_size = size
            self._connects += 1
            again = []
            if self._connects > 1:  # a reconnect: the broker may have lost what it acknowledged lately
                self._prune(time.monotonic())
                again = [item for _, item in self._acked_window]
                self._acked_window.clear()
                self._acked_bytes = 0
                self._resend.extend(again)
        for _ in range(max(0, grow)):
            self._window.release()
        if again:
            self.counters.inc("resent", len(again))
            self.log.info("reconnected: sending again the %d messages the broker acknowledged in the last "
                          "%.0f s (it may have lost them; duplicates are harmless)", len(again),
                          self._resend_s)
        with self._status_lock:  # a broker that lost its state has lost the retained statuses too
            for device, online in self._status.items():
                self.client.publish(topics.status(self.source, device), b"online" if online else b"offline",
                                    retain=True)
        self._work.set()

    def _acked(self, mid: int, code: int = 0, topic: str = "") -> None:
        with self._lock:
            item = self._inflight.pop(mid, None)
            if item is None:
                now = time.monotonic()
                self._early_acks[mid] = (now, code)
                if len(self._early_acks) > 1000:  # acks of status/state/health publishes
                    self._early_acks = {m: v for m, v in self._early_acks.items() if now - v[0] < 30}
        if item is not None:
            self._settle(item, code)

    def _settle(self, item: Item, code: int) -> None:
        """The broker answered ``item``: into the resend window, or back in the queue if it was refused."""
        if code >= 0x80:
            with self._lock:
                low, high = REFUSED_BACKOFF_S
                self._refused_pause = min(max(self._refused_pause * 2, low), high)
                self._retry_at = time.monotonic() + self._refused_pause
                if item[0] == NOT_IN_OUTBOX:
                    self._resend.appendleft(item)
            if item[0] != NOT_IN_OUTBOX:
                self.outbox.requeue([item])
        else:
            if item[0] != NOT_IN_OUTBOX:
                self.outbox.done(item[0])
            forgot = 0
            with self._lock:
                self._refused_pause = 0.0
                if self._resend_s > 0:
                    now = time.monotonic()
                    self._acked_window.append((now, (NOT_IN_OUTBOX, *item[1:])))
                    self._acked_bytes += len(item[2])
                    self._prune(now)
                    while (not self._resend_wait and self._acked_bytes > self._resend_max
                           and self._acked_window):
                        _, old = self._acked_window.popleft()
                        self._acked_bytes -= len(old[2])
                        forgot += 1
            if forgot:
                self.counters.inc("resend_window_overflow", forgot)
                self.bad_input_log.warning(
                    "resend_window", "publishing faster than the resend window holds (%.0f MB over %.0f s): "
                    "a broker crash now could lose part of what it acknowledged lately; raise [mqtt] "
                    "resend_window_mb or set resend_window_full = \"wait\"", self._resend_max / 1048576,
                    self._resend_s)
        self._window.release()

    def _prune(self, now: float) -> None:
        """Forget window entries older than the window (lock held)."""
        while self._acked_window and now - self._acked_window[0][0] > self._resend_s:
            _, old = self._acked_window.popleft()
            self._acked_bytes -= len(old[2])

    def _window_full(self) -> bool:
        if not self._resend_wait:
            return False
        with self._lock:
            self._prune(time.monotonic())
            return self._acked_bytes >= self._resend_max

    def _send_loop(self) -> None:
        while True:
            if not self.client.connected.wait(0.5):
                if self._stopped_and_empty():
                    return
                continue
            if time.monotonic() < self._retry_at or self._window_full():
                self.stopping.wait(0.05)  # refused (backing off) or window full (waiting for it to age)
                if self._stopped_and_empty():
                    return
                continue
            if not self._window.acquire(timeout=0.5):
                continue
            self._work.clear()
            with self._lock:
                if self._resend:
                    item: Item | None = self._resend.popleft()
                else:
                    items = self.outbox.take(1, 0)
                    item = items[0] if items else None
                if item is not None:
                    self._in_hand += 1
            if item is None:
                self._window.release()
                if self._stopped_and_empty():
                    return
                self._work.wait(0.2)
                continue
            self._send(item)

    def _send(self, item: Item) -> None:
        try:
            # paho calls on_publish under its own lock: never hold ours across publish().
            info = self.client.publish(item[1], item[2], qos=1, retain=item[3])
        except PacketTooLarge as exc:  # the broker's limit dropped below what this was encoded for
            self._split_oversize(item, str(exc))
            with self._lock:
                self._in_hand -= 1
            self._window.release()
            return
        if info.rc not in (MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN):  # NO_CONN: paho sends it on reconnect
            with self._lock:
                self._in_hand -= 1
                if item[0] == NOT_IN_OUTBOX:
                    self._resend.appendleft(item)
            if item[0] != NOT_IN_OUTBOX:
                self.outbox.requeue([item])
            self._window.release()
            time.sleep(0.2)
            return
        with self._lock:
            early = self._early_acks.pop(info.mid, None)
            if early is None:
                self._inflight[info.mid] = item
            self._in_hand -= 1
        if early is not None:
            self._settle(item, early[1])
        self.counters.inc("published")

    def _split_oversize(self, item: Item, why: str) -> None:
        """Re-encode a batch that no longer fits into smaller ones; anything else goes to the DLQ."""
        try:
            doc = orjson.loads(item[2])
            pieces = envelope.encode_batches(doc["source"], doc["device"], doc["readings"],
                                             self.client.room(item[1]), boot=doc.get("boot"))
        except (orjson.JSONDecodeError, KeyError, TypeError, EnvelopeError):
            pieces = []
        for piece in pieces:
            self.outbox.put(item[1], piece, item[3])
        if item[0] != NOT_IN_OUTBOX:
            self.outbox.done(item[0])
        if not pieces:
            self.dead_letter(item[2], f"not published: {why}", item[1])
        self.counters.inc("batches_split")

    def _stopped_and_empty(self) -> bool:
        return self._closing.is_set() and self.idle()

    def idle(self) -> bool:
        """True when every queued message has been acknowledged by the broker."""
        with self._lock:
            return len(self.outbox) == 0 and not self._inflight and not self._in_hand and not self._resend

    def flush(self, timeout: float) -> bool:
        """Wait until every queued reading is acknowledged by the broker.

        Called by a plugin (e.g. at the end of a replay) it returns as soon as the process is asked to stop:
        the stop path flushes again with its own deadline. Called once stopping, it is that final flush.
        """
        final = self.stopping.is_set()
        if final:
            self._closing.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            if not self.client.connected.is_set():
                return False
            if final:
                time.sleep(0.02)
            elif self.stopping.wait(0.02):
                return False
        return self.idle()


def _int_ms(ts: Any) -> Any:
    """Plugins may compute ``ts`` as a float (seconds * 1000); a finite one becomes int, anything else is
    left for the check to reject."""
    return int(ts) if isinstance(ts, float) and math.isfinite(ts) else ts
