"""``wattbus bench aggregate``: the 2024 year through the aggregate consumer; figures printed, never asserted.

Four measurements in one run:

- **replay**: the hhpc producer replays the year flat out through a private Mosquitto (the project's config)
  into an aggregate consumer process (SQLite rollups), as real processes at QoS 1: readings/s from the first
  reading to the year bucket counting the last one, and the consumer's peak RSS;
- **paced**: January at a few thousand readings/s, which the consumer keeps up with: its own footprint;
- **naive**: the same on a sample with one reading per message and per handler call (no batching);
- **ceiling**: the same engine in this process, readings handed over directly (no broker, no decode);
- **recompute**: a whole year rebuilt from the store: the raw readings in a SQLite ``readings`` table read
  back and aggregated into a fresh rollups table, in seconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

TZ = "Europe/Brussels"
DEVICE = "benchagg"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench aggregate", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", help="hhpc file (default: generate the 2024 year)")
    ap.add_argument("--naive", type=int, default=3000, help="readings in the naive sample")
    ap.add_argument("--batch", type=int, default=1000, help="readings per message on the replay")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases)")
    ap.add_argument("--paced-speed", type=float, default=300_000.0,
                    help="dataset time per real time of the paced replay of January (its RSS is the "
                         "consumer's own: the broker never far ahead of it); 0 skips it")
    args = ap.parse_args(argv)

    from wattbus.broker import Broker
    from wattbus.progress import Progress

    work = Path(tempfile.mkdtemp(prefix="wattbus-bench-agg-"))
    dataset = Path(args.dataset) if args.dataset else work / "hhpc-2024.txt"
    if not args.dataset:
        from producers.hhpc.generate import generate_year

        with Progress("generating 2024", unit="rows") as bar:
            generate_year(2024, dataset, seed=1, progress=bar.update)
    total = sum(1 for _ in _readings(dataset))
    print(f"dataset {dataset}: {total:,} readings")

    ceiling = _ceiling(work, dataset)
    recompute = _recompute(work, dataset)
    broker = Broker(work / "mosquitto").start()
    print(f"broker: mosquitto on 127.0.0.1:{broker.port} (project config)")
    try:
        fast = _replay(work, broker, "fast", dataset, total, batch=args.batch, batch_max=10_000)
        paced = None
        if args.paced_speed:
            month = _head(dataset, work / "paced.txt", 31 * 1440)
            paced = _replay(work, broker, "paced", month, sum(1 for _ in _readings(month)), batch=args.batch,
                            batch_max=10_000, speed=args.paced_speed)
        sample = _head(dataset, work / "naive.txt", args.naive)
        naive = _replay(work, broker, "naive", sample, sum(1 for _ in _readings(sample)), batch=1,
                        batch_max=1)
    finally:
        broker.stop()
    print()
    print(f"{'path':<28}{'readings':>10}{'seconds':>10}{'readings/s':>13}{'peak RSS MB':>13}"
          f"{'RSS after MB':>14}")
    rows = [("replay (broker, batched)", fast), ("naive (1 per message)", naive),
            ("ceiling (in process)", ceiling)]
    if paced:
        rows.insert(1, ("paced (January)", paced))
    for name, r in rows:
        rss = f"{r['rss_mb']:.1f}" if r.get("rss_mb") else "-"
        after = f"{r['settled_mb']:.1f}" if r.get("settled_mb") else "-"
        print(f"{name:<28}{r['n']:>10,}{r['seconds']:>10.2f}{r['rate']:>13,.0f}{rss:>13}{after:>14}")
    print(f"recompute a whole year from the store: {recompute['seconds']:.2f} s "
          f"({recompute['n']:,} readings read back and aggregated, {recompute['buckets']:,} buckets)")
    print(f"replay / ceiling: {fast['rate'] / ceiling['rate']:.0%}; replay / naive: "
          f"{fast['rate'] / naive['rate']:.1f}x  (targets: >= 100,000 readings/s, <= 45 MB RSS)")
    if args.keep:
        print(f"work folder: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if fast["complete"] else 1


def _readings(dataset: Path):
    """The dataset's readings as the hhpc producer publishes them (streamed: a year never sits in memory)."""
    from bus.envelope import Reading
    from producers.hhpc.dataset import iter_rows
    from producers.hhpc.localtime import iter_epochs

    for seq, (ts, row) in enumerate(iter_epochs(iter_rows(dataset), ZoneInfo(TZ)), 1):
        if row.metrics is None:
            yield Reading("hhpc", DEVICE, ts, {}, seq, 60.0, "missing")
        else:
            yield Reading("hhpc", DEVICE, ts, row.metrics, seq, 60.0, "ok")


