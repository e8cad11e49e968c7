"""Start a private Mosquitto from the project's own config (demo, bench, tests).

The config file is the project's ``mosquitto/mosquitto.dev.conf`` with three lines pointed elsewhere: the
listener (a chosen or free loopback port), ``persistence_location`` and ``include_dir`` (the project's
``mosquitto/conf.d``, which holds the delivery settings).
"""

from __future__ import annotations

import getpass
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV_CONF = REPO / "mosquitto" / "mosquitto.dev.conf"
CONF_D = REPO / "mosquitto" / "conf.d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")
        time.sleep(0.05)


def render_conf(src: Path, port: int, data_dir: Path, extra: str = "") -> str:
    text = src.read_text()
    text = re.sub(r"(?m)^listener\s+\d+.*$", f"listener {port} 127.0.0.1", text, count=1)
    text = re.sub(r"(?m)^persistence_location\s+.*$", f"persistence_location {data_dir}/", text)
    text = re.sub(r"(?m)^include_dir\s+.*$", f"include_dir {CONF_D}", text)
    return f"user {getpass.getuser()}\n" + text + extra


class Broker:
    """A Mosquitto process of our own; ``stop()`` is clean (persistence written), ``kill()`` is not."""

    def __init__(self, workdir: Path, port: int | None = None, conf: Path = DEV_CONF, extra: str = ""):
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (./run demo and ./run test install it)")
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(render_conf(conf, self.port, self.dir, extra))
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=open(self.log, "ab"), start_new_session=True,
                                     stderr=subprocess.STDOUT)
        try:
            wait_port(self.port)
        except TimeoutError:
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
