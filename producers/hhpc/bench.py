"""``wattbus bench replay`` (the hhpc bench): a generated year through a real broker into a store.

Pushes a whole generated year of the household dataset through a private Mosquitto into a store at QoS 1, as
real ``wattbus run`` processes, then the naive way (one publish and one INSERT + commit per reading) on a
sample, and prints for both:

- ``readings``: distinct readings in the sink (one per dataset minute that exists);
- ``lost``: readings the producer sent that the sink lacks (expected - distinct);
- ``handled twice``: readings the store handled more than once (broker redeliveries: double work the
  idempotent sink absorbed), from the store's own ``readings_handled`` counter in its health document;
- ``stored twice``: rows the sink holds beyond one per reading (a primary key keeps this at 0 on SQL sinks;
  it is measured, not assumed, so a sink without one shows it).

and a third row, ``ceiling``: the store's own work with nothing in between, in one process. The messages the
producer sends (the same batches, made by the same encoder beforehand: in the pipeline the producer runs in
its own process, on the other core) are decoded and validated by the consumer's own code and written to the
same kind of sink in the store's batch size. The batched path's share of it is what the broker, the two
processes and acknowledgements cost.

It drives whole processes and a broker, so it uses the CLI's broker launcher: a development tool, not part of
the producer's runtime.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

HEALTH_WAIT_S = 40.0
"""A process publishes its health every 30 s: how long to wait for one that covers the whole replay."""
TZ = ZoneInfo("Europe/Brussels")


@dataclass
class Result:
    expected: int
    distinct: int
    rows: int
    handled: int | None
    seconds: float

    @property
    def lost(self) -> int:
        return self.expected - self.distinct

    @property
    def handled_twice(self) -> int | None:
        return None if self.handled is None else max(0, self.handled - self.distinct)

    @property
    def stored_twice(self) -> int:
        return self.rows - self.distinct

    @property
    def rate(self) -> float:
        return self.distinct / self.seconds if self.seconds else 0.0


def expected_readings(dataset: Path) -> int:
    """Readings a replay of ``dataset`` publishes: every row whose local time exists."""
    from producers.hhpc.player import replay_items

    return sum(1 for _ in replay_items(dataset, TZ))


def bench(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="hhpc file (default: generate the 2024 year)")
    ap.add_argument("--sink", help="sink URL (default: a fresh SQLite file)")
    ap.add_argument("--naive", type=int, default=5000, help="readings in the naive sample")
    ap.add_argument("--batch", type=int, default=2000, help="readings per message on the fast path")
    args = ap.parse_args(argv)
    from wattbus.broker import Broker
    from wattbus.progress import Progress

    work = Path(tempfile.mkdtemp(prefix="wattbus-bench-"))
    dataset = Path(args.dataset) if args.dataset else work / "hhpc-2024.txt"
    if not args.dataset:
        from producers.hhpc.generate import generate_year

        with Progress("generating 2024", unit="rows") as bar:
            generate_year(2024, dataset, seed=1, progress=bar.update)
    expected = expected_readings(dataset)
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
        naive_sink = (args.sink + ("&" if "?" in args.sink else "?") + "bench=naive") if args.sink and \
            not args.sink.startswith("sqlite") else f"sqlite:///{work}/naive.db"
        naive = _run(work, broker, "naive", naive_set, naive_sink, expected_readings(naive_set), batch=1,
                     store_batch=1)
        ceiling_sink = (args.sink + ("&" if "?" in args.sink else "?") + "bench=ceiling") if args.sink and \
            not args.sink.startswith("sqlite") else f"sqlite:///{work}/ceiling.db"
        ceiling = _ceiling(dataset, ceiling_sink, expected, batch=args.batch, store_batch=20_000)
    finally:
        broker.stop()
    print()
    print(f"{'path':<8}{'readings':>10}{'seconds':>10}{'readings/s':>13}{'lost':>7}{'handled twice':>15}"
          f"{'stored twice':>14}")
    for name, r in (("batched", fast), ("naive", naive), ("ceiling", ceiling)):
        twice = "n/a" if r.handled_twice is None else f"{r.handled_twice:,}"
        print(f"{name:<8}{r.distinct:>10,}{r.seconds:>10.2f}{r.rate:>13,.0f}{r.lost:>7,}{twice:>15}"
              f"{r.stored_twice:>14,}")
    print(f"speed-up: {fast.rate / naive.rate:.1f}x; batched at {fast.rate / ceiling.rate:.0%} of the ceiling  "
          f"(targets: >= 100,000 readings/s, >= 10x naive, >= 90 % of the ceiling)")
    print("handled twice = redelivered readings the store wrote again (idempotent: no extra row); "
          "stored twice = extra rows")
    return 0 if fast.lost == 0 and fast.stored_twice == 0 else 1


def _ceiling(dataset: Path, sink_url: str, expected: int, *, batch: int, store_batch: int) -> Result:
    """The store's path alone: the producer's messages decoded, validated and written, no broker."""
    from bus import envelope
    from bus.config import ReadingsConfig
    from bus.sinks.base import open_sink
    from producers.hhpc.player import reading, replay_items
    from wattbus.progress import Progress

    payloads: list[tuple[int, bytes]] = []
    chunk: list[dict] = []
    seq = 0
    for ts, metrics in replay_items(dataset, TZ):
        seq += 1
        chunk.append({**reading(ts, metrics, 60.0), "seq": seq})
        if len(chunk) == batch:
            payloads += [(len(chunk), p) for p in envelope.encode_batches("hhpc", "benchceiling", chunk, 250_000)]
            chunk = []
    if chunk:
        payloads += [(len(chunk), p) for p in envelope.encode_batches("hhpc", "benchceiling", chunk, 250_000)]
    limits = ReadingsConfig().limits()
    sink = open_sink(sink_url)
    sink.ensure_schema()
    done = 0
    with Progress("ceiling: decoding and writing", unit="readings") as bar:
        t0 = time.monotonic()
        i = 0
        while i < len(payloads):
            readings: list = []
            now = int(time.time() * 1000)
            while i < len(payloads) and len(readings) < store_batch:
                readings += envelope.decode_checked(payloads[i][1], limits, now).readings
                i += 1
            sink.write(readings)
            done += len(readings)
            bar.update(done, expected)
        rows = sink.count("hhpc", "benchceiling")
        while rows < expected and time.monotonic() - t0 < 120:  # until visible, as the batched path counts
            time.sleep(0.1)
            rows = sink.count("hhpc", "benchceiling")
        seconds = time.monotonic() - t0
    sink.close()
    return Result(expected, rows, rows, None, seconds)


def _run(work: Path, broker, label: str, dataset: Path, sink_url: str, expected: int, *,
         batch: int, store_batch: int, copies: int = 1) -> Result:
    """Replay ``dataset`` into ``copies`` store processes (more than one: a ``$share`` group, each copy its
    own ``--instance``); ``handled`` is read from the store's health only for a single copy."""
    from bus import topics
    from bus.sinks.base import open_sink
    from wattbus.progress import Progress

    store_name, producer_name = f"store{label}", f"bench{label}"
    cfg = work / f"{label}.toml"
    cfg.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}

