"""``wattbus bench replay|adc``: measured figures, printed (never asserted by a test).

``replay`` pushes a whole generated year of the household dataset through a private Mosquitto into a
store at QoS 1, as real processes, then does the same the naive way (one publish and one INSERT + commit
per reading) on a sample, and prints readings/s for both, the ratio, and lost/duplicated counts.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wattbus.broker import Broker
from wattbus.progress import Progress


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("replay", "adc", "aggregate"):
        print("usage: wattbus bench replay [--sink URL] [--dataset FILE] [--naive N] | wattbus bench adc | "
              "wattbus bench aggregate", file=sys.stderr)
        return 2
    if argv[0] == "adc":
        return importlib.import_module("producers.adc.bench").bench(argv[1:])
    if argv[0] == "aggregate":
        return importlib.import_module("consumers.aggregate.bench").main(argv[1:])
    return replay(argv[1:])


def replay(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench replay")
    ap.add_argument("--dataset", help="hhpc file (default: generate the 2024 year)")
    ap.add_argument("--sink", help="sink URL (default: a fresh SQLite file)")
    ap.add_argument("--naive", type=int, default=5000, help="readings in the naive sample")
    ap.add_argument("--batch", type=int, default=2000, help="readings per message on the fast path")
    args = ap.parse_args(argv)

    from producers.hhpc.dataset import iter_epochs, iter_rows

    work = Path(tempfile.mkdtemp(prefix="wattbus-bench-"))
    dataset = Path(args.dataset) if args.dataset else work / "hhpc-2024.txt"
    if not args.dataset:
        from producers.hhpc.generate import generate_year

        with Progress("generating 2024", unit="rows") as bar:
            generate_year(2024, dataset, seed=1, progress=bar.update)
    from zoneinfo import ZoneInfo

    expected = sum(1 for _ in iter_epochs(iter_rows(dataset), ZoneInfo("Europe/Brussels")))
    broker = Broker(work / "mosquitto").start()
    print(f"broker: mosquitto on 127.0.0.1:{broker.port} (project config); dataset {dataset}: "
          f"{expected:,} readings")
    try:
        fast_sink = args.sink or f"sqlite:///{work}/fast.db"
        fast = _run(work, broker, "fast", dataset, fast_sink, expected, batch=args.batch, store_batch=20_000)
        naive_set = work / "naive.txt"
        with open(dataset) as src, open(naive_set, "w") as dst:
            for i, line in enumerate(src):
                if i > args.naive:
                    break
                dst.write(line)
        naive_expected = sum(1 for _ in iter_epochs(iter_rows(naive_set), ZoneInfo("Europe/Brussels")))
        naive_sink = (args.sink + ("&" if "?" in args.sink else "?") + "bench=naive") if args.sink and \
            not args.sink.startswith("sqlite") else f"sqlite:///{work}/naive.db"
        naive = _run(work, broker, "naive", naive_set, naive_sink, naive_expected, batch=1, store_batch=1)
    finally:
        broker.stop()
    print()
    print(f"{'path':<8}{'readings':>10}{'seconds':>10}{'readings/s':>13}{'lost':>7}{'dup':>6}")
    for name, r in (("batched", fast), ("naive", naive)):
        print(f"{name:<8}{r['n']:>10,}{r['seconds']:>10.2f}{r['rate']:>13,.0f}{r['lost']:>7}{r['dup']:>6}")
    print(f"speed-up: {fast['rate'] / naive['rate']:.1f}x  (targets: >= 50,000 readings/s, >= 10x naive)")
    return 0 if fast["lost"] == 0 and fast["dup"] == 0 else 1


def _run(work: Path, broker: Broker, label: str, dataset: Path, sink_url: str, expected: int, *,
         batch: int, store_batch: int) -> dict:
    from bus.sinks.base import open_sink

    cfg = work / f"{label}.toml"
    cfg.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}

[log]
level = "info"

[producer.bench{label}]
type = "hhpc"
dataset = "{dataset}"
mode = "replay"
batch = {batch}

[consumer.store{label}]
type = "store"
sink = "{sink_url}"
batch_max = {store_batch}
batch_wait = {0.05 if store_batch > 1 else 0}
""")
    env = dict(os.environ)

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(cfg), "run", name],
                                stdout=open(work / f"{name}.log", "ab"), stderr=subprocess.STDOUT, env=env)

    sink = open_sink(sink_url)
    store = start(f"store{label}")
    _wait_log(work / f"store{label}.log", "subscribed to", store)  # its subscription must exist first
    t0 = time.monotonic()
    producer = start(f"bench{label}")
    done = 0
    with Progress(f"{label}: replaying", unit="readings") as bar:
        while done < expected:
            time.sleep(0.25)
            try:
                sink.ensure_schema()
                done = sink.count("hhpc", f"bench{label}")
            except Exception:
                done = 0
            bar.update(done, expected)
            if store.poll() is not None:
                break
            if time.monotonic() - t0 > 1800:
                break
    seconds = time.monotonic() - t0
    for p in (producer, store):
        p.send_signal(signal.SIGTERM)
    for p in (producer, store):
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
    stored = sink.count("hhpc", f"bench{label}")
    distinct = len({r.ts for r in sink.read("hhpc", f"bench{label}", 0, 2**53)})
    sink.close()
    return {"n": stored, "seconds": seconds, "rate": stored / seconds, "lost": expected - distinct,
            "dup": stored - distinct}


def _wait_log(log: Path, text: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: the store did not subscribe; see {log}")
        time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
