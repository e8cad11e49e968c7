"""Start ``wattbus ...`` commands by forking one warm interpreter instead of starting a fresh one each.

``wattbus up`` and the demo run twenty-odd Python processes that all import the same base (bus, paho,
msgspec, orjson, the CLI). Started fresh, each builds its own copy of it: about 20 MB of PSS per process.
Forked from multiprocessing's forkserver, a process that has imported that base once, they share its pages
copy-on-write (``gc.freeze()`` keeps the collector from writing to them), and each pays only for what it
imports and does itself. In production systemd starts each process on its own; nothing here is used there.

A forked child looks like the command it runs (``setproctitle``: ``ps``, ``top`` and ``wattbus bench
footprint`` show ``wattbus -c wattbus.toml run store``), is the leader of its own session like a
``start_new_session`` subprocess, and exits with the command's exit code.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from typing import IO

PRELOAD = ["wattbus.cli", "wattbus.process", "bus.config", "bus.mqtt", "bus.runtime", "bus.producer",
           "bus.consumer", "bus.envelope", "bus.log", "bus.sdnotify", "bus.outbox", "http.server",
           "urllib.request", "wattbus.launcher"]
"""What every process imports anyway: preloading more would add to each child's RSS what only some use."""

_ctx = None


def wattbus_argv(cmd: Sequence[str]) -> list[str] | None:
    """The CLI arguments of ``[python, -m, wattbus, ...]``; None for any other command (run as it is)."""
    cmd = list(cmd)
    return cmd[3:] if cmd[:3] == [sys.executable, "-m", "wattbus"] else None


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def _context():
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx


def _child(argv: list[str], out) -> None:
    """In the forked child: its own session, its title, stdout to ``out`` (a pipe end) if given, run."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.freeze()  # the preloaded objects stay in the permanent generation: the collector never writes there
    from setproctitle import setproctitle

    setproctitle(" ".join(["wattbus", *argv]))
    if out is not None:
        os.dup2(out.fileno(), 1)
        out.close()
        sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.argv = ["wattbus", *argv]
    from wattbus.cli import main

    raise SystemExit(main(argv))


class Forked:
    """A forked ``wattbus`` command, with the part of ``subprocess.Popen``'s interface the supervisor uses."""

    def __init__(self, argv: list[str], *, stdout_pipe: bool = False) -> None:
        ctx = _context()
        reader = writer = None
        if stdout_pipe:
            reader, writer = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(argv, writer), daemon=False)
        self._proc.start()
        self.pid: int = self._proc.pid
        self.stdout: IO[str] | None = None
        if reader is not None and writer is not None:
            writer.close()
            self.stdout = os.fdopen(os.dup(reader.fileno()), "r", buffering=1)
            reader.close()
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._proc.is_alive():
            code = self._proc.exitcode
            self.returncode = code if code is not None else -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self.poll() is None:
            import subprocess

            raise subprocess.TimeoutExpired(["wattbus"], timeout or 0)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
