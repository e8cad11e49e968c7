"""What Mosquitto's persistence writes to the SD card per hour at the demo's rate (a measurement, not a test).

    .venv/bin/python -m tests.delivery.measure_sd_writes [--minutes 5] [--autosave 60] [--store-stopped]

Runs a private Mosquitto from the project's config and the demo's kind of load as real processes: an hhpc
replay at an hour per second in batches of 60 (one 15 kB message a second), two sim meters at 60x, the
store (SQLite) and the exporter, all publishing health every 30 s. Mosquitto's ``write_bytes`` from
``/proc/PID/io`` (bytes that reached the block layer: what wears the card) is sampled before and after,
and the size of its persistence file is printed. ``--store-stopped`` stops the store after the warm-up, so
the broker queues everything for it and each autosave rewrites a growing file: the cost of an outage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from tests.delivery.common import write_dataset
from tests.support.mosquitto import Broker
from tests.support.ports import free_port
from tests.support.processes import WattbusProcess, write_config


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/PID/io")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--autosave", type=int, default=None,
                    help="override autosave_interval (default: the shipped one)")
    ap.add_argument("--store-stopped", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="wattbus-sd-"))
    extra = f"autosave_interval {args.autosave}\n" if args.autosave else ""
    broker = Broker(work / "mosquitto", extra=extra).start()
    dataset = write_dataset(work / "hhpc.txt", datetime(2024, 3, 1), 14 * 1440)
    cfg = write_config(work / "wattbus.toml", broker, f"""
        [producer.replay]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        speed = 3600
        batch = 60
        repeat = true

        [producer.meters]
        type = "sim"
        interval = 300
        speed = 60
        [[producer.meters.meters]]
        serial = "kili"
        daily_kwh = 9.0
        solar_kwp = 4.0
        [[producer.meters.meters]]
        serial = "pico"
        daily_kwh = 6.5

        [consumer.store]
        type = "store"
        sink = "sqlite:///{work / 'store.db'}"

        [consumer.exporter]
        type = "exporter"
        port = {free_port()}
        """)
    procs = {n: WattbusProcess(cfg, n).start() for n in ("store", "exporter", "replay", "meters")}
    try:
        time.sleep(20)  # warm-up: sessions made, first saves done
        if args.store_stopped:
            procs["store"].terminate()
        pid = broker.proc.pid
        w0, t0 = write_bytes(pid), time.monotonic()
        time.sleep(args.minutes * 60)
        w1, t1 = write_bytes(pid), time.monotonic()
        per_hour = (w1 - w0) * 3600 / (t1 - t0)
        db = work / "mosquitto" / "wattbus.db"
        size = db.stat().st_size if db.exists() else 0
        print(f"autosave_interval={args.autosave or 'shipped'} store_stopped={args.store_stopped}: "
              f"mosquitto wrote {w1 - w0:,} bytes in {t1 - t0:.0f} s = {per_hour / 1e6:.1f} MB/hour "
              f"({per_hour * 24 / 1e9:.2f} GB/day); persistence file now {size:,} "
              f"bytes", flush=True)
    finally:
        for p in procs.values():
            if p.alive():
                p.terminate()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
