"""The process runtime shared by producers and consumers: signals, counters, health, clean shutdown.

Every process publishes ``online``/``offline`` on ``wattbus/{process}/status`` (offline is the MQTT last
will, so a crash shows too) and a retained JSON health document on ``wattbus/{process}/health`` with its
counters, so "is it working?" is answered by looking at the broker, not by reading logs.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bus import topics
from bus.config import AppConfig
from bus.log import RateLimitedLog
from bus.mqtt import BusClient

HEALTH_EVERY_S = 30.0
STOP_DEADLINE_S = 9.0  # DESIGN: exit within 10 s of SIGTERM


class Counters:
    """Named event counters of one process (messages, errors, drops), thread-safe."""

    def __init__(self) -> None:
        self._values: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, name: str, n: float = 1) -> None:
        with self._lock:
            self._values[name] += n

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name] = value

    def get(self, name: str) -> float:
        return self._values.get(name, 0)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)


class ProcessContext:
    """What every plugin's ``run(ctx, cfg)`` gets: identity, logging, counters, the bus, stop signal."""

    kind = "process"

    def __init__(self, app: AppConfig, name: str, log: logging.Logger, client: BusClient, instance: str = ""):
        self.app = app
        self.name = name
        self.instance = instance
        self.log = log
        self.bad_input_log = RateLimitedLog(log)
        self.tz = app.tz
        self.stopping = threading.Event()
        self.counters = Counters()
        self.client = client
        self.started = time.time()
        self._health_extra: list[Callable[[], dict[str, Any]]] = []

    # -- plugin-facing helpers ----------------------------------------------------------------
    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the process is stopping."""
        return self.stopping.wait(max(0.0, seconds))

    def publish(self, topic: str, payload: bytes | str | dict | list, *, retain: bool = False, qos: int = 1):
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def dead_letter(self, payload: bytes, reason: str, topic: str = "") -> None:
        """Send rejected input to ``wattbus/dlq/{process}`` with its reason, count it, log it (rate-limited)."""
        self.counters.inc("dead_letters")
        self.bad_input_log.warning("dlq", "rejected input%s: %s", f" on {topic}" if topic else "", reason)
        body = {"process": self.name, "topic": topic, "reason": reason, "ts": int(time.time() * 1000),
                "payload": payload.decode("utf-8", "replace")}
        self.client.publish(topics.dlq(self.name), body, qos=1)

    def add_health(self, fn: Callable[[], dict[str, Any]]) -> None:
        """Add fields to the published health document (e.g. a sink's backlog)."""
        self._health_extra.append(fn)

    def health(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "process": self.name, "kind": self.kind, "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "counters": self.counters.snapshot(),
        }
        for fn in self._health_extra:
            doc.update(fn())
        return doc


def install_signal_handlers(ctx: ProcessContext) -> None:
    """SIGTERM/SIGINT stop intake; a watchdog makes sure the process is gone within 10 s."""

    def handler(signum, frame):
        if ctx.stopping.is_set():
            return
        ctx.log.info("received %s: stopping", signal.Signals(signum).name)
        ctx.stopping.set()
        watchdog = threading.Timer(STOP_DEADLINE_S, _overdue, args=(ctx,))
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _overdue(ctx: ProcessContext) -> None:
    ctx.log.error("did not stop within %.0f s; exiting anyway", STOP_DEADLINE_S)
    try:
        ctx.client.close(timeout=0.5)
    finally:
        os._exit(0)


def start_health(ctx: ProcessContext) -> threading.Thread:
    """Publish the retained health document now and every 30 s."""

    def loop() -> None:
        ctx.client.wait_connected(10)
        while True:
            try:
                ctx.client.publish(topics.process_health(ctx.name), ctx.health(), retain=True)
            except Exception:  # health must never take the process down
                ctx.log.exception("publishing health failed")
            if ctx.stopping.wait(HEALTH_EVERY_S):
                return

    t = threading.Thread(target=loop, name="health", daemon=True)
    t.start()
    return t