[log]
level = "info"

[producer.{producer_name}]
type = "hhpc"
dataset = "{dataset}"
mode = "replay"
batch = {batch}

[consumer.{store_name}]
type = "store"
sink = "{sink_url}"
batch_max = {store_batch}
batch_wait = {0.05 if store_batch > 1 else 0}
{f'group = "{label}"' if copies > 1 else ""}
""")

    def log(name: str, instance: str = "") -> Path:
        return work / f"{name}{'-' + instance if instance else ''}.log"

    def start(name: str, instance: str = "") -> subprocess.Popen:
        extra = ["--instance", instance] if instance else []
        return subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(cfg), "run", name, *extra],
                                stdout=open(log(name, instance), "ab"), stderr=subprocess.STDOUT)

    health = _HealthWatch(broker.port, topics.process_health(store_name)) if copies == 1 else None
    sink = open_sink(sink_url)
    stores = []
    for k in range(copies):
        instance = str(k + 1) if copies > 1 else ""
        stores.append(start(store_name, instance))
        _wait_log(log(store_name, instance), "subscribed to", stores[-1])  # its subscription must exist first
    store = stores[0]
    t0 = time.monotonic()
    producer = start(producer_name)
    done = 0
    with Progress(f"{label}: replaying", unit="readings") as bar:
        while done < expected:
            time.sleep(0.1)
            try:
                sink.ensure_schema()
                done = sink.count("hhpc", producer_name)
            except Exception:
                done = 0
            bar.update(done, expected)
            if any(s.poll() is not None for s in stores) or time.monotonic() - t0 > 1800:
                break
    seconds = time.monotonic() - t0
    rows = sink.count("hhpc", producer_name)
    distinct = len({r.ts for r in sink.read("hhpc", producer_name, 0, 2**53)})
    handled = None
    if health is not None:
        handled = health.wait_for(distinct, HEALTH_WAIT_S if store.poll() is None else 0)
        health.close()
    for p in (producer, *stores):
        p.send_signal(signal.SIGTERM)
    for p in (producer, *stores):
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
    sink.close()
    return Result(expected, distinct, rows, handled, seconds)


class _HealthWatch:
    """The store's ``readings_handled`` counter, from its retained health document."""

    def __init__(self, port: int, topic: str) -> None:
        from bus.config import MqttConfig
        from bus.mqtt import BusClient

        self.handled: int | None = None
        self._changed = threading.Condition()
        self.client = BusClient(MqttConfig(port=port), f"bench-health-{os.getpid()}-{topic.split('/')[1]}",
                                session_expiry=0)
        self.client.subscribe(topic, self._on_health)
        self.client.start()

    def _on_health(self, msg) -> None:
        try:
            value = orjson.loads(msg.payload)["counters"].get("readings_handled", 0)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        with self._changed:
            self.handled = int(value)
            self._changed.notify_all()

    def wait_for(self, at_least: int, timeout: float) -> int | None:
        """The counter once it covers ``at_least`` readings (None if no such health came in time)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.handled is None or self.handled < at_least:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
            return self.handled

    def close(self) -> None:
        self.client.close(offline=False)


def _wait_log(log: Path, text: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: the store did not subscribe; see {log}")
        time.sleep(0.05)
