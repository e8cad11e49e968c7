"""``wattbus up``: every configured process as a child; one that dies is restarted; Ctrl-C stops all.

For development and the demo. In production each process is its own systemd unit (wattbus@NAME). The demo
adds its emulated hardware as children too (``hardware``): started first, each waited for until it prints
its first line (an emulator's "listening on ..."), restarted like the rest. ``wattbus`` commands are forked
from one warm interpreter (``wattbus.launcher``): the children share the memory of what they all import.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from bus.config import AppConfig
from wattbus import launcher

RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 12.0


class _Child:
    """One supervised command: its process, when it started, and its restart backoff."""

    def __init__(self, name: str, cmd: Sequence[str], announce: bool, fork: bool) -> None:
        self.name, self.cmd, self.announce = name, list(cmd), announce
        self.argv = launcher.wattbus_argv(cmd) if fork else None
        self.proc: subprocess.Popen | launcher.Forked | None = None
        self.started = 0.0
        self.backoff = RESTART_MIN_S
        self.next_start = 0.0

    def spawn(self) -> None:
        if self.argv is not None:
            self.proc = launcher.Forked(self.argv, stdout_pipe=self.announce)
        else:
            self.proc = subprocess.Popen(self.cmd, start_new_session=True, text=True,
                                         stdout=subprocess.PIPE if self.announce else None)
        self.started = time.monotonic()
        if self.announce:
            self._await_first_line()

    def _await_first_line(self) -> None:
        """Wait until the child says it is ready (its first line), then pass its output through."""
        assert self.proc is not None and self.proc.stdout is not None
        first: list[str] = []
        got = threading.Event()

        def pump(out=self.proc.stdout) -> None:
            for line in out:
                if not first:
                    first.append(line)
                    got.set()
                print(f"{self.name}: {line.rstrip()}", file=sys.stderr, flush=True)
            got.set()

        threading.Thread(target=pump, name=f"out-{self.name}", daemon=True).start()
        if not got.wait(READY_TIMEOUT_S) or not first:
            print(f"wattbus up: {self.name} said nothing within {READY_TIMEOUT_S:.0f} s", file=sys.stderr)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def supervise(app: AppConfig, only: list[str] | None = None, *,
              hardware: dict[str, Sequence[str]] | None = None, fork: bool | None = None) -> int:
    """Run until SIGTERM/SIGINT: ``hardware`` commands first, then consumers, then producers.

    ``fork`` (default: where the platform has a forkserver) forks ``wattbus`` commands from a warm
    interpreter instead of starting each afresh."""
    fork = launcher.available() if fork is None else fork
    names = [n for n in [*app.producers, *app.consumers] if not only or n in only]
    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def command(name: str) -> list[str]:
        return [sys.executable, "-m", "wattbus", "-c", str(app.path), "run", name]

    # hardware before the processes that talk to it; consumers before producers, so their
    # subscriptions exist before the first reading is published
    children = [_Child(n, cmd, announce=True, fork=fork) for n, cmd in (hardware or {}).items()]
    ordered = sorted(names, key=lambda n: n in app.producers)
    children += [_Child(n, command(n), announce=False, fork=fork) for n in ordered]
    for child in children:
        if stopping.is_set():
            break
        child.spawn()
    print(f"wattbus up: {len(children)} processes: {', '.join(c.name for c in children)} (Ctrl-C stops all)",
          file=sys.stderr, flush=True)
    while not stopping.wait(0.5):
        now = time.monotonic()
        for child in children:
            code = child.exited()
            if code is not None and child.proc is not None:
                ran = now - child.started
                child.backoff = RESTART_MIN_S if ran > 60 else min(child.backoff * 2, RESTART_MAX_S)
                print(f"wattbus up: {child.name} exited with {code}; restarting in {child.backoff:.0f} s",
                      file=sys.stderr, flush=True)
                child.proc = None
                child.next_start = now + child.backoff
            if child.proc is None and now >= child.next_start:
                child.spawn()
    _stop_all([c.proc for c in reversed(children) if c.proc is not None])
    return 0


def _stop_all(procs: list[subprocess.Popen | launcher.Forked]) -> None:
    """SIGTERM to every child (producers first, hardware last), then wait; kill what is left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
