"""``wattbus bench scale``: 1, 2 and 3 copies of the store in one ``$share`` group, readings/s for each.

The same replay as ``wattbus bench replay`` (a slice of the generated year, QoS 1, a private broker) into
``copies`` store processes that share one subscription group, so the broker hands each message to one of
them. Printed per round: readings/s, lost, stored twice. Against MariaDB (``--sink mysql://...``) the copies
write in parallel; SQLite (the default) has one writer at a time, so it shows what a shared group costs
when the database cannot go wider.

The aggregate consumer scales by device, not by message: a bucket needs all of its device's readings, so
its copies are keyed by device (each copy subscribes to its own devices' topics, device j to copy j mod n)
instead of sharing one ``$share`` group. The aggregate rounds replay ``--agg-devices`` devices into 1, 2
and 3 such copies and print readings/s and the buckets that differ from the single copy's (target: none).
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date, timedelta
from pathlib import Path

from producers.hhpc.bench import _wait_log


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sink", help="sink URL (default: a fresh SQLite file per round)")
    ap.add_argument("--readings", type=int, default=200_000, help="readings per round (default 200,000)")
    ap.add_argument("--batch", type=int, default=500, help="readings per message (default 500)")
    ap.add_argument("--copies", default="1,2,3", help="store copies per round (default 1,2,3)")
    ap.add_argument("--agg-devices", type=int, default=6,
                    help="devices of the aggregate rounds, split by device over the copies (0 skips them)")
    args = ap.parse_args(argv)
    if not 0 <= args.agg_devices <= 24:
        ap.error("--agg-devices must be 0..24")
    from producers.hhpc.bench import _run, expected_readings
    from producers.hhpc.generate import generate_year
    from wattbus.broker import Broker
    from wattbus.progress import Progress

    rounds = [int(n) for n in args.copies.split(",")]
    if not 1_000 <= args.readings <= 520_000:
        ap.error("--readings must be 1000..520000 (days of the generated 2024)")
    work = Path(tempfile.mkdtemp(prefix="wattbus-scale-"))
    dataset = work / "hhpc-2024-part.txt"
    first = date(2024, 1, 1)
    with Progress("generating the dataset", unit="rows") as bar:
        generate_year(2024, dataset, seed=1, progress=bar.update, start=first,
                      end=first + timedelta(days=-(-args.readings // 1440)))
    expected = expected_readings(dataset)
    broker = Broker(work / "mosquitto").start()
    results = []
    try:
        for n in rounds:
            label = f"scale{n}"
            sink = (args.sink + ("&" if "?" in args.sink else "?") + f"bench={label}") if args.sink and \
                not args.sink.startswith("sqlite") else f"sqlite:///{work}/{label}.db"
            results.append((n, _run(work, broker, label, dataset, sink, expected, batch=args.batch,
                                    store_batch=20_000, copies=n)))
        agg = [] if not args.agg_devices else _aggregate_rounds(work, broker, dataset, expected, rounds,
                                                                args.agg_devices, args.batch)
    finally:
        broker.stop()
    print(f"\n{expected:,} readings per round, {args.batch} per message, sink {args.sink or 'sqlite (per round)'}")
    print(f"{'copies':>6}{'readings/s':>13}{'vs 1 copy':>11}{'lost':>7}{'stored twice':>14}")
    base = results[0][1].rate if results else 0
    for n, r in results:
        print(f"{n:>6}{r.rate:>13,.0f}{r.rate / base if base else 0:>10.2f}x{r.lost:>7,}{r.stored_twice:>14,}")
    if agg:
        print(f"\naggregate: {args.agg_devices} devices x {expected:,} readings, copies keyed by device "
              f"(device j -> copy j mod n), SQLite rollups")
        print(f"{'copies':>6}{'readings/s':>13}{'vs 1 copy':>11}{'lost':>7}{'buckets unlike 1 copy':>23}")
        for n, rate, lost, unlike in agg:
            print(f"{n:>6}{rate:>13,.0f}{rate / agg[0][1]:>10.2f}x{lost:>7,}{unlike:>23,}")
    ok = all(r.lost == 0 and r.stored_twice == 0 for _, r in results)
    return 0 if ok and all(lost == 0 and unlike == 0 for _, _, lost, unlike in agg) else 1


def _aggregate_rounds(work: Path, broker, dataset: Path, per_device: int, rounds: list[int], devices: int,
                      batch: int) -> list[tuple[int, float, int, int]]:
    """(copies, readings/s, readings missing from the year buckets, 1d/1mo buckets unlike the first round's)."""
    import signal
    import subprocess
    import sys
    import time

    from bus.sinks.base import open_sink
    from wattbus.progress import Progress

    names = [f"aggdev{j}" for j in range(devices)]
    (work / "agg-producers.toml").write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n' + "".join(
        f'\n[producer.{d}]\ntype = "hhpc"\ndataset = "{dataset}"\nmode = "replay"\nbatch = {batch}\n'
        for d in names))
    out, first = [], None
    for n in rounds:
        db = work / f"agg{n}.db"
        cfg = work / f"agg{n}.toml"  # its own file: the producers' numpy stays out of the copies
        cfg.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n' + "".join(
            f'\n[consumer.agg{n}c{k}]\ntype = "aggregate"\nsink = "sqlite:///{db}"\n'
            f'topics = {[f"hhpc/{d}/reading" for j, d in enumerate(names) if j % n == k]!r}\n'.replace("'", '"')
            for k in range(n)))

        def start(config: Path, name: str) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(config), "run", name],
                                    stdout=open(work / f"{name}.log", "ab"), stderr=subprocess.STDOUT)

        copies = [start(cfg, f"agg{n}c{k}") for k in range(n)]
        for k, p in enumerate(copies):
            _wait_log(work / f"agg{n}c{k}.log", "subscribed to", p)
        t0 = time.monotonic()
        producers = [start(work / "agg-producers.toml", d) for d in names]
        sink = open_sink(f"sqlite:///{db}")
        total, done = per_device * devices, 0
        with Progress(f"aggregate, {n} cop{'y' if n == 1 else 'ies'}", unit="readings") as bar:
            while done < total and all(p.poll() is None for p in copies) and time.monotonic() - t0 < 1800:
                time.sleep(0.2)
                try:
                    sink.ensure_schema()
                    done = sum(b.readings for d in names for b in sink.read_buckets("hhpc", d, "1y", 0, 2**62))
                except Exception:
                    done = 0
                bar.update(done, total)
        seconds = time.monotonic() - t0
        buckets = {(d, period, b.start): (b.readings, round(b.energy_import_wh or 0, 3), b.coverage)
                   for d in names for period in ("1d", "1mo")
                   for b in sink.read_buckets("hhpc", d, period, 0, 2**62)}
        sink.close()
        for p in (*producers, *copies):
            p.send_signal(signal.SIGTERM)
        for p in (*producers, *copies):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        first = buckets if first is None else first
        unlike = sum(1 for k in first.keys() | buckets.keys() if first.get(k) != buckets.get(k))
        out.append((n, done / seconds, total - done, unlike))
    return out
