"""`wattbus run` speaks systemd's notify protocol: READY=1, WATCHDOG=1 while alive, STOPPING=1 on SIGTERM.

The test plays systemd's side: a unix datagram socket in $NOTIFY_SOCKET and a short $WATCHDOG_USEC, as
systemd sets them for a Type=notify unit with WatchdogSec= (no systemd runs in the test environment).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import write_config

REPO = Path(__file__).resolve().parents[2]


def _listen(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    return s


def _collect(sock: socket.socket, until, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    return got


def test_ready_watchdog_and_stopping_reach_systemd(broker, tmp_path):
    cfg = write_config(tmp_path / "wattbus.toml", broker, """
        [producer.notified]
        type = "sim"
        [[producer.notified.meters]]
        serial = "sdn1"
        """)
    sock = _listen(tmp_path / "notify.sock")
    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
               WATCHDOG_USEC="300000")
    with open(tmp_path / "out.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(cfg), "run", "notified"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        got = _collect(sock, lambda g: sum(m == "WATCHDOG=1" for m in g) >= 3, timeout=20)
        assert got and got[0].startswith("READY=1\n"), got
        assert "STATUS=running producer notified" in got[0]
        assert f"MAINPID={proc.pid}" in got[0]
        assert sum(m == "WATCHDOG=1" for m in got) >= 3, got  # fed every 0.1 s: a third of the period
        proc.send_signal(signal.SIGTERM)
        after = _collect(sock, lambda g: "STOPPING=1" in g, timeout=10)
        assert "STOPPING=1" in after, after
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert "Traceback" not in (tmp_path / "out.log").read_text()


def test_an_abstract_notify_socket_works_too(monkeypatch):
    """systemd may hand out "@name", an abstract socket (no file)."""
    from bus.sdnotify import _send

    name = f"wattbus-test-{os.getpid()}-{time.monotonic_ns()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert _send("READY=1")
        assert s.recv(100) == b"READY=1"
    finally:
        s.close()


def test_without_systemd_nothing_is_sent(monkeypatch):
    from bus.sdnotify import _send

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert _send("READY=1") is False


def test_the_watchdog_starves_when_the_mqtt_thread_dies(monkeypatch, tmp_path, caplog):
    """systemd then kills and restarts the unit: better than a process that looks alive and moves nothing."""
    import logging
    import threading
    from types import SimpleNamespace

    from bus.sdnotify import notify_systemd

    sock = _listen(tmp_path / "n.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "150000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    network_down = threading.Event()
    network = threading.Thread(target=network_down.wait, name="test-mqtt-network", daemon=True)
    network.start()
    ctx = SimpleNamespace(kind="consumer", name="starved", stopping=threading.Event(),
                          log=logging.getLogger("test.sdnotify"))
    try:
        with caplog.at_level(logging.ERROR, logger="test.sdnotify"):
            feeder = notify_systemd(ctx, network_thread="test-mqtt-network")
            fed = _collect(sock, lambda g: g.count("WATCHDOG=1") >= 3, timeout=5)
            assert fed.count("WATCHDOG=1") >= 3
            network_down.set()
            network.join(2)
            feeder.join(2)
            assert not feeder.is_alive()
            _collect(sock, lambda g: False, timeout=0.3)  # drain what was sent before it noticed
            assert _collect(sock, lambda g: False, timeout=0.5) == []  # no more WATCHDOG=1
        assert "vital thread died" in caplog.text
    finally:
        ctx.stopping.set()
        sock.close()
