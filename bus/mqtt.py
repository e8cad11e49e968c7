"""The MQTT client every process uses: paho-mqtt, MQTT v5, QoS 1, persistent sessions.

What it adds to paho, and why:
- the site's ``topic_prefix`` is added on the way out and stripped on the way in, so plugin code only ever
  sees DESIGN.md's topic names;
- a last will (``offline``, retained) on the process's status topic, and ``online`` on every (re)connect;
- subscriptions are remembered and renewed on reconnect (paho reconnects by itself with backoff);
- messages are handed to callbacks by topic filter, shared subscriptions included;
- with ``manual_ack`` a message is acknowledged only when the consumer says it is durably handled, and only
  on the session it came from (an acknowledgement of a message from a lost session would hit another one);
- every publish is checked against the broker's packet limit (the CONNACK's Maximum-Packet-Size, or the
  config's ``max_packet_size``): an oversize packet would make the broker drop the *connection*, so it is
  refused here with PacketTooLarge instead;
- PUBACK and SUBACK reason codes >= 0x80 (not authorized, quota exceeded, ...) are failures, reported to
  hooks and logged with the topic: a refused publish is never taken for a delivered one;
- a connection the broker keeps closing right after it was made is reported: the usual cause is another
  process connected with the same client id (Mosquitto 2.0 closes the older connection without a reason);
- ``[mqtt] hosts``: the nodes of a clustered broker, tried in turn; ``[mqtt] protocol = "3.1.1"`` for the
  clusters that speak no MQTT 5 (NATS, RabbitMQ): ``clean_session false`` instead of a session expiry, and
  ``$share`` groups subscribed as plain filters.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

# paho imports dnspython when it is installed (pymongo brings it) for MQTT over DNS SRV records, which wattbus
# never uses: 6 MB of every process's RSS. Hide it while paho loads; later imports (pymongo) still get it.
_hide_dns = "dns" not in sys.modules
if _hide_dns:
    sys.modules["dns"] = None  # type: ignore[assignment]
import paho.mqtt.client as paho  # noqa: E402
if _hide_dns:
    del sys.modules["dns"]
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bus.config import MqttConfig

Payload = bytes | str | dict | list


@dataclass(slots=True)
class Message:
    """An incoming message, topic without the site prefix. ``ack()`` when durably handled (manual ack)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    _client: "BusClient"
    gen: int = 0
    """The session it came from (BusClient.generation): acknowledged only on that one."""

    def ack(self) -> None:
        self._client.ack(self)


Callback = Callable[[Message], None]
PublishHook = Callable[[int, int, str], None]
"""(mid, reason code, topic without prefix): called when the broker answered a QoS 1 publish."""

MQTT_MAX_PACKET = 268_435_455
SHORT_CONNECTION_S = 5.0


class PacketTooLarge(ValueError):
    """A publish that the broker's packet limit would turn into a disconnect; nothing was sent."""


