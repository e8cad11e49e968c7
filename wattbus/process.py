"""Run one configured process in the foreground: what ``wattbus@NAME.service`` starts."""

from __future__ import annotations

import os
import socket

from bus import topics
from bus.config import AppConfig
from bus.consumer import ConsumerContext
from bus.log import setup_logging
from bus.mqtt import BusClient
from bus.producer import ProducerContext
from bus.runtime import install_signal_handlers, start_health
from bus.sdnotify import notify_systemd
from wattbus.plugins import plugin_module


def run_process(app: AppConfig, name: str, instance: str = "") -> int:
    kind, cfg = app.process(name)
    module = plugin_module(kind, cfg.type)
    log = setup_logging(name + (f"#{instance}" if instance else ""), app.log.level)
    client_id = f"wattbus-{app.mqtt.topic_prefix.strip('/') + '-' if app.mqtt.topic_prefix else ''}{name}"
    if instance:
        client_id += f"-{instance}"
    receive_max = getattr(cfg, "inflight", 100)
    client = BusClient(app.mqtt_for(name), client_id, status_topic=topics.process_status(name),
                       manual_ack=(kind == "consumer"), receive_maximum=receive_max, log=log)
    if kind == "producer":
        ctx = ProducerContext(app, name, log, client, instance, source=cfg.type)
    else:
        ctx = ConsumerContext(app, name, log, client, instance)
    install_signal_handlers(ctx)
    log.info("starting %s %s (type %s) on %s, pid %d", kind, name, cfg.type, socket.gethostname(), os.getpid())
    client.start()
    start_health(ctx)
    notify_systemd(ctx)  # Type=notify + WatchdogSec= in wattbus@.service
    try:
        module.run(ctx, cfg)
    finally:
        ctx.stopping.set()
        if isinstance(ctx, ProducerContext) and not ctx.flush(timeout=5.0):
            log.warning("stopping with %d readings not yet acknowledged by the broker", len(ctx.outbox))
        client.close()
        log.info("stopped")
    return 0
