"""A real 3-node NATS cluster (JetStream, MQTT 3.1.1 listener on each node) on free loopback ports.

NATS is one of the two clustered brokers Debian ships that speak MQTT (``apt-get install nats-server``);
the tests that need it skip, with that reason, where it is not installed.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.ports import free_port, wait_port


class NatsNode:
    def __init__(self, workdir: Path, name: str, cluster_ports: list[int], cluster_port: int):
        self.name, self.dir = name, workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port, self.client_port, self.http_port = free_port(), free_port(), free_port()
        """``port`` is the MQTT listener (what wattbus connects to)."""
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster_ports if p != cluster_port)
        self.conf = self.dir / "nats.conf"
        self.conf.write_text(
            f'server_name: {name}\nlisten: 127.0.0.1:{self.client_port}\nhttp: 127.0.0.1:{self.http_port}\n'
            f'jetstream {{ store_dir: "{self.dir / "js"}" }}\n'
            f"cluster {{ name: wattbus, listen: 127.0.0.1:{cluster_port}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{self.port}, stream_replicas: 3, consumer_replicas: 3 }}\n")
        self.log = self.dir / "nats.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "NatsNode":
        self.proc = subprocess.Popen([shutil.which("nats-server") or "nats-server", "-c", str(self.conf)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.port, timeout=20)
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, no flush."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def healthy(self) -> bool:
        """JetStream is up and this node is current with the cluster's metadata leader."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as r:
                return json.loads(r.read()).get("status") == "ok"
        except (OSError, ValueError):
            return False


class NatsCluster:
    def __init__(self, workdir: Path, size: int = 3):
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [NatsNode(workdir, f"n{i + 1}", cluster_ports, p) for i, p in enumerate(cluster_ports)]

    def start(self, timeout: float = 60.0) -> "NatsCluster":
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        while not all(n.healthy() for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the NATS cluster did not form: " + self.nodes[0].log.read_text()[-2000:])
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @staticmethod
    def installed() -> bool:
        return shutil.which("nats-server") is not None
