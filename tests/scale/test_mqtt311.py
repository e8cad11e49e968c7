"""``[mqtt] protocol = "3.1.1"`` (the clustered brokers without MQTT 5) and ``[mqtt] hosts``, on Mosquitto.

What MQTT 5 gives wattbus and what the 3.1.1 path does instead (docs/scaling.md, step 2): a persistent
session by ``clean_session false`` instead of a session expiry; a ``$share`` group subscribed as its plain
filter (each copy stores everything; the idempotent store keeps one row per reading); no reason codes.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import date
from pathlib import Path

import pytest

from producers.hhpc.generate import generate_year
from tests.core.test_cli_config import GOOD, check
from tests.support.ports import free_port
from tests.support.processes import write_config

V311 = 'protocol = "3.1.1"\n'

pytestmark = pytest.mark.slow


def counts(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("SELECT count(*), count(DISTINCT ts) FROM readings").fetchone()
    except sqlite3.OperationalError:
        return 0, 0


def replay(tmp_path: Path, broker, readings: int, speed: int, mqtt: str = V311) -> Path:
    dataset = tmp_path / "days.txt"
    generate_year(2024, dataset, seed=5, start=date(2024, 2, 5), end=date(2024, 2, 7))
    end = f"2024-02-05T{readings // 60:02d}:{readings % 60:02d}"
    return write_config(tmp_path / "producer.toml", broker, f"""
        [producer.meter]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        speed = {speed}
        batch = 1
        start = "2024-02-05T00:00"
        end = "{end}"
        """, mqtt=mqtt)


def wait_for(db: Path, n: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while counts(db)[1] < n and time.monotonic() < deadline:
        time.sleep(0.2)
    return counts(db)


def store(tmp_path: Path, broker, extra: str = "", mqtt: str = V311) -> tuple[Path, Path]:
    """(config, database) of a store consumer writing to a fresh SQLite file."""
    db = tmp_path / "store.db"
    return write_config(tmp_path / "store.toml", broker, f"""
        [consumer.store]
        type = "store"
        sink = "sqlite:///{db}"
        {extra}
        """, mqtt=mqtt), db


def test_a_311_store_killed_mid_stream_gets_what_came_while_it_was_down(tmp_path, own_broker, processes):
    """The broker keeps the session of a 3.1.1 client with clean_session false and queues for it."""
    broker = own_broker
    store_cfg, db = store(tmp_path, broker)
    first = processes(store_cfg, "store")
    first.wait_output("subscribed to")
    producer = processes(replay(tmp_path, broker, 600, 1200), "meter")  # 600 readings in 30 s
    assert wait_for(db, 100, 30)[1] >= 100
    first.kill()
    time.sleep(8)  # the producer goes on; the broker queues for the store's session
    second = processes(store_cfg, "store")
    rows, distinct = wait_for(db, 600, 90)
    assert "session resumed" in second.output()
    assert distinct == 600, f"{600 - distinct} readings lost"
    assert rows == 600
    assert producer.alive()


def test_a_share_group_on_311_stores_every_reading_once_and_says_why_copies_do_not_split(
        tmp_path, own_broker, processes):
    broker = own_broker
    store_cfg, db = store(tmp_path, broker, 'group = "stores"')
    copies = [processes(store_cfg, "store", "--instance", str(i)) for i in (1, 2)]
    for c in copies:
        c.wait_output("subscribed to")
    processes(replay(tmp_path, broker, 300, 3000), "meter")
    rows, distinct = wait_for(db, 300, 60)
    assert (rows, distinct) == (300, 300)
    for c in copies:
        assert "no shared subscriptions" in c.output() and c.alive()


def test_the_first_host_down_the_client_moves_to_the_next(tmp_path, own_broker, processes):
    broker = own_broker
    dead = free_port()
    store_cfg, db = store(tmp_path, broker, mqtt="")
    text = store_cfg.read_text().replace(f"port = {broker.port}", f'port = {dead}\nhosts = ["127.0.0.1:{broker.port}"]')
    store_cfg.write_text(text)
    moved = processes(store_cfg, "store")
    moved.wait_output("subscribed to", timeout=30)
    assert f"trying broker node 127.0.0.1:{broker.port}" in moved.output()
    processes(replay(tmp_path, broker, 120, 3000, mqtt=""), "meter")
    assert wait_for(db, 120, 30) == (120, 120)


@pytest.mark.parametrize("line, message", [
    ('hosts = ["central"]', 'mqtt.hosts: entries must be "host:port"'),
    ('hosts = ["a:99999"]', "port 1..65535, not 'a:99999'"),
    ('protocol = "4"', "mqtt.protocol"),
])
def test_bad_cluster_keys_exit_2_naming_the_key(tmp_path, line, message):
    cfg, r = check(tmp_path, GOOD.replace("port = 1883", f"port = 1883\n{line}"))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
