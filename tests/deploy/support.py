"""The production broker as the tests run it: mosquitto/mosquitto.prod.conf, its users and ACL in a tmp dir.

Only what cannot be the same in a test changes: the listener (a free loopback port), persistence, the
include_dir (the repository's conf.d, as ``wattbus.broker.render_conf`` does) and the paths of the password
file and the ACL. Users are made by ``mosquitto/make-user.sh`` and the ACL by ``wattbus acl``, as on a Pi.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.mosquitto import Broker

REPO = Path(__file__).resolve().parents[2]
PROD_CONF = REPO / "mosquitto" / "mosquitto.prod.conf"
MAKE_USER = REPO / "mosquitto" / "make-user.sh"


def make_users(names: list[str], passwd: Path, secrets: Path) -> dict[str, str]:
    """One broker user per name with mosquitto/make-user.sh; name -> password (read back from its file)."""
    for name in names:
        r = subprocess.run(["sh", str(MAKE_USER), name, str(passwd), str(secrets)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
    return {n: (secrets / f"{n}.pass").read_text().strip() for n in names}


def write_acl(config: Path, acl: Path, extra: Path | None = None) -> str:
    args = [sys.executable, "-m", "wattbus", "-c", str(config), "acl", "-o", str(acl)]
    if extra:
        args += ["--extra", str(extra)]
    r = subprocess.run(args, capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stdout + r.stderr
    return acl.read_text()


def production_broker(workdir: Path, passwd: Path, acl: Path, extra: str = "",
                      port: int | None = None) -> Broker:
    text = PROD_CONF.read_text()
    text, n1 = re.subn(r"(?m)^password_file\s+.*$", f"password_file {passwd}", text)
    text, n2 = re.subn(r"(?m)^acl_file\s+.*$", f"acl_file {acl}", text)
    assert (n1, n2) == (1, 1), "mosquitto.prod.conf must name one password_file and one acl_file"
    assert re.search(r"(?m)^allow_anonymous\s+false\s*$", text), "the production broker must refuse anonymous"
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.prod.conf"
    conf.write_text(text)
    return Broker(workdir / "broker", port=port, conf=conf, extra=extra)


class Client:
    """A paho MQTT v5 client that records what the broker answers: CONNACK, PUBACK reason codes, messages."""

    def __init__(self, broker, username: str | None, password: str | None, *, tls_ca: Path | None = None,
                 port: int | None = None):
        self.connack = None
        self.pubacks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._cv = threading.Condition()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                        protocol=paho.MQTTv5)
        if username is not None:
            c.username_pw_set(username, password)
        if tls_ca:
            c.tls_set(ca_certs=str(tls_ca))
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._notify()
        self.c = c
        c.connect(broker.host, port or broker.port)
        c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")

    def _notify(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        with self._cv:
            self.connack = rc
            self._cv.notify_all()

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        with self._cv:
            self.pubacks[mid] = rc.value
            self._cv.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        with self._cv:
            self.messages.append((msg.topic, msg.payload))
            self._cv.notify_all()

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def wait(self, predicate, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cv.wait(min(left, 0.2))

    def publish(self, topic: str, payload: bytes | str = b"x", *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 = accepted, 0x87 = not authorized)."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        self.wait(lambda: info.mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe([(f, 1) for f in filters])
        assert done.wait(10), "no SUBACK"

    def on(self, topic_filter: str) -> list[tuple[str, bytes]]:
        with self._cv:
            return [m for m in self.messages if paho.topic_matches_sub(topic_filter, m[0])]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


NOT_AUTHORIZED = 0x87
