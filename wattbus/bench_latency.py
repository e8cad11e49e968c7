"""``wattbus bench latency``: how long a reading takes from its publish to ``/metrics`` and to the store.

A private broker, a real exporter and a real store (SQLite) as ``wattbus run`` processes; ``--devices``
simulated meters publish one reading a second each, every value unique, for ``--seconds``. One thread
scrapes ``/metrics`` back to back and notes when each reading's value shows up; another polls the store for
the newest timestamp per device. Printed: p50, p99 and the worst of both latencies, and how many readings
never showed up. Never asserted by a test (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

METRICS_TARGET_MS, STORE_TARGET_MS = 20.0, 1500.0
_SAMPLE = re.compile(r'^wattbus_voltage_volts\{[^}]*device="(b\d+)"[^}]*\} ([0-9.e+-]+)$', re.M)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args(argv)
    if not 1 <= args.devices <= 2000:
        ap.error("--devices must be 1..2000")
    from bus import envelope
    from bus.config import MqttConfig
    from bus.mqtt import BusClient
    from producers.hhpc.bench import _wait_log
    from wattbus.broker import Broker, free_port, wait_port
    from wattbus.progress import Progress

    work = Path(tempfile.mkdtemp(prefix="wattbus-latency-"))
    broker = Broker(work / "mosquitto").start()
    port, db = free_port(), work / "latency.db"
    cfg = work / "wattbus.toml"
    cfg.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n\n'
                   f'[consumer.exporter]\ntype = "exporter"\nlisten = "127.0.0.1"\nport = {port}\n\n'
                   f'[consumer.store]\ntype = "store"\nsink = "sqlite:///{db}"\n')
    procs = [subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(cfg), "run", name],
                              stdout=open(work / f"{name}.log", "wb"), stderr=subprocess.STDOUT)
             for name in ("exporter", "store")]
    sent: dict[tuple[str, int], float] = {}  # (device, seq) -> publish time
    on_metrics: dict[tuple[str, int], float] = {}
    in_store: dict[tuple[str, int], float] = {}
    stop = threading.Event()
    try:
        wait_port(port, timeout=30)
        for name, proc in zip(("exporter", "store"), procs):  # a reading sent before a subscription is lost
            _wait_log(work / f"{name}.log", "subscribed to", proc)
        pub = BusClient(MqttConfig(port=broker.port), "bench-latency-pub", session_expiry=0)
        pub.start()
        pub.wait_connected(10)
        devices = [f"b{i}" for i in range(args.devices)]
        t0 = time.time()
        t0_ms = int(t0 * 1000)

        def value(seq: int) -> float:
            return round(200.0 + seq * 0.001, 3)

        def scrape() -> None:
            url = f"http://127.0.0.1:{port}/metrics"
            while not stop.is_set():
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                now = time.time()
                for device, v in _SAMPLE.findall(text):
                    seq = int(round((float(v) - 200.0) * 1000))
                    on_metrics.setdefault((device, seq), now)

        def poll_store() -> None:
            while not stop.is_set():
                time.sleep(0.02)
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
                        rows = c.execute("SELECT device, ts FROM readings WHERE ts >= ?", (t0_ms,)).fetchall()
                except sqlite3.Error:
                    continue
                now = time.time()
                for device, ts in rows:
                    in_store.setdefault((device, round((ts - t0_ms) / 1000)), now)

        threads = [threading.Thread(target=f, daemon=True) for f in (scrape, poll_store)]
        for t in threads:
            t.start()
        total = int(args.seconds)
        with Progress(f"{args.devices} devices x 1 reading/s", unit="s") as bar:
            for second in range(total):
                tick = t0 + second
                for i, device in enumerate(devices):
                    at = tick + i / len(devices)  # spread over the second, like independent meters
                    if (wait := at - time.time()) > 0:
                        time.sleep(wait)
                    ts = t0_ms + second * 1000  # the store's key: one reading per device and second
                    pub.publish(f"sim/{device}/reading",
                                envelope.encode_reading("sim", device, ts, {"voltage_v": value(second)},
                                                        seq=second + 1))
                    sent[(device, second)] = time.time()
                bar.update(second + 1, total)
        deadline = time.monotonic() + 10  # a loaded machine commits late; late is measured, not lost
        while len(in_store) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # one more scrape
        stop.set()
        pub.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
    m = [(on_metrics[k] - t) * 1000 for k, t in sent.items() if k in on_metrics]
    s = [(in_store[k] - t) * 1000 for k, t in sent.items() if k in in_store]
    print(f"\n{len(sent):,} readings from {args.devices} devices at 1 reading/s each, over {total} s")
    print(f"{'path':28}{'seen':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'target p99':>12}")
    for name, got, target in (("publish -> /metrics", m, METRICS_TARGET_MS),
                              ("publish -> store committed", s, STORE_TARGET_MS)):
        print(f"{name:28}{len(got):>8,}{_pct(got, 0.5):9.1f}{_pct(got, 0.99):9.1f}"
              f"{max(got, default=float('nan')):9.1f}{target:>10.0f} ms")
    print("a value a scrape never caught (overwritten by the next within one scrape) counts as not seen")
    return 0