def _varint_len(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


def packet_size(topic: str, payload_len: int, qos: int = 1) -> int:
    """Bytes of a PUBLISH packet as MQTT v5 counts them for Maximum-Packet-Size (no properties sent)."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + 1 + payload_len
    return 1 + _varint_len(remaining) + remaining


def encode_payload(payload: Payload) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return orjson.dumps(payload)


class BusClient:
    """One MQTT connection of one wattbus process."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        *,
        status_topic: str | None = None,
        manual_ack: bool = False,
        receive_maximum: int = 1000,
        session_expiry: int | None = None,
        log: logging.Logger | None = None,
    ):
        self.cfg = cfg
        self.prefix = cfg.topic_prefix
        self.status_topic = status_topic
        self.manual_ack = manual_ack
        self.log = log or logging.getLogger("wattbus.mqtt")
        self.connected = threading.Event()
        self.server_receive_maximum = 65535
        self.max_packet_size = min(cfg.max_packet_size, MQTT_MAX_PACKET)
        """Largest packet the broker takes (config, lowered by the CONNACK's Maximum-Packet-Size)."""
        self.generation = 0
        self.client_id = client_id
        self._connected_at = 0.0
        self._short_closes: list[float] = []
        self._subs: dict[str, tuple[str, int, Callback]] = {}  # filter (no prefix) -> (match filter, qos, cb)
        self._outside: set[str] = set()  # filters subscribed as they are, without the site prefix
        self._on_broker: set[str] = set()
        """Filters this process has subscribed on the broker. The first SUBSCRIBE of a filter asks for its
        retained messages whatever the session holds (a resumed session already has the subscription, and
        ``retainHandling=1`` would then send nothing: a restarted consumer would never see the statuses);
        renewals after a reconnect do not ask again."""
        self._unclaimed: list[Message] = []
        self._subacks: dict[int, tuple[threading.Event, list[str]]] = {}
        self._early_subacks: dict[int, list] = {}
        self._lock = threading.Lock()
        self._on_connect_hooks: list[Callable[[bool], None]] = []
        self._on_publish_hooks: list[PublishHook] = []
        self._on_refused_hooks: list[Callable[[str, str, str], None]] = []
        self._was_connected = False
        self._closing = False

        expiry = cfg.session_expiry if session_expiry is None else session_expiry
        self.v5 = cfg.protocol == "5"
        self._nodes = cfg.nodes()
        self._node = 0
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, manual_ack=manual_ack,
                        **({"protocol": paho.MQTTv5} if self.v5 else
                           {"protocol": paho.MQTTv311, "clean_session": expiry == 0}))
        if cfg.username:
            c.username_pw_set(cfg.username, cfg.password())
        if cfg.tls_ca or cfg.tls_cert:
            c.tls_set(ca_certs=cfg.tls_ca, certfile=cfg.tls_cert, keyfile=cfg.tls_key,
                      cert_reqs=ssl.CERT_NONE if cfg.tls_insecure else ssl.CERT_REQUIRED)
            if cfg.tls_insecure:
                c.tls_insecure_set(True)
        if status_topic:
            c.will_set(self.full(status_topic), b"offline", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_inflight_messages_set(receive_maximum)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_connect_fail = lambda client, userdata: self._next_node()
        self._client = c
        self._connect_kw: dict = {}
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
            props.ReceiveMaximum = receive_maximum
            self._connect_kw = {"clean_start": False, "properties": props}

    # -- topics -------------------------------------------------------------------------------
    def full(self, topic: str) -> str:
        """Topic with the site prefix (``$share/g/t`` -> ``$share/g/{prefix}t``)."""
        if topic.startswith("$share/"):
            _, group, rest = topic.split("/", 2)
            return f"$share/{group}/{self.prefix}{rest}"
        return self.prefix + topic

    def _on_wire(self, topic_filter: str) -> str:
        """A subscription's filter as the broker sees it (MQTT 3.1.1 has no ``$share``: its plain filter)."""
        wire = topic_filter if topic_filter in self._outside else self.full(topic_filter)
        return wire.split("/", 2)[2] if not self.v5 and wire.startswith("$share/") else wire

    def _sub(self, wire: str, qos: int, renewal: bool):
        """One filter of a SUBSCRIBE: v5 asks for retained messages on the first one only (see _on_broker);
        3.1.1 always gets them."""
        return (wire, SubscribeOptions(qos=qos, retainHandling=int(renewal))) if self.v5 else (wire, qos)

    def strip(self, topic: str) -> str:
        return topic[len(self.prefix):] if self.prefix and topic.startswith(self.prefix) else topic

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting with backoff until ``close()``."""
        host, port = self._nodes[self._node]
        self._client.connect_async(host, port, keepalive=self.cfg.keepalive, **self._connect_kw)
        self._client.loop_start()

    def _next_node(self) -> None:
        """Point the next reconnect at the next node of a clustered broker (called on paho's thread)."""
        if len(self._nodes) < 2 or self._closing:
            return
        self._node = (self._node + 1) % len(self._nodes)
        host, port = self._nodes[self._node]
        # connect_async only records where to connect; paho's loop makes the next attempt there.
        self._client.connect_async(host, port, keepalive=self.cfg.keepalive, **self._connect_kw)
        self.log.info("trying broker node %s:%s", host, port)

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self.connected.wait(timeout)

    def close(self, *, offline: bool = True, timeout: float = 3.0) -> None:
        """Publish ``offline`` (so a clean stop is not mistaken for a crash) and disconnect."""
        self._closing = True
        if offline and self.status_topic and self.connected.is_set():
            info = self._client.publish(self.full(self.status_topic), b"offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def on_connect(self, hook: Callable[[bool], None]) -> None:
        """Call ``hook(session_present)`` after every (re)connect."""
        self._on_connect_hooks.append(hook)

    def on_publish(self, hook: PublishHook) -> None:
        """Call ``hook(mid, reason_code, topic)`` when the broker answered a QoS 1 publish.

        A reason code >= 0x80 means the broker refused it (the message was *not* delivered).
        """
        self._on_publish_hooks.append(hook)

    def on_refused(self, hook: Callable[[str, str, str], None]) -> None:
        """Call ``hook(kind, topic, reason)`` for a refused publish or subscribe (kind says which)."""
        self._on_refused_hooks.append(hook)

    # -- publish / subscribe ------------------------------------------------------------------
    def publish(self, topic: str, payload: Payload, *, qos: int = 1, retain: bool = False,
                outside_prefix: bool = False) -> paho.MQTTMessageInfo:
        """Publish (queued by paho while disconnected); PacketTooLarge when the broker could not take it.

        ``outside_prefix``: ``topic`` is another system's (Home Assistant's discovery), used as it is."""
        data = encode_payload(payload)
        self.check_size(topic, len(data), qos, outside_prefix=outside_prefix)
        return self._client.publish(topic if outside_prefix else self.full(topic), data, qos=qos, retain=retain)

    def room(self, topic: str, qos: int = 1) -> int:
        """Payload bytes a publish to ``topic`` may carry under the broker's packet limit."""
        # - 3: the remaining-length field grows from 1 to up to 4 bytes with the payload
        return self.max_packet_size - packet_size(self.full(topic), 0, qos) - 3

    def check_size(self, topic: str, payload_len: int, qos: int = 1, *, outside_prefix: bool = False) -> None:
        size = packet_size(topic if outside_prefix else self.full(topic), payload_len, qos)
        if size > self.max_packet_size:
            raise PacketTooLarge(f"a {size}-byte packet to {topic[:200]} exceeds the broker's limit of "
                                 f"{self.max_packet_size} bytes; not sent")

    def subscribe(self, topic_filter: str, callback: Callback, *, qos: int = 1,
                  outside_prefix: bool = False) -> threading.Event | None:
        """Route messages matching ``topic_filter`` (prefix-free; ``$share/`` allowed) to ``callback``.

        Returns an event set when the broker acknowledged the subscription (None when not connected yet:
        it is then made on connect). Retained messages follow the acknowledgement. ``outside_prefix``: a
        topic that is not wattbus's (a device's own), used as it is; its messages keep their full topic.
        """
        match = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
        if not self.v5 and match != topic_filter:
            self.log.warning("MQTT 3.1.1 has no shared subscriptions: %s is subscribed as %s, so every copy "
                             "gets every message", topic_filter, match)
        with self._lock:  # same lock as _on_connect's snapshot: a filter is never missed by both
            if outside_prefix and self.prefix:
                self._outside.add(topic_filter)
            self._subs[topic_filter] = (match, qos, callback)
            now = self.connected.is_set()
            claimed = [m for m in self._unclaimed if paho.topic_matches_sub(match, m.topic)]
            self._unclaimed = [m for m in self._unclaimed if m not in claimed]
        for msg in claimed:
            self._dispatch(callback, msg)
        if now:
            rc, mid = self._client.subscribe([self._sub(self._on_wire(topic_filter), qos, False)])
            self._on_broker.add(topic_filter)
            if rc == 0 and mid is not None:
                acked = threading.Event()
                self._expect_suback(mid, acked, [topic_filter])
                return acked
        return None

    def unsubscribe(self, topic_filter: str, *, outside_prefix: bool = False) -> None:
        with self._lock:
            self._subs.pop(topic_filter, None)
            self._on_broker.discard(topic_filter)
        if self.connected.is_set():
            wire = topic_filter if outside_prefix else self._on_wire(topic_filter)
            self._client.unsubscribe(wire)
        self._outside.discard(topic_filter)

    def ack(self, msg: Message) -> None:
        if self.manual_ack and msg.qos > 0 and msg.gen == self.generation:
            self._client.ack(msg.mid, msg.qos)

    # -- paho callbacks (network thread) ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.log.warning("broker %s:%s refused the connection: %s", client.host, client.port, reason_code)
            return
        if properties is not None and hasattr(properties, "ReceiveMaximum"):
            self.server_receive_maximum = properties.ReceiveMaximum
        if properties is not None and hasattr(properties, "MaximumPacketSize"):
            self.max_packet_size = min(self.cfg.max_packet_size, properties.MaximumPacketSize,
                                       MQTT_MAX_PACKET)
        session = bool(flags.session_present)
        if not session:
            self.generation += 1  # a new session: packet ids of the old one mean nothing (or another message)
        self._connected_at = time.monotonic()
        self.log.info("connected to %s:%s (session %s)", client.host, client.port,
                      "resumed" if session else "new")
        with self._lock:
            subs = list(self._subs.items())
            renewed = {f: f in self._on_broker for f, _ in subs}
            self._on_broker.update(renewed)
            self.connected.set()
        if subs:
            rc, mid = client.subscribe([self._sub(self._on_wire(f), q, renewed[f]) for f, (_, q, _) in subs])
            if rc == 0 and mid is not None:
                self._expect_suback(mid, threading.Event(), [f for f, _ in subs])
        if self.status_topic:
            client.publish(self.full(self.status_topic), b"online", qos=1, retain=True)
        self._was_connected = True
        for hook in self._on_connect_hooks:
            hook(session)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self._next_node()
        if was and not self._closing:
            self.log.warning("lost connection to %s:%s (%s); reconnecting", client.host, client.port,
                             reason_code)
            now = time.monotonic()
            if now - self._connected_at < SHORT_CONNECTION_S:
                self._short_closes = [t for t in self._short_closes if now - t < 60] + [now]
                if len(self._short_closes) == 3:
                    self.log.error("the broker closed this connection 3 times within seconds of opening it: "
                                   "another process is probably connected with the same client id %r "
                                   "(give each copy its own --instance)", self.client_id)

    def _expect_suback(self, mid: int, event: threading.Event, filters: list[str]) -> None:
        with self._lock:
            codes = self._early_subacks.pop(mid, None)
            if codes is None:
                self._subacks[mid] = (event, filters)
        if codes is not None:  # the SUBACK beat us here
            self._subscribed(event, filters, codes)

    def _subscribed(self, event: threading.Event, filters: list[str], codes: list | None = None) -> None:
        event.set()
        refused = [(f, c) for f, c in zip(filters, codes or []) if _failed(c)]
        ok = [f for f in filters if f not in {f for f, _ in refused}]
        if ok:
            self.log.info("subscribed to %s", ", ".join(ok))
        for f, code in refused:
            self.log.error("the broker refused the subscription to %s: %s", f, _reason(code))
            for hook in self._on_refused_hooks:
                hook("subscribe", f, _reason(code))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            entry = self._subacks.pop(mid, None)
            if entry is None:
                self._early_subacks[mid] = list(reason_codes or [])
        if entry is not None:
            self._subscribed(*entry, list(reason_codes or []))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Runs under paho's message lock with the message still in its table: its topic is there to report.
        out = getattr(client, "_out_messages", {}).get(mid)
        topic = self.strip(out.topic) if out is not None else "?"
        code = int(getattr(reason_code, "value", reason_code or 0))
        try:
            if code >= 0x80:
                for hook in self._on_refused_hooks:
                    hook("publish", topic, _reason(reason_code))
            for hook in self._on_publish_hooks:
                hook(mid, code, topic)
        except Exception:  # a hook's bug must not kill paho's network thread (and with it every ack)
            self.log.exception("publish-acknowledgement hook failed for %s", topic)

    def _on_message(self, client, userdata, m: paho.MQTTMessage) -> None:
        try:
            topic = self.strip(m.topic)
        except UnicodeDecodeError:  # the broker checks UTF-8; should it not, such a topic matches no filter
            topic = m._topic.decode("utf-8", "backslashreplace")
        msg = Message(topic, m.payload, m.mid, m.qos, m.retain, self, self.generation)
        with self._lock:
            for flt, (match, _, cb) in self._subs.items():
                if flt in self._outside and paho.topic_matches_sub(match, m.topic):
                    msg.topic = m.topic  # a device's own topic: as it is
                    break
                if flt not in self._outside and m.topic.startswith(self.prefix) and \
                        paho.topic_matches_sub(match, topic):
                    break
            else:
                # A resumed session delivers queued messages right after CONNACK, possibly before the
                # plugin has subscribed: keep them unacknowledged until a subscription claims them.
                self._unclaimed.append(msg)
                return
        self._dispatch(cb, msg)

    def _dispatch(self, cb: Callback, msg: Message) -> None:
        try:
            cb(msg)
        except Exception:  # a callback bug must not kill the network thread
            self.log.exception("handler for %s failed", msg.topic)
            msg.ack()


def _failed(code) -> bool:
    return int(getattr(code, "value", code or 0)) >= 0x80


def _reason(code) -> str:
    """'Not authorized (0x87)' from a paho ReasonCode (or a bare number)."""
    value = int(getattr(code, "value", code or 0))
    return f"{code if hasattr(code, 'value') else 'reason code'} (0x{value:02X})"
