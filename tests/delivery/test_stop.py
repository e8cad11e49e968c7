"""SIGTERM in every state: readings kept or counted, device statuses offline, every wait ends on stop."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.delivery.common import expected_keys, wait_until, write_dataset
from tests.support.mosquitto import Broker
from tests.support.mqtt import Collector
from tests.support.processes import write_config


def _live(tmp_path, broker, name: str, device: str, extra_mqtt: str = ""):
    dataset = write_dataset(tmp_path / "hhpc.txt", datetime(2024, 1, 1), 600)
    cfg = write_config(tmp_path / f"{name}.toml", broker, f"""
        [producer.{name}]
        type = "hhpc"
        dataset = "{dataset}"
        device = "{device}"
        mode = "live"
        interval = 0.2

        [consumer.store]
        type = "store"
        sink = "sqlite:///{tmp_path / 'w.db'}"
        """)
    if extra_mqtt:
        cfg.write_text(cfg.read_text().replace("keepalive = 5", "keepalive = 5\n" + extra_mqtt))
    return cfg


def _status(collector, topic: str) -> bytes | None:
    got = collector.on(topic)
    return got[-1][1] if got else None


def _retained(broker, topic: str) -> bytes | None:
    """What a consumer that connects now is told (the retained message), by a fresh client."""
    c = Collector(broker, topic)
    try:
        deadline = time.monotonic() + 2
        while not c.on(topic) and time.monotonic() < deadline:
            time.sleep(0.05)
        return _status(c, topic)
    finally:
        c.close()


@pytest.mark.slow
def test_sigterm_with_the_broker_down_says_what_it_drops_and_the_next_start_clears_stale_statuses(tmp_path,
                                                                                                 processes):
    broker = Broker(tmp_path / "mosquitto").start()
    try:
        cfg = _live(tmp_path, broker, "meter", "oldname")
        p = processes(cfg, "meter")
        p.wait_output("live:")
        wait_until(lambda: _retained(broker, "hhpc/oldname/status") == b"online", 10, "online")
        wait_until(lambda: b"hhpc/oldname" in (_retained(broker, "wattbus/meter/health") or b""), 10,
                   "the device listed in the retained health document")
        broker.stop()  # an outage (kept retained messages: a broker stopped cleanly, or one that saved)
        time.sleep(1.5)  # readings pile up in memory
        assert p.terminate(timeout=12) == 0
        out = p.output()
        assert "messages not acknowledged by the broker: dropped" in out and "queue_dir" in out
        assert "device status(es) stay as they are until the next start" in out
        assert "did not stop within" not in out  # no wait outlived the stop: the watchdog never fired
        broker.start()
        # the next start runs the device under a new name: the old one must not stay "online" forever
        cfg = _live(tmp_path, broker, "meter", "newname")
        p2 = processes(cfg, "meter")
        p2.wait_output("marked 1 device(s) of an earlier run offline: oldname")
        wait_until(lambda: _retained(broker, "hhpc/oldname/status") == b"offline", 10, "oldname offline")
        wait_until(lambda: _retained(broker, "hhpc/newname/status") == b"online", 10, "newname online")
        assert p2.terminate() == 0
        assert _retained(broker, "hhpc/newname/status") == b"offline"
    finally:
        broker.kill()


@pytest.mark.slow
def test_sigterm_with_the_broker_down_keeps_the_queue_on_disk_and_sends_it_at_the_next_start(tmp_path,
                                                                                            processes):
    broker = Broker(tmp_path / "mosquitto").start()
    try:
        cfg = _live(tmp_path, broker, "meter", "disk", f'queue_dir = "{tmp_path / "queue"}"')
        store = processes(cfg, "store")
        store.wait_output("subscribed to +/+/reading")
        p = processes(cfg, "meter")
        p.wait_output("live:")
        time.sleep(1)
        broker.stop()  # an outage; the store's session survives it (a killed broker keeps it too once saved)
        t_down = time.time()
        time.sleep(1.5)
        assert p.terminate(timeout=12) == 0
        t_stop = time.time()
        assert "kept in" in p.output()
        broker.start()
        processes(cfg, "meter")
        import sqlite3

        def ticks() -> set[int]:
            try:
                with sqlite3.connect(tmp_path / "w.db") as conn:
                    return {r[0] for r in conn.execute("SELECT ts FROM readings WHERE device = 'disk'")}
            except sqlite3.OperationalError:
                return set()

        # every 200 ms tick from before the outage until the stop: what the first run queued on disk
        wanted = set(range((int(t_down * 1000) // 200 - 2) * 200, (int(t_stop * 1000) // 200 - 3) * 200, 200))
        wait_until(lambda: wanted <= ticks(), 30, "the readings queued during the outage")
    finally:
        broker.kill()


def test_sigterm_after_a_replay_finished_stops_at_once_and_leaves_the_device_offline(tmp_path, processes):
    broker = Broker(tmp_path / "mosquitto").start()
    try:
        dataset = write_dataset(tmp_path / "hhpc.txt", datetime(2024, 1, 1), 300)
        cfg = write_config(tmp_path / "w.toml", broker, f"""
            [producer.done]
            type = "hhpc"
            dataset = "{dataset}"
            mode = "replay"
            """)
        c = Collector(broker, "hhpc/done/#", "wattbus/done/status")
        p = processes(cfg, "done")
        p.wait_output("replay of")
        c.wait_for(lambda: len(c.on("hhpc/done/reading")) >= 1, 10, "the replay")
        assert p.terminate(timeout=12) == 0
        assert "did not stop within" not in p.output()  # the flush wait ended with the stop
        c.wait_for(lambda: _status(c, "hhpc/done/status") == b"offline", 5, "device offline")
        c.wait_for(lambda: _status(c, "wattbus/done/status") == b"offline", 5, "process offline")
        assert sum(p.count(b'"ts"') for _, p, _ in c.on("hhpc/done/reading")) == len(expected_keys(dataset))
        c.close()
    finally:
        broker.kill()


@pytest.mark.parametrize("kind", ["sim", "hhpc-replay"])
def test_every_wait_in_a_producer_ends_on_sigterm_even_with_no_broker(kind, tmp_path, processes):
    """sim waits for its retained state at start; a replay waits for its queue to drain: neither may
    hold up a stop when the broker is not there."""
    port_holder = Broker(tmp_path / "mosquitto")  # a port nobody listens on
    dataset = write_dataset(tmp_path / "hhpc.txt", datetime(2024, 1, 1), 20_000)
    body = {"sim": """
        [producer.waiter]
        type = "sim"
        [[producer.waiter.meters]]
        serial = "kili"
        """, "hhpc-replay": f"""
        [producer.waiter]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        batch = 60
        """}[kind]
    cfg = write_config(tmp_path / "w.toml", port_holder, body)
    p = processes(cfg, "waiter")
    p.wait_output("starting producer")
    time.sleep(1.5)
    assert p.terminate(timeout=12) == 0
    assert "did not stop within" not in p.output() and "stopped" in p.output()
