"""The MQTT client every process uses: paho-mqtt, MQTT v5, QoS 1, persistent sessions.

What it adds to paho, and why:
- the site's ``topic_prefix`` is added on the way out and stripped on the way in, so plugin code only ever
  sees DESIGN.md's topic names;
- a last will (``offline``, retained) on the process's status topic, and ``online`` on every (re)connect;
- subscriptions are remembered and renewed on reconnect (paho reconnects by itself with backoff);
- messages are handed to callbacks by topic filter, shared subscriptions included;
- with ``manual_ack`` a message is acknowledged only when the consumer says it is durably handled.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import paho.mqtt.client as paho
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

    def ack(self) -> None:
        self._client.ack(self)


Callback = Callable[[Message], None]


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
        self._subs: dict[str, tuple[str, int, Callback]] = {}  # filter (no prefix) -> (match filter, qos, cb)
        self._raw: set[str] = set()  # filters subscribed without the site prefix (e.g. homeassistant/status)
        self._unclaimed: list[Message] = []
        self._subacks: dict[int, tuple[threading.Event, list[str]]] = {}
        self._early_subacks: set[int] = set()
        self._lock = threading.Lock()
        self._on_connect_hooks: list[Callable[[bool], None]] = []
        self._on_publish_hooks: list[Callable[[int], None]] = []
        self._was_connected = False
        self._closing = False

        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                        manual_ack=manual_ack)
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
        self._client = c
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry if session_expiry is None else session_expiry
        props.ReceiveMaximum = receive_maximum
        self._connect_props = props

    # -- topics -------------------------------------------------------------------------------
    def full(self, topic: str) -> str:
        """Topic with the site prefix (``$share/g/t`` -> ``$share/g/{prefix}t``)."""
        if topic.startswith("$share/"):
            _, group, rest = topic.split("/", 2)
            return f"$share/{group}/{self.prefix}{rest}"
        return self.prefix + topic

    def wire(self, topic_filter: str) -> str:
        """The filter as sent to the broker: prefixed, unless it was subscribed ``raw``."""
        return topic_filter if topic_filter in self._raw else self.full(topic_filter)

    def strip(self, topic: str) -> str:
        return topic[len(self.prefix):] if self.prefix and topic.startswith(self.prefix) else topic

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting with backoff until ``close()``."""
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive,
                                   clean_start=False, properties=self._connect_props)
        self._client.loop_start()

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

    def on_publish(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(mid)`` when the broker acknowledged a QoS 1 publish."""
        self._on_publish_hooks.append(hook)

    # -- publish / subscribe ------------------------------------------------------------------
    def publish(self, topic: str, payload: Payload, *, qos: int = 1, retain: bool = False,
                raw: bool = False) -> paho.MQTTMessageInfo:
        """``raw``: publish on ``topic`` as is, without the site prefix (another system's topic: HA's)."""
        return self._client.publish(topic if raw else self.full(topic), encode_payload(payload), qos=qos,
                                    retain=retain)

    def subscribe(self, topic_filter: str, callback: Callback, *, qos: int = 1,
                  raw: bool = False) -> threading.Event | None:
        """Route messages matching ``topic_filter`` (prefix-free; ``$share/`` allowed) to ``callback``.

        Returns an event set when the broker acknowledged the subscription (None when not connected yet:
        it is then made on connect). Retained messages follow the acknowledgement. ``raw`` subscribes to
        ``topic_filter`` as is, outside the site prefix (another system's topics, e.g. Home Assistant's).
        """
        match = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
        with self._lock:  # same lock as _on_connect's snapshot: a filter is never missed by both
            self._subs[topic_filter] = (match, qos, callback)
            if raw:
                self._raw.add(topic_filter)
            now = self.connected.is_set()
            claimed = [m for m in self._unclaimed if paho.topic_matches_sub(match, m.topic)]
            self._unclaimed = [m for m in self._unclaimed if m not in claimed]
        for msg in claimed:
            self._dispatch(callback, msg)
        if now:
            rc, mid = self._client.subscribe(self.wire(topic_filter),
                                             options=SubscribeOptions(qos=qos, retainHandling=1))
            if rc == 0 and mid is not None:
                acked = threading.Event()
                self._expect_suback(mid, acked, [topic_filter])
                return acked
        return None

    def unsubscribe(self, topic_filter: str, *, raw: bool = False) -> None:
        wire = topic_filter if raw else self.wire(topic_filter)
        with self._lock:
            self._subs.pop(topic_filter, None)
            self._raw.discard(topic_filter)
        if self.connected.is_set():
            self._client.unsubscribe(wire)

    def ack(self, msg: Message) -> None:
        if self.manual_ack and msg.qos > 0:
            self._client.ack(msg.mid, msg.qos)

    # -- paho callbacks (network thread) ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.log.warning("broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        if properties is not None and hasattr(properties, "ReceiveMaximum"):
            self.server_receive_maximum = properties.ReceiveMaximum
        session = bool(flags.session_present)
        self.log.info("connected to %s:%s (session %s)", self.cfg.host, self.cfg.port,
                      "resumed" if session else "new")
        with self._lock:
            subs = list(self._subs.items())
            self.connected.set()
        if subs:
            rc, mid = client.subscribe([(self.wire(f), SubscribeOptions(qos=q, retainHandling=1))
                                        for f, (_, q, _) in subs])
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
        if was and not self._closing:
            self.log.warning("lost connection to %s:%s (%s); reconnecting", self.cfg.host, self.cfg.port,
                             reason_code)

    def _expect_suback(self, mid: int, event: threading.Event, filters: list[str]) -> None:
        with self._lock:
            early = mid in self._early_subacks
            self._early_subacks.discard(mid)
            if not early:
                self._subacks[mid] = (event, filters)
        if early:  # the SUBACK beat us here
            self._subscribed(event, filters)

    def _subscribed(self, event: threading.Event, filters: list[str]) -> None:
        event.set()
        self.log.info("subscribed to %s", ", ".join(filters))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            entry = self._subacks.pop(mid, None)
            if entry is None:
                self._early_subacks.add(mid)
        if entry is not None:
            self._subscribed(*entry)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        for hook in self._on_publish_hooks:
            hook(mid)

    def _on_message(self, client, userdata, m: paho.MQTTMessage) -> None:
        topic = self.strip(m.topic)
        msg = Message(topic, m.payload, m.mid, m.qos, m.retain, self)
        with self._lock:
            for match, _, cb in self._subs.values():
                if paho.topic_matches_sub(match, topic):
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
