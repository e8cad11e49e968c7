"""End to end as real processes: hhpc replay -> mosquitto -> store (SQLite) + exporter."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from producers.hhpc.generate import generate_year
from tests.support.ports import free_port
from tests.support.processes import write_config

SEED_ROWS = [  # tests/hhpc/fixtures/seed_sample.txt, mapped to W, var, V, A, Wh (Europe/Brussels = UTC+1)
    (1734195480000, 2278.0, 50.0, 236.74, 9.6, 0.0, 0.0, 17.0),
    (1734195540000, 2466.0, 92.0, 236.8, 10.4, 0.0, 0.0, 17.0),
    (1734195600000, 2464.0, 92.0, 236.95, 10.4, 0.0, 0.0, 17.0),
    (1734195660000, 2470.0, 94.0, 237.28, 10.4, 0.0, 0.0, 17.0),
    (1734195720000, 2482.0, 96.0, 237.9, 10.4, 0.0, 0.0, 18.0),
    (1734195780000, 2484.0, 96.0, 237.82, 10.4, 0.0, 0.0, 17.0),
    (1734195840000, 2484.0, 98.0, 237.96, 10.4, 0.0, 0.0, 17.0),
    (1734195900000, 2490.0, 98.0, 238.48, 10.4, 0.0, 0.0, 18.0),
    (1734195960000, 2492.0, 98.0, 238.52, 10.4, 0.0, 0.0, 17.0),
    (1734196020000, 2482.0, 96.0, 238.12, 10.4, 0.0, 0.0, 18.0),
]


def rows(db: Path, device: str) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as c:
        try:
            return c.execute("SELECT ts, power_w, reactive_power_var, voltage_v, current_a, sub1_energy_wh, "
                             "sub2_energy_wh, sub3_energy_wh FROM readings WHERE device = ? ORDER BY ts",
                             (device,)).fetchall()
        except sqlite3.OperationalError:
            return []


def wait_rows(db: Path, device: str, n: int, timeout: float = 30.0) -> list[tuple]:
    deadline = time.monotonic() + timeout
    got: list[tuple] = []
    while time.monotonic() < deadline:
        got = rows(db, device)
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{len(got)} of {n} readings stored after {timeout} s")


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_seed_rows_replayed_are_stored_once_with_units_and_exported(broker, processes, tmp_path, seed_sample):
    dataset = tmp_path / "seed.txt"
    shutil.copy(seed_sample, dataset)
    db, port = tmp_path / "w.db", free_port()
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.seedhouse]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        batch = 4

        [consumer.store1]
        type = "store"
        sink = "sqlite:///{db}"

        [consumer.exporter1]
        type = "exporter"
        port = {port}
        compat = "hhpc"
        compat_device = "seedhouse"
        """)
    store = processes(cfg, "store1")
    exporter = processes(cfg, "exporter1")
    store.wait_output("subscribed to +/+/reading")
    exporter.wait_output("subscribed to +/+/reading")
    processes(cfg, "seedhouse")

    assert wait_rows(db, "seedhouse", 10) == SEED_ROWS

    deadline = time.monotonic() + 10
    while 'wattbus_power_watts{device="seedhouse",source="hhpc"} 2482.0' not in (text := scrape(port)):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert 'wattbus_voltage_volts{device="seedhouse",source="hhpc"} 238.12' in text
    assert 'wattbus_up{device="seedhouse",source="hhpc"} 1.0' in text
    # the seed's own names, so its Prometheus setup works unchanged
    assert 'global_active_power{unit="kilowatt"} 2.482' in text
    assert 'sub_metering_3{unit="watt-hour of active energy"} 18.0' in text
    assert "hhpc_up 1.0" in text
    root = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
    assert 'href="metrics"' in root

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: ./run test installs Debian's prometheus package")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_store_killed_mid_replay_still_stores_every_reading_once(broker, processes, tmp_path):
    dataset = tmp_path / "days.txt"
    n = generate_year(2024, dataset, seed=3, start=date(2024, 3, 1), end=date(2024, 3, 4))
    assert n == 3 * 1440
    db = tmp_path / "w.db"
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.killhouse]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        speed = 60000
        batch = 20

        [consumer.store2]
        type = "store"
        sink = "sqlite:///{db}"
        batch_wait = 0.02
        """)
    store = processes(cfg, "store2")
    store.wait_output("subscribed to +/+/reading")
    processes(cfg, "killhouse")
    wait_rows(db, "killhouse", 300)
    store.kill()  # kill -9 in the middle of the replay
    stored_before = len(rows(db, "killhouse"))
    assert 0 < stored_before < n
    time.sleep(1.0)
    processes(cfg, "store2")
    got = wait_rows(db, "killhouse", n, timeout=60)
    assert len(got) == n
    assert len({r[0] for r in got}) == n  # exactly once: the primary key would hide duplicates, so count ts
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM readings WHERE device = 'killhouse'").fetchone()[0] == n