def _head(dataset: Path, out: Path, rows: int) -> Path:
    """The first ``rows`` rows of the dataset (with its header) as a file of its own."""
    with open(dataset) as src, open(out, "w") as dst:
        for i, line in enumerate(src):
            if i > rows:
                break
            dst.write(line)
    return out


def _chunks(items, n: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _engine(rollups, readings_sink=None):
    import msgspec

    from consumers.aggregate import Config
    from consumers.aggregate.service import build_engine

    cfg = msgspec.convert({"type": "aggregate"}, Config)
    return build_engine(cfg, ZoneInfo(TZ), None, rollups, readings_sink)


def _drive(engine, sink, batches) -> tuple[int, int, float]:
    """Feed batches, writing the changed buckets after each: (readings, buckets written, seconds spent)."""
    n = written = 0
    spent = 0.0
    for batch in batches:
        t0 = time.perf_counter()
        engine.feed(batch)
        pending = engine.pending()
        sink.write_buckets([b for b, _ in pending])
        engine.written()
        spent += time.perf_counter() - t0
        n += len(batch)
        written += len(pending)
    return n, written, spent


def _ceiling(work: Path, dataset: Path) -> dict:
    from bus.sinks.base import open_sink

    sink = open_sink(f"sqlite:///{work}/ceiling.db")
    sink.ensure_schema()
    batches = list(_chunks(_readings(dataset), 5000))  # parsed beforehand: the ceiling is the engine alone
    n, _, seconds = _drive(_engine(sink), sink, batches)
    sink.close()
    return {"n": n, "seconds": seconds, "rate": n / seconds}


def _recompute(work: Path, dataset: Path) -> dict:
    from bus.sinks.base import open_sink

    store = open_sink(f"sqlite:///{work}/store.db")
    store.ensure_schema()
    for chunk in _chunks(_readings(dataset), 20_000):
        store.write(chunk)
    rollups = open_sink(f"sqlite:///{work}/recompute.db")
    rollups.ensure_schema()
    t0 = time.perf_counter()
    n, buckets, _ = _drive(_engine(rollups), rollups, _chunks(store.read("hhpc", DEVICE, 0, 2**62), 5000))
    seconds = time.perf_counter() - t0
    store.close()
    rollups.close()
    return {"n": n, "seconds": seconds, "buckets": buckets}


def _replay(work: Path, broker, label: str, dataset: Path, expected: int, *, batch: int,
            batch_max: int, speed: float = 0.0) -> dict:
    from bus.sinks.base import open_sink
    from wattbus.progress import Progress

    db = work / f"{label}.db"
    head = f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}

[site]
timezone = "{TZ}"
"""
    # Two files: loading a config imports every plugin it names, and the hhpc producer's numpy would then be
    # counted in the aggregate's footprint.
    (work / f"{label}-producer.toml").write_text(head + f"""
[producer.{DEVICE}]
type = "hhpc"
dataset = "{dataset}"
mode = "replay"
batch = {batch}
speed = {speed}
""")
    (work / f"{label}-agg.toml").write_text(head + f"""
[consumer.agg{label}]
type = "aggregate"
sink = "sqlite:///{db}"
batch_max = {batch_max}
batch_wait = {0.05 if batch_max > 1 else 0}
""")

    def start(name: str, cfg: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(work / cfg), "run", name],
                                stdout=open(work / f"{name}.log", "ab"), stderr=subprocess.STDOUT,
                                env=dict(os.environ))

    agg = start(f"agg{label}", f"{label}-agg.toml")
    _wait_log(work / f"agg{label}.log", "subscribed to", agg)
    t0 = time.monotonic()
    producer = start(DEVICE, f"{label}-producer.toml")
    sink = open_sink(f"sqlite:///{db}")
    done, rss = 0, 0.0
    with Progress(f"{label}: replaying", unit="readings") as bar:
        while done < expected and agg.poll() is None and time.monotonic() - t0 < 1800:
            time.sleep(0.2)
            rss = max(rss, _rss_mb(agg.pid))
            try:
                sink.ensure_schema()
                done = sum(b.readings for b in sink.read_buckets("hhpc", DEVICE, "1y", 0, 2**62))
            except Exception:
                done = 0
            bar.update(done, expected)
    seconds = time.monotonic() - t0
    rss = max(rss, _rss_mb(agg.pid))
    time.sleep(2.0)
    settled = _rss_mb(agg.pid, "VmRSS:")
    for p in (producer, agg):
        p.send_signal(signal.SIGTERM)
    for p in (producer, agg):
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
    sink.close()
    return {"n": done, "seconds": seconds, "rate": done / seconds, "rss_mb": rss, "settled_mb": settled,
            "complete": done == expected}


def _rss_mb(pid: int, field: str = "VmHWM:") -> float:
    """Resident set of a running process, MB: its peak (VmHWM) or now (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait_log(log: Path, text: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: the aggregate consumer did not subscribe; see {log}")
        time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
