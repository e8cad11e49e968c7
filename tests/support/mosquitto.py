"""A real Mosquitto started from the project's own config files on a free loopback port."""

from __future__ import annotations

import getpass
import re
import shutil
import signal
import subprocess
from pathlib import Path

from tests.support.ports import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]
DEV_CONF = REPO / "mosquitto" / "mosquitto.dev.conf"
CONF_D = REPO / "mosquitto" / "conf.d"


def render_conf(src: Path, port: int, data_dir: Path, extra: str = "") -> str:
    """The project's config with the listener, persistence location and include_dir made private."""
    text = src.read_text()
    text = re.sub(r"(?m)^listener\s+\d+.*$", f"listener {port} 127.0.0.1", text, count=1)
    text = re.sub(r"(?m)^persistence_location\s+.*$", f"persistence_location {data_dir}/", text)
    text = re.sub(r"(?m)^include_dir\s+.*$", f"include_dir {CONF_D}", text)
    return f"user {getpass.getuser()}\n" + text + extra


class Broker:
    def __init__(self, workdir: Path, conf: Path = DEV_CONF, extra: str = ""):
        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            raise RuntimeError("mosquitto is not installed: run ./run test (it installs it)")
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(render_conf(conf, self.port, self.dir, extra))
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        try:
            wait_port(self.port)
        except TimeoutError:
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        """Clean stop: Mosquitto writes its persistence file."""
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
