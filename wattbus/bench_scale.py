"""``wattbus bench scale``: 1, 2 and 3 copies of the store in one ``$share`` group, readings/s for each.

The same replay as ``wattbus bench replay`` (a slice of the generated year, QoS 1, a private broker) into
``copies`` store processes that share one subscription group, so the broker hands each message to one of
them. Printed per round: readings/s, lost, stored twice. Against MariaDB (``--sink mysql://...``) the copies
write in parallel; SQLite (the default) has one writer at a time, so it shows what a shared group costs
when the database cannot go wider. The aggregate consumer scales by device, not by message (a bucket needs
all of its device's readings): see docs/scaling.md.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date, timedelta
from pathlib import Path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sink", help="sink URL (default: a fresh SQLite file per round)")
    ap.add_argument("--readings", type=int, default=200_000, help="readings per round (default 200,000)")
    ap.add_argument("--batch", type=int, default=500, help="readings per message (default 500)")
    ap.add_argument("--copies", default="1,2,3", help="store copies per round (default 1,2,3)")
    args = ap.parse_args(argv)
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
    finally:
        broker.stop()
    print(f"\n{expected:,} readings per round, {args.batch} per message, sink {args.sink or 'sqlite (per round)'}")
    print(f"{'copies':>6}{'readings/s':>13}{'vs 1 copy':>11}{'lost':>7}{'stored twice':>14}")
    base = results[0][1].rate if results else 0
    for n, r in results:
        print(f"{n:>6}{r.rate:>13,.0f}{r.rate / base if base else 0:>10.2f}x{r.lost:>7,}{r.stored_twice:>14,}")
    return 0 if all(r.lost == 0 and r.stored_twice == 0 for _, r in results) else 1
