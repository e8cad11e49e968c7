"""wattbus processes as real subprocesses (``python -m wattbus run NAME``), as systemd would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from textwrap import dedent

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, broker, body: str = "", *, site_tz: str = "Europe/Brussels",
                 mqtt: str = "") -> Path:
    """A wattbus.toml pointing at ``broker``, plus ``body`` (producer/consumer sections); ``mqtt``: more
    ``[mqtt]`` keys (``topic_prefix = "home1/"``, ``username = ...``)."""
    path.write_text(dedent(f"""\
        [mqtt]
        host = "{broker.host}"
        port = {broker.port}
        keepalive = 5
        """) + dedent(mqtt) + dedent(f"""

        [site]
        timezone = "{site_tz}"

        [log]
        level = "info"
        """) + dedent(body))
    return path


class WattbusProcess:
    def __init__(self, config: Path, name: str, *extra: str, log_dir: Path | None = None):
        self.config, self.name, self.extra = config, name, extra
        self.log = (log_dir or config.parent) / f"{name}{'-' + '-'.join(extra) if extra else ''}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WattbusProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wattbus", "-c", str(self.config), "run", self.name, *self.extra],
            cwd=self.config.parent, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_output(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if not self.alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: {text!r} not in output:\n{self.output()[-3000:]}")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "wattbus", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def children_of(pid: int) -> dict[int, str]:
    """pid -> command line of the live processes whose parent is ``pid`` (read from /proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found[int(proc.name)] = cmdline
    return found


def descendants_of(pid: int) -> dict[int, str]:
    """Children, grandchildren, ...: ``wattbus up`` forks its processes from a forkserver child."""
    found, todo = {}, [pid]
    while todo:
        kids = children_of(todo.pop())
        found.update(kids)
        todo += kids
    return found


def still_running(pids, grace: float = 5.0) -> list[int]:
    """Which of ``pids`` are still there after ``grace`` seconds (the forkserver leaves just after its
    parent: it sees its pipe close)."""
    deadline = time.monotonic() + grace
    while (left := [p for p in pids if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
