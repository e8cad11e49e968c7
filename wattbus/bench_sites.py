"""``wattbus bench sites``: N simulated sites x M devices bridged into one central broker.

Each site is a Mosquitto of its own (the development config plus the project's ``mosquitto/bridge.conf``,
pointed at the central broker, its TLS and login lines left out, ``home1`` replaced by the site's name),
bridged to one central Mosquitto. A few load-generator processes own a slice of the sites each: one QoS 1
client per site, every device one reading a second, spread over the second, stamped with its publish time.
On the central broker a real ``store`` (SQLite) subscribes across the site prefixes and the bench's own
subscriber records every reading with its latency (receive time - publish time): it counts what was lost
and what arrived twice; the store's rows are the second count. ``--steps 50,200,400`` runs several sizes in
a row to show how far one central broker goes on this machine before latency grows. Printed, never
asserted by a test (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from wattbus.bench_latency import _pct

REPO = Path(__file__).resolve().parents[1]
BRIDGE = REPO / "mosquitto" / "bridge.conf"
CENTRAL_ONLY = ("bridge_cafile", "bridge_insecure", "remote_username", "remote_password")
"""bridge.conf lines a plain loopback central broker (no TLS, anonymous) has no use for."""
GROWN_FACTOR, GROWN_MS, SLOW_MS = 2.0, 1000.0, 100.0
"""Latency has "grown" at a size whose p99 is above twice the smallest size's and above SLOW_MS (a p99 of a
few ms doubles with any noise on a shared machine), or above 1 s. A reading over SLOW_MS counts as slow."""


def site_bridge(central_port: int, site: str) -> str:
    """The project's bridge.conf for ``site``: address set, TLS/login lines dropped, ``home1`` -> site."""
    text = re.sub(rf"(?m)^(?:{'|'.join(CENTRAL_ONLY)})\s.*\n", "", BRIDGE.read_text())
    text, n = re.subn(r"(?m)^address\s+.*$", f"address 127.0.0.1:{central_port}", text)
    if n != 1:
        raise RuntimeError(f"{BRIDGE} must set `address` once")
    return text.replace("home1", site)


def _edge_ports(n: int) -> list[int]:
    """``n`` distinct free ports below the kernel's ephemeral range.

    ``free_port()`` hands out ephemeral ports: with hundreds of brokers, two calls can return the same one,
    or a bridge's outgoing connection can take a port before its broker listens on it ("Address already in
    use", and ``wait_port`` then finds the *other* broker)."""
    import socket

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    for port in range(max(1024, low - 20_000), low):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"fewer than {n} free ports below {low}")


def _generate(sites: list[tuple[int, str, int]], devices: int, seconds: int, t0: float,
              total: int) -> tuple[int, int, float, float]:
    """One load-generator process: a QoS 1 client per site on its edge broker, ``devices`` meters each.

    Device ``site-dJ`` publishes once a second at its own offset within the second (its global index over
    ``total`` devices), so the whole fleet's readings are spread evenly, as independent meters would be.
    ``ts`` is the publish time (ms): the central side's latency is its receive time minus ``ts``. Returns
    (readings sent, not acknowledged by the edge broker, worst lateness against the schedule in ms, CPU
    seconds over the publishing window): a generator that falls behind shows up there, not as latency.
    """
    from bus import envelope
    from bus.config import MqttConfig
    from bus.mqtt import BusClient

    clients = {name: BusClient(MqttConfig(port=port), f"sim-{name}", session_expiry=0)
               for _, name, port in sites}
    for c in clients.values():
        c.start()
    for name, c in clients.items():
        if not c.wait_connected(60):
            raise RuntimeError(f"generator: the edge broker of {name} did not accept a connection")
    slots = sorted(((i * devices + j) / total, name, f"{name}-d{j}")
                   for i, name, _ in sites for j in range(devices))
    infos, late = [], 0.0
    time.sleep(max(0.0, t0 - time.time()))
    cpu0 = time.process_time()
    for second in range(seconds):
        for offset, name, device in slots:
            now = time.time()
            if (wait := t0 + second + offset - now) > 0:
                time.sleep(wait)
                now = time.time()
            else:
                late = max(late, -wait)
            value = round(500 + 400 * ((second + int(offset * 60)) % 60) / 60, 1)  # a plain sawtooth load
            infos.append(clients[name].publish(f"sim/{device}/reading", envelope.encode_reading(
                "sim", device, int(now * 1000), {"power_w": value}, seq=second + 1)))
    cpu = time.process_time() - cpu0
    unacked = 0
    for info in infos:
        try:
            info.wait_for_publish(30)
        except (RuntimeError, ValueError):
            pass
        unacked += not info.is_published()
    for c in clients.values():
        c.close()
    return len(infos), unacked, late * 1000, cpu


