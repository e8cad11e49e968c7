"""The process runtime shared by producers and consumers: signals, counters, health, clean shutdown.

Every process publishes ``online``/``offline`` on ``wattbus/{process}/status`` (offline is the MQTT last
will, so a crash shows too) and a retained JSON health document on ``wattbus/{process}/health`` with its
counters, so "is it working?" is answered by looking at the broker, not by reading logs.

A dead letter carries at most a 4 KiB prefix of the rejected payload (as text: invalid UTF-8 escaped), with
the payload's size and SHA-256, so the DLQ can never turn one huge bad message into a bigger one that the
broker refuses (which would disconnect the process and, redelivered, block it for good).
"""

from __future__ import annotations

import hashlib
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
from bus.mqtt import BusClient, PacketTooLarge

HEALTH_EVERY_S = 30.0
STOP_DEADLINE_S = 9.0  # DESIGN: exit within 10 s of SIGTERM
DLQ_PREFIX_BYTES = 4096
DLQ_REASON_CHARS = 2000
DLQ_TOPIC_CHARS = 300


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(field.encode() + b":"):
                    return float(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def rss_mb() -> float:
    """Resident memory now (VmRSS), not the peak that ``ru_maxrss`` reports."""
    kb = _status_kb("VmRSS")
    return round(kb / 1024, 1) if kb is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this program (VmHWM). Not ``ru_maxrss``: after fork + exec that also counts
    the parent's memory at the fork (a process started by a big test runner would report the runner's)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


def dead_letter_body(process: str, payload: bytes, reason: str, topic: str = "",
                     **extra: Any) -> dict[str, Any]:
    """The DLQ document: bounded whatever the input (see the module docstring)."""
    return {"process": process, "topic": topic[:DLQ_TOPIC_CHARS], "reason": reason[:DLQ_REASON_CHARS],
            "ts": int(time.time() * 1000),
            "payload": payload[:DLQ_PREFIX_BYTES].decode("utf-8", "backslashreplace"),
            "payload_bytes": len(payload), "payload_truncated": len(payload) > DLQ_PREFIX_BYTES,
            "payload_sha256": hashlib.sha256(payload).hexdigest(), **extra}


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
        self.before_first_health: list[Callable[[], None]] = []
        """Run once connected, before the first health document replaces the previous run's."""
        self.health_started = threading.Event()
        client.on_refused(self._refused)

    def _refused(self, kind: str, topic: str, reason: str) -> None:
        first = not self.counters.get(f"{kind}_refused")
        self.counters.inc(f"{kind}_refused")
        self.bad_input_log.warning(f"refused_{kind}", "the broker refused the %s to %s: %s", kind, topic,
                                   reason)
        if first and not topic.startswith(topics.process_health(self.name)):
            threading.Thread(target=self.publish_health, daemon=True).start()  # not from paho's thread

    def publish_health(self) -> None:
        """Publish the health document now (retained), e.g. when something went wrong."""
        try:
            self.client.publish(topics.process_health(self.name), self.health(), retain=True)
        except Exception:  # health must never take the process down
            self.log.exception("publishing health failed")

    # -- plugin-facing helpers ----------------------------------------------------------------
    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the process is stopping."""
        return self.stopping.wait(max(0.0, seconds))

    def publish(self, topic: str, payload: bytes | str | dict | list, *, retain: bool = False, qos: int = 1):
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def dead_letter(self, payload: bytes, reason: str, topic: str = "", **extra: Any) -> None:
        """Send rejected input to ``wattbus/dlq/{process}`` with its reason, count it, log it (rate-limited).

        ``extra`` fields go into the document as they are (e.g. ``rejected``: which readings of a batch).
        """
        self.counters.inc("dead_letters")
        where = f" on {topic[:DLQ_TOPIC_CHARS]}" if topic else ""
        self.bad_input_log.warning("dlq", "rejected input%s: %s", where, reason[:DLQ_REASON_CHARS])
        body = dead_letter_body(self.name, payload, reason, topic, **extra)
        try:
            self.client.publish(topics.dlq(self.name), body, qos=1)
        except PacketTooLarge as exc:  # only a huge `extra` could do this; keep the reason, drop the rest
            self.log.error("dead letter too large (%s); sending it without details", exc)
            body = dead_letter_body(self.name, payload, reason, topic)
            self.client.publish(topics.dlq(self.name), body, qos=1)

    def add_health(self, fn: Callable[[], dict[str, Any]]) -> None:
        """Add fields to the published health document (e.g. a sink's backlog)."""
        self._health_extra.append(fn)

    def health(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "process": self.name, "kind": self.kind, "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
            "rss_mb": rss_mb(), "rss_peak_mb": peak_rss_mb(),
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
        while not ctx.client.wait_connected(0.5):
            if ctx.stopping.is_set():
                return
        for hook in ctx.before_first_health:
            try:
                hook()
            except Exception:  # a start-up chore must never take the process down
                ctx.log.exception("start-up hook failed")
        ctx.health_started.set()
        while True:
            ctx.publish_health()
            if ctx.stopping.wait(HEALTH_EVERY_S):
                return

    t = threading.Thread(target=loop, name="health", daemon=True)
    t.start()
    return t
