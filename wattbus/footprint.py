"""``wattbus bench footprint``: what the demo stack costs a Raspberry Pi, process by process.

Starts ``wattbus demo`` (its own broker, free ports, a fresh folder), lets it settle, then prints for every
process of the stack: RSS, PSS (``/proc/PID/smaps_rollup``: shared pages split among the processes that map
them, so the PSS column adds up to what the stack really takes) and CPU % over a window. Then it freezes
the traffic (SIGSTOP to the emulated devices and to the replay, the sources of readings) and measures the
rest again: the idle figures. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
RSS_TARGET_MB, PSS_TARGET_MB, IDLE_CPU_TARGET = 45.0, 300.0, 0.2
TRAFFIC = ("emulate ", "run replay")
"""Command-line parts of the processes that make readings without a device to poll (frozen when idle)."""


@dataclass
class Proc:
    pid: int
    name: str

    def cpu_ticks(self) -> int:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        rss = pss = 0.0
        for line in Path(f"/proc/{self.pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                kb = float(rest.split()[0]) / 1024
                rss, pss = (kb, pss) if key == "Rss" else (rss, kb)
        return rss, pss


def _name(pid: int) -> str:
    # split on spaces too: a forked child's title (setproctitle) is one string
    line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
    for module, name in (("multiprocessing.forkserver", "forkserver (wattbus.launcher)"),
                         ("multiprocessing.resource_tracker", "resource tracker (multiprocessing)")):
        if module in line:
            return name
    words = line.split()
    if "run" in words:
        return words[words.index("run") + 1]
    if "emulate" in words:
        return "emulate " + " ".join(words[words.index("emulate") + 1:][:3])
    if "demo" in words:
        return "wattbus demo (supervisor)"
    return Path(words[0]).name if words else str(pid)


def _tree(root: int) -> list[Proc]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            out.append(Proc(pid, _name(pid)))
        except OSError:
            continue
        todo += children.get(pid, [])
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(procs: list[Proc], window: float) -> dict[int, tuple[float, float, float]]:
    """pid -> (RSS MB, PSS MB, CPU % of one core over ``window`` seconds)."""
    from wattbus.progress import Progress

    start = {}
    for p in procs:
        try:
            start[p.pid] = p.cpu_ticks()
        except OSError:
            pass
    with Progress(f"measuring {len(procs)} processes for {window:.0f} s", unit="s") as bar:
        t0 = time.monotonic()
        while (left := window - (time.monotonic() - t0)) > 0:
            time.sleep(min(1.0, left))
            bar.update(int(time.monotonic() - t0), int(window))
    elapsed = time.monotonic() - t0
    out = {}
    for p in procs:
        try:
            rss, pss = p.memory_mb()
            cpu = (p.cpu_ticks() - start[p.pid]) / TICK / elapsed * 100
        except (OSError, KeyError):
            continue
        out[p.pid] = (rss, pss, cpu)
    return out


def report(title: str, procs: list[Proc], figures: dict[int, tuple[float, float, float]],
           skip: set[int] = frozenset()) -> None:
    print(f"\n{title}")
    print(f"{'process':34}{'RSS MB':>9}{'PSS MB':>9}{'CPU %':>8}")
    rows = sorted((p for p in procs if p.pid in figures), key=lambda p: p.name)
    total = [0.0, 0.0, 0.0]
    for p in rows:
        rss, pss, cpu = figures[p.pid]
        mark = "  (frozen: no traffic)" if p.pid in skip else ""
        print(f"{p.name[:33]:34}{rss:9.1f}{pss:9.1f}{cpu:8.2f}{mark}")
        total = [total[0] + rss, total[1] + pss, total[2] + cpu]
    print(f"{'total':34}{total[0]:9.1f}{total[1]:9.1f}{total[2]:8.2f}")
    wattbus = [figures[p.pid] for p in rows if "mosquitto" not in p.name and p.pid not in skip
               and not p.name.startswith("emulate")]
    if wattbus:
        worst = max(wattbus, key=lambda f: f[0])
        print(f"largest wattbus process {worst[0]:.1f} MB RSS (target <= {RSS_TARGET_MB:g}); stack "
              f"{total[1]:.0f} MB PSS (target <= {PSS_TARGET_MB:g})")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench footprint", description=__doc__.split("\n\n")[0])
    ap.add_argument("--settle", type=float, default=45.0, help="seconds before measuring (default 45)")
    ap.add_argument("--window", type=float, default=60.0, help="seconds of each CPU window (default 60)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="wattbus-footprint-"))
    log = open(work / "demo.log", "wb")
    demo = subprocess.Popen([sys.executable, "-m", "wattbus", "demo", "--dir", str(work / "demo"), "--free-ports",
                             "--mqtt-port", str(_free_port())], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        print(f"demo stack starting (pid {demo.pid}, log {work / 'demo.log'}); settling {args.settle:.0f} s",
              flush=True)
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            if demo.poll() is not None:
                print(f"the demo exited ({demo.returncode}): see {work / 'demo.log'}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        procs = _tree(demo.pid)
        report(f"busy: the demo's own traffic, CPU over {args.window:.0f} s", procs, measure(procs, args.window))
        frozen = {p.pid for p in procs if any(t in " ".join(Path(f"/proc/{p.pid}/cmdline").read_bytes()
                                                            .decode(errors="replace").split("\0"))
                                              for t in TRAFFIC)}
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(5)  # let queues drain
        idle = measure(procs, args.window)
        report(f"idle: devices and the replay frozen, CPU over {args.window:.0f} s (target <= {IDLE_CPU_TARGET} % "
               f"per process)", procs, idle, skip=frozen)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        return 0
    finally:
        try:
            os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(demo.pid, signal.SIGKILL)
        log.close()