@dataclass
class Result:
    sites: int
    devices: int
    sent: int
    unacked: int
    received: int
    lost: int
    duplicated: int
    rate: float
    p50: float
    p99: float
    worst: float
    stored: int
    late_ms: float
    slow: tuple[int, int]
    """(readings over SLOW_MS, seconds of publishing they fall in): a stall, or a latency that stays high."""
    cpu: dict[str, float]
    """CPU % of one core over the publishing window: store, central (mosquitto), edges (all, summed),
    generators (summed), bench (its subscriber on the central broker), all (their sum)."""
    rss: dict[str, float]


def _cpu_ticks(pids: list[int]) -> int:
    from wattbus.footprint import Proc

    total = 0
    for pid in pids:
        try:
            total += Proc(pid, "").cpu_ticks()
        except OSError:
            pass
    return total


def _stop_broker(broker) -> None:
    try:
        broker.stop()
    except subprocess.TimeoutExpired:
        broker.kill()


def _stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT count(*) FROM readings WHERE source = 'sim'").fetchone()[0]
    except sqlite3.Error:
        return 0


def run_step(work: Path, n_sites: int, devices: int, seconds: int, workers: int) -> Result:
    """One size: start the central broker, the store, ``n_sites`` bridged edges, publish, drain, count."""
    import orjson

    from bus.config import MqttConfig
    from bus.mqtt import BusClient, Message
    from producers.hhpc.bench import _wait_log
    from wattbus.broker import Broker
    from wattbus.footprint import TICK, Proc
    from wattbus.progress import Progress

    work.mkdir(parents=True)
    central = Broker(work / "central").start()
    names = [f"site{i}" for i in range(n_sites)]
    edges = [Broker(work / name, port, extra="\n" + site_bridge(central.port, name))
             for name, port in zip(names, _edge_ports(n_sites))]
    store_proc: subprocess.Popen | None = None
    meter: BusClient | None = None
    pool = None
    try:
        db = work / "central.db"
        cfg = work / "central.toml"
        cfg.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {central.port}\n\n'
                       f'[consumer.store]\ntype = "store"\nsink = "sqlite:///{db}"\n'
                       f'topics = ["+/+/+/reading"]\n')
        store_proc = subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(cfg), "run", "store"],
                                      stdout=open(work / "store.log", "wb"), stderr=subprocess.STDOUT)
        latency: dict[tuple[str, int], float] = {}
        duplicated = 0
        last_at = 0.0
        bridged: set[str] = set()

        def on_reading(msg: Message) -> None:
            nonlocal duplicated, last_at
            now = time.time()
            r = orjson.loads(msg.payload)
            key = (r["device"], r["seq"])
            if key in latency:
                duplicated += 1
            else:
                latency[key] = now * 1000 - r["ts"]
                last_at = now

        def on_bridge(msg: Message) -> None:
            (bridged.add if msg.payload == b"1" else bridged.discard)(msg.topic.split("/", 1)[0])

        meter = BusClient(MqttConfig(port=central.port), "bench-sites-meter", session_expiry=0,
                          receive_maximum=65535)
        meter.start()
        if not meter.wait_connected(10):
            raise RuntimeError("the central broker did not accept the bench's subscriber")
        for flt, cb in (("+/+/+/reading", on_reading), ("+/wattbus/bridge/status", on_bridge)):
            acked = meter.subscribe(flt, cb)
            if acked is not None and not acked.wait(10):
                raise RuntimeError(f"the central broker did not acknowledge the subscription {flt}")
        _wait_log(work / "store.log", "subscribed to", store_proc)

        with Progress(f"starting {n_sites} site brokers", unit="brokers") as bar, \
                ThreadPoolExecutor(16) as ex:
            for done, _ in enumerate(ex.map(Broker.start, edges), 1):
                bar.update(done, n_sites)
        if dead := [e for e in edges if e.proc is None or e.proc.poll() is not None]:
            raise RuntimeError(f"{len(dead)} site brokers exited at start; see {dead[0].log}")
        deadline = time.monotonic() + 60 + n_sites / 10
        while len(bridged) < n_sites:  # a reading sent before its bridge is up would only wait in the queue
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(bridged)} of {n_sites} bridges connected; see {work}/site*/")
            time.sleep(0.1)

        import multiprocessing

        total = n_sites * devices
        t0 = time.time() + 5 + n_sites / 50  # time for the generators to start and connect
        slices = [[(i, names[i], edges[i].port) for i in range(w, n_sites, workers)] for w in range(workers)]
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        futures = [pool.submit(_generate, s, devices, seconds, t0, total) for s in slices if s]
        pids = {"store": [store_proc.pid], "central": [central.proc.pid],
                "edges": [e.proc.pid for e in edges]}
        time.sleep(max(0.0, t0 - time.time()))
        ticks = {k: _cpu_ticks(v) for k, v in pids.items()}
        own = time.process_time()
        with Progress(f"{n_sites} sites x {devices} devices x 1 reading/s", unit="s") as bar:
            while (elapsed := time.time() - t0) < seconds:
                bar.update(int(elapsed), seconds)
                time.sleep(min(0.5, seconds - elapsed))
            bar.update(seconds, seconds)
        window = time.time() - t0
        cpu = {k: (_cpu_ticks(v) - ticks[k]) / TICK / window * 100 for k, v in pids.items()}
        cpu["bench"] = (time.process_time() - own) / window * 100
        rss = {}
        for k in ("store", "central"):
            try:
                rss[k] = Proc(pids[k][0], k).memory_mb()[0]
            except OSError:
                rss[k] = float("nan")
        outcomes = [f.result() for f in futures]
        cpu["generators"] = sum(o[3] for o in outcomes) / window * 100
        cpu["all"] = sum(cpu.values())
        sent = sum(o[0] for o in outcomes)
        deadline = time.monotonic() + 30  # late is measured; only what never comes is lost
        while len(latency) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        while _stored(db) < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # a last duplicate, if any, arrives
        lat = list(latency.values())
        slow = [seq for (_, seq), ms in latency.items() if ms > SLOW_MS]
        return Result(n_sites, devices, sent, sum(o[1] for o in outcomes), len(latency),
                      sent - len(latency), duplicated, len(latency) / max(last_at - t0, 1e-9),
                      _pct(lat, 0.5), _pct(lat, 0.99), max(lat, default=float("nan")), _stored(db),
                      max(o[2] for o in outcomes), (len(slow), len(set(slow))), cpu, rss)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if meter is not None:
            meter.close()
        if store_proc is not None:
            store_proc.send_signal(signal.SIGTERM)
            try:
                store_proc.wait(15)
            except subprocess.TimeoutExpired:
                store_proc.kill()
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(_stop_broker, edges))
        _stop_broker(central)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench sites", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=200, help="simulated sites (default 200)")
    ap.add_argument("--devices", type=int, default=5, help="devices per site, 1 reading/s each (default 5)")
    ap.add_argument("--seconds", type=int, default=30, help="seconds of publishing per size (default 30)")
    ap.add_argument("--steps", help="several sizes in a row, e.g. 50,200,400 (sites; overrides --sites)")
    ap.add_argument("--workers", type=int, default=4, help="load-generator processes (default 4)")
    args = ap.parse_args(argv)
    sizes = [int(n) for n in args.steps.split(",")] if args.steps else [args.sites]
    if not all(1 <= n <= 5000 for n in sizes) or not 1 <= args.devices <= 100 or args.seconds < 1 \
            or args.workers < 1:
        ap.error("sites must be 1..5000, --devices 1..100, --seconds >= 1, --workers >= 1")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the central broker holds one socket per site
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="wattbus-sites-"))
    results: list[Result] = []
    try:
        for n in sizes:
            results.append(run_step(work / f"{n}x{args.devices}", n, args.devices, args.seconds,
                                    min(args.workers, n)))
    except BaseException:
        print(f"\nbench sites failed; its brokers' folders and logs are in {work}", file=sys.stderr)
        raise
    print(f"\n{args.devices} devices per site at 1 reading/s each, {args.seconds} s per size, one central "
          f"Mosquitto, QoS 1; latency = central receive time - publish time (ms resolution)")
    print(f"{'sites':>6}{'devices':>8}{'sent':>10}{'received':>10}{'lost':>6}{'dup':>5}{'readings/s':>11}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'stored':>10}")
    for r in results:
        print(f"{r.sites:>6}{r.sites * r.devices:>8,}{r.sent:>10,}{r.received:>10,}{r.lost:>6,}"
              f"{r.duplicated:>5,}"
              f"{r.rate:>11,.0f}{r.p50:8.1f}{r.p99:8.1f}{r.worst:8.1f}{r.stored:>10,}")
    print(f"\nCPU % of one core over the publishing window, RSS at its end (edges and generators summed; "
          f"all: every process of the bench, which share this machine's {os.cpu_count()} cores = "
          f"{100 * (os.cpu_count() or 1)} %)")
    print(f"{'sites':>6}{'store CPU %':>12}{'store RSS MB':>13}{'central CPU %':>14}{'central RSS MB':>15}"
          f"{'edges CPU %':>12}{'generators CPU %':>17}{'bench CPU %':>12}{'all CPU %':>10}")
    for r in results:
        print(f"{r.sites:>6}{r.cpu['store']:12.1f}{r.rss['store']:13.1f}{r.cpu['central']:14.1f}"
              f"{r.rss['central']:15.1f}{r.cpu['edges']:12.1f}{r.cpu['generators']:17.1f}"
              f"{r.cpu['bench']:12.1f}{r.cpu['all']:10.1f}")
    for r in results:
        if r.slow[0]:
            print(f"at {r.sites} sites {r.slow[0]:,} readings took over {SLOW_MS:g} ms, "
                  f"in {r.slow[1]} of the {args.seconds} seconds")
        if r.unacked or r.late_ms > 1000:
            print(f"at {r.sites} sites the load generators fell behind: {r.unacked:,} publishes not "
                  f"acknowledged by the edge brokers, up to {r.late_ms:,.0f} ms late against the schedule")
    if len(results) > 1:
        base = results[0].p99
        limit = min(max(GROWN_FACTOR * base, SLOW_MS), GROWN_MS)
        grown = next((r for r in results[1:] if r.p99 > limit), None)
        why = (f"{limit:,.0f} ms ({GROWN_FACTOR:g}x the smallest size's p99 of {base:.1f} ms, at least "
               f"{SLOW_MS:g} ms, at most {GROWN_MS:,.0f} ms)")
        if grown:
            print(f"latency grew: p99 first exceeded {why} at {grown.sites} sites "
                  f"({grown.sites * args.devices:,} readings/s)")
        else:
            print(f"latency did not grow: p99 stayed under {why} up to {results[-1].sites} sites")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.lost == 0 and r.stored == r.sent for r in results) else 1
