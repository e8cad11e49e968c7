"""One real stack per test module: Mosquitto, an hhpc replay -> store (SQLite), sim meters, and the api.

The store is filled by the real pipeline (three generated days around the 2024 spring-forward change, replayed
through the broker). The aggregate consumer is built in parallel (issue 10), so the daily buckets it would
write are written here with ``write_buckets``, computed in the test from the stored readings, and one bucket
is published on ``agg/`` as it would be.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from bus.rollup import Bucket, encode
from bus.sinks import open_sink
from producers.hhpc.generate import generate_year
from tests.support.mosquitto import Broker
from tests.support.mqtt import Collector
from tests.support.ports import free_port, wait_port
from tests.support.processes import WattbusProcess, write_config

TZ = ZoneInfo("Europe/Brussels")
DAYS = (date(2024, 3, 30), date(2024, 3, 31), date(2024, 4, 1))  # 31 March: 23 h (spring forward)
READINGS = 1440 + 1380 + 1440
HOUSE = "apihouse"
TOKEN = "s3cret-token-for-tests-0123456789"


@dataclass
class Stack:
    base: str
    broker: Broker
    db: Path
    dir: Path
    api: WattbusProcess
    config: Path

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kw)

    def collector(self, *topics: str) -> Collector:
        return Collector(self.broker, *topics)


def local_ms(d: date, hour: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, hour, tzinfo=TZ).timestamp() * 1000)


def daily_buckets(db: Path) -> list[Bucket]:
    """What the aggregate consumer would write for the replayed days, worked out here from the raw rows."""
    out: list[Bucket] = []
    with sqlite3.connect(db) as c:
        for d in DAYS:
            start, end = local_ms(d), local_ms(d + timedelta(days=1))
            n, wh, avg, lo, hi = c.execute(
                "SELECT count(*), sum(energy_wh), avg(power_w), min(power_w), max(power_w) FROM readings "
                "WHERE source = 'hhpc' AND device = ? AND ts > ? AND ts <= ?", (HOUSE, start, end)).fetchone()
            label = datetime.fromtimestamp(start / 1000, TZ).isoformat(timespec="minutes")
            out.append(Bucket(source="hhpc", device=HOUSE, period="1d", start=start, end=end, label=label,
                              status="complete", coverage=1.0, readings=n, energy_import_wh=wh, power_avg_w=avg,
                              power_min_w=lo, power_max_w=hi))
            out.append(Bucket(source="site", device="home", period="1d", start=start, end=end, label=label,
                              status="complete", coverage=1.0, readings=n, grid_import_wh=wh * 0.7,
                              grid_export_wh=wh * 0.1, solar_wh=wh * 0.4, self_consumption_wh=wh * 0.3,
                              home_wh=wh, cost=round(wh * 0.7 / 1000 * 0.3, 4), solar_profit=0.5, currency="EUR"))
    return out


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stored(db: Path) -> int:
    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT count(*) FROM readings WHERE device = ?", (HOUSE,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    work = tmp_path_factory.mktemp("api")
    broker = Broker(work / "mosquitto").start()
    dataset = work / "days.txt"
    generate_year(2024, dataset, seed=11, start=DAYS[0], end=DAYS[-1] + timedelta(days=1))
    db = work / "w.db"
    token_file = work / "api.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    port = free_port()
    cfg = write_config(work / "wattbus.toml", broker, f"""
        [producer.{HOUSE}]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        batch = 500

        [producer.meters]
        type = "sim"
        interval = 300
        speed = 600
        heartbeat = 1.0
        start = "2024-03-31T06:00"
        [[producer.meters.meters]]
        serial = "kili"
        daily_kwh = 9.0
        solar_kwp = 4.0

        [consumer.store]
        type = "store"
        sink = "sqlite:///{db}"

        [consumer.api]
        type = "api"
        listen = "127.0.0.1"
        port = {port}
        site = "home"
        token_file = "{token_file}"
        hhpc_device = "gethpc1"

        [consumer.api2]
        type = "api"
        listen = "127.0.0.1"
        port = {free_port()}
        """)
    procs: list[WattbusProcess] = []

    def start(name: str) -> WattbusProcess:
        p = WattbusProcess(cfg, name).start()
        procs.append(p)
        return p

    try:
        store = start("store")
        api = start("api")
        store.wait_output("subscribed to +/+/reading")
        api.wait_output("subscribed to +/+/reading")
        wait_port(port)
        start(HOUSE)
        start("meters")
        wait_for(lambda: stored(db) >= READINGS, 60, f"{READINGS} stored readings")
        sink = open_sink(f"sqlite:///{db}")
        sink.ensure_schema()
        buckets = daily_buckets(db)
        sink.write_buckets(buckets)
        sink.close()
        pub = Collector(broker)
        pub.publish("agg/site/home/1d", encode(buckets[-1]), retain=True)
        pub.close()
        yield Stack(f"http://127.0.0.1:{port}", broker, db, work, api, cfg)
    finally:
        for p in procs:
            p.kill()
        broker.stop()
