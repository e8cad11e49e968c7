"""Run one configured process in the foreground: what ``wattbus@NAME.service`` starts.

Client ids. A process's MQTT client id must be stable across restarts: a consumer's persistent session (its
subscriptions and the messages the broker queued while it was away) belongs to the id, so an id that
changed at every start (a pid in it) would strand that queue. It must also differ between two copies
running at once, or they take the connection from each other every few seconds. So without ``--instance``
a copy takes the first free *slot* on its host: slot 1 is ``wattbus-NAME``, slot 2 ``wattbus-NAME-2``, and
so on, each held by an exclusive lock on a file in a tmpfs directory (``$XDG_RUNTIME_DIR``, ``/dev/shm`` or
the temp dir). The lock goes with the process, however it ends, so the restarted first copy gets slot 1 and
its session back. A clean stop also removes the file, while still holding the lock; a copy that locked a
file checks that the name still leads to it, so a removed file is never taken for a free slot. Copies in a consumer ``group`` share ``$share/GROUP/...``: with distinct ids they split the
stream. Producers get slots too (their sessions hold the QoS 1 subscriptions they take, e.g. sim's remote
config). Two copies on *different* hosts cannot see each other's locks: give one ``--instance`` (the client
logs an error naming the likely cause when the broker keeps closing its fresh connections).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
from pathlib import Path
from typing import IO

from bus import topics
from bus.config import AppConfig
from bus.consumer import ConsumerContext
from bus.log import setup_logging
from bus.mqtt import BusClient
from bus.producer import ProducerContext
from bus.runtime import install_signal_handlers, start_health
from bus.sdnotify import notify_systemd
from wattbus.plugins import plugin_module

MAX_SLOTS = 64


def lock_dir() -> Path:
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm", tempfile.gettempdir()):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            return Path(candidate)
    return Path(tempfile.gettempdir())


def claim_slot(base_id: str, app: AppConfig) -> tuple[str, IO | None]:
    """The first free slot's client id on this host and the open lock file that holds it."""
    where = f"{app.mqtt.host}:{app.mqtt.port}/{base_id}"
    tag = hashlib.sha1(where.encode()).hexdigest()[:12]
    directory = lock_dir()
    for slot in range(1, MAX_SLOTS + 1):
        path = directory / f"wattbus-{os.getuid()}-{tag}-{slot}.lock"
        for _ in range(5):  # the file was removed between our open and our lock: open it again
            f = open(path, "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                break
            try:
                same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return (base_id if slot == 1 else f"{base_id}-{slot}"), f
            f.close()
    return f"{base_id}-{socket.gethostname()}-{os.getpid()}", None  # 64 copies: fall back to a unique id


def release_slot(lock: IO) -> None:
    """Remove the slot's file while still holding its lock (see the module docstring), then let go."""
    try:
        os.unlink(lock.name)
    except OSError:
        pass
    lock.close()


def run_process(app: AppConfig, name: str, instance: str = "") -> int:
    kind, cfg = app.process(name)
    module = plugin_module(kind, cfg.type)
    log = setup_logging(name + (f"#{instance}" if instance else ""), app.log.level)
    client_id = f"wattbus-{app.mqtt.topic_prefix.strip('/') + '-' if app.mqtt.topic_prefix else ''}{name}"
    slot_lock = None
    if instance:
        client_id += f"-{instance}"
    else:
        client_id, slot_lock = claim_slot(client_id, app)
    receive_max = getattr(cfg, "inflight", 100)
    client = BusClient(app.mqtt_for(name), client_id, status_topic=topics.process_status(name),
                       manual_ack=(kind == "consumer"), receive_maximum=receive_max, log=log)
    if kind == "producer":
        ctx = ProducerContext(app, name, log, client, instance, source=cfg.type)
    else:
        ctx = ConsumerContext(app, name, log, client, instance)
    install_signal_handlers(ctx)
    log.info("starting %s %s (type %s) on %s, pid %d, client id %s", kind, name, cfg.type,
             socket.gethostname(), os.getpid(), client_id)
    client.start()
    start_health(ctx)
    notify_systemd(ctx)  # Type=notify + WatchdogSec= in wattbus@.service
    try:
        module.run(ctx, cfg)
    finally:
        ctx.stopping.set()
        if isinstance(ctx, ProducerContext):
            ctx.stop(timeout=4.0)
        client.close(timeout=2.0)
        log.info("stopped")
        if slot_lock is not None:
            release_slot(slot_lock)
    return 0
