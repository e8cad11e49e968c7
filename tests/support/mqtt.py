"""A plain paho client for tests: publish raw payloads and collect what the processes publish."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class Collector:
    """Subscribes to ``topics`` and records (topic, payload, retain) in arrival order."""

    def __init__(self, broker, *topics: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cv = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            self._subscribed.wait(5)

    def _on_message(self, client, userdata, msg) -> None:
        with self._cv:
            self.messages.append((msg.topic, msg.payload, msg.retain))
            self._cv.notify_all()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def on(self, topic_filter: str) -> list[tuple[str, bytes, bool]]:
        with self._cv:
            return [m for m in self.messages if paho.topic_matches_sub(topic_filter, m[0])]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cv.wait(min(left, 0.2))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
