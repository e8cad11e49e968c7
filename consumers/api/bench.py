"""``wattbus bench api``: route latencies with the store holding a generated year, and the process's RSS.

A private Mosquitto, a store and the api run as real processes; the year of the household dataset is replayed
into the store, a year of ``1d`` buckets is written as the aggregate consumer would, then each route is asked
N times in a row and p50/p99 printed beside the ceiling (the same sink read in-process, no HTTP). Printed,
never asserted.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

TZ = ZoneInfo("Europe/Brussels")
DEVICE = "benchhouse"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench api")
    ap.add_argument("--dataset", help="hhpc file (default: generate the 2024 year)")
    ap.add_argument("-n", type=int, default=200, help="requests per route")
    args = ap.parse_args(argv)

    from bus.rollup import Bucket
    from bus.sinks import open_sink
    from wattbus.broker import Broker, free_port, wait_port

    work = Path(tempfile.mkdtemp(prefix="wattbus-bench-api-"))
    dataset = Path(args.dataset) if args.dataset else work / "hhpc-2024.txt"
    if not args.dataset:
        from producers.hhpc.generate import generate_year
        from wattbus.progress import Progress

        with Progress("generating 2024", unit="rows") as bar:
            generate_year(2024, dataset, seed=1, progress=bar.update)
    broker = Broker(work / "mosquitto").start()
    db, port = work / "w.db", free_port()
    cfg = work / "wattbus.toml"
    cfg.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}

[producer.{DEVICE}]
type = "hhpc"
dataset = "{dataset}"
mode = "replay"
batch = 2000

[consumer.store]
type = "store"
sink = "sqlite:///{db}"

[consumer.api]
type = "api"
listen = "127.0.0.1"
port = {port}
""")
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str) -> None:
        procs[name] = subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(cfg), "run", name],
                                       stdout=open(work / f"{name}.log", "ab"), stderr=subprocess.STDOUT)

    try:
        start("store")
        start("api")
        wait_port(port, timeout=30)
        time.sleep(1.0)
        start(DEVICE)
        sink = open_sink(f"sqlite:///{db}")
        sink.ensure_schema()
        t0 = time.monotonic()
        while (n := sink.count("hhpc", DEVICE)) < 520_000 and time.monotonic() - t0 < 900:
            time.sleep(1.0)
            print(f"\rreplaying the year into the store: {n:,} readings", end="", file=sys.stderr)
        print(file=sys.stderr)
        buckets = []
        d = date(2024, 1, 1)
        while d.year == 2024:
            start_ms = int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp() * 1000)
            nd = d + timedelta(days=1)
            end_ms = int(datetime(nd.year, nd.month, nd.day, tzinfo=TZ).timestamp() * 1000)
            buckets.append(Bucket(source="hhpc", device=DEVICE, period="1d", start=start_ms, end=end_ms,
                                  label=f"{d.isoformat()}T00:00", status="complete", coverage=1.0, readings=1440,
                                  energy_import_wh=10_000.0))
            d = nd
        sink.write_buckets(buckets)
        base = f"http://127.0.0.1:{port}/api/v1"
        routes = [
            ("latest value", f"/devices/hhpc/{DEVICE}/latest", None),
            ("a year of 1d buckets", f"/energy/1d?source=hhpc&device={DEVICE}&from=2024-01-01&to=2025-01-01",
             lambda: sink.read_buckets("hhpc", DEVICE, "1d", buckets[0].start, buckets[-1].end)),
            ("a day of raw readings", f"/devices/hhpc/{DEVICE}/readings?from=2024-06-01&to=2024-06-02",
             lambda: list(sink.read("hhpc", DEVICE, _ms(2024, 6, 1), _ms(2024, 6, 2)))),
            ("a year downsampled to 1d", f"/devices/hhpc/{DEVICE}/readings?from=2024-01-01&to=2025-01-01&step=1d",
             lambda: sink.read_downsampled("hhpc", DEVICE, _ms(2024, 1, 1), _ms(2025, 1, 1), 86_400_000)),
            ("gethpc", "/gethpc", None),
        ]
        print(f"\nstore: {sink.count('hhpc', DEVICE):,} readings, {len(buckets)} daily buckets; {args.n} requests "
              "per route, one at a time (keep-alive)\n")
        print(f"{'route':<28}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>10}{'ceiling p50 ms':>16}")
        with httpx.Client(base_url=base, timeout=30) as client:
            for label, path, ceiling in routes:
                r = client.get(path)
                size = len(r.content) if r.status_code == 200 else f"HTTP {r.status_code}"
                p50, p99 = _timed(lambda: client.get(path), args.n)
                c50 = f"{_timed(ceiling, args.n)[0]:.2f}" if ceiling else "-"
                print(f"{label:<28}{p50:>9.2f}{p99:>9.2f}{size:>10}{c50:>16}")
        rss = _rss_mb(procs["api"].pid)
        print(f"\napi process RSS: {rss:.1f} MB (target <= 45 MB); logs in {work}")
        sink.close()
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
    return 0


def _ms(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=TZ).timestamp() * 1000)


def _timed(fn, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    q = statistics.quantiles(times, n=100)
    return statistics.median(times), q[98]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

