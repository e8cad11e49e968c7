"""The production broker config for real: no anonymous access, a password per process (``make-user.sh``), the
ACL, and TLS with the project's test CA (``make-test-ca.sh``). A producer and a store, each with its own
credentials, deliver over TLS; a wrong password and an anonymous client are refused."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from types import SimpleNamespace

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bus.sinks.sqlite import SqliteSink
from tests.conftest import unique
from tests.support.mosquitto import PROD_CONF, Broker
from tests.support.ports import free_port
from tests.support.processes import REPO, write_config

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None or shutil.which("openssl") is None,
                                reason="needs mosquitto_passwd and openssl (./run test installs them)")


@pytest.fixture
def secure_broker(tmp_path):
    """Mosquitto from mosquitto.prod.conf: users made by make-user.sh, certificates by make-test-ca.sh."""
    certs, secrets, passwd = tmp_path / "certs", tmp_path / "secrets", tmp_path / "passwd"
    subprocess.run(["sh", str(REPO / "mosquitto/make-test-ca.sh"), str(certs)], check=True,
                   capture_output=True)
    for user in ("hhpc", "store"):
        subprocess.run(["sh", str(REPO / "mosquitto/make-user.sh"), user, str(passwd), str(secrets)],
                       check=True, capture_output=True)
    b = Broker(tmp_path / "mosquitto", conf=PROD_CONF, tls_port=free_port(), settings={
        "password_file": str(passwd), "acl_file": str(REPO / "mosquitto/acl"),
        "certfile": str(certs / "server.crt"), "keyfile": str(certs / "server.key"),
        "cafile": str(certs / "ca.crt")}).start()
    b.certs, b.secrets = certs, secrets
    yield b
    b.kill()


def as_user(path, broker, user: str, body: str, password_file=None):
    """A config for one process: its own user and password file, TLS with the test CA."""
    tls = SimpleNamespace(host=broker.host, port=broker.tls_port)
    return write_config(path, tls, body, mqtt=f"""
        username = "{user}"
        password_file = "{password_file or broker.secrets / f'{user}.pass'}"
        tls_ca = "{broker.certs / 'ca.crt'}"
        """)


@pytest.mark.slow
def test_each_process_with_its_own_password_delivers_over_tls(secure_broker, processes, seed_sample,
                                                              tmp_path):
    db = tmp_path / "w.db"
    house = unique("house")
    store_cfg = as_user(tmp_path / "store.toml", secure_broker, "store", f"""
        [consumer.store]
        type = "store"
        sink = "sqlite:///{db}"
        """)
    producer_cfg = as_user(tmp_path / "hhpc.toml", secure_broker, "hhpc", f"""
        [producer.hhpc]
        type = "hhpc"
        device = "{house}"
        dataset = "{seed_sample}"
        mode = "replay"
        """)
    store = processes(store_cfg, "store")
    store.wait_output("subscribed to")
    producer = processes(producer_cfg, "hhpc")
    producer.wait_output("replay of")
    sink = SqliteSink(f"sqlite:///{db}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not db.exists() or sink.count("hhpc", house) < 10):
        time.sleep(0.2)
    assert sink.count("hhpc", house) == 10, store.output()[-2000:]
    assert producer.terminate() == 0 and store.terminate() == 0


def test_a_wrong_password_is_refused_and_said_so(secure_broker, processes, tmp_path):
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    cfg = as_user(tmp_path / "w.toml", secure_broker, "store", """
        [consumer.store]
        type = "store"
        sink = "sqlite:///w.db"
        """, password_file=wrong)
    p = processes(cfg, "store")
    p.wait_output("refused the connection")
    assert "connected to" not in p.output()


def test_anonymous_and_unverified_clients_are_refused(secure_broker):
    plain = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    refused: list = []
    plain.on_connect = lambda c, u, f, rc, p: refused.append(rc.is_failure)
    plain.connect(secure_broker.host, secure_broker.port)
    plain.loop_start()
    deadline = time.monotonic() + 5
    while not refused and time.monotonic() < deadline:
        time.sleep(0.05)
    plain.loop_stop()
    assert refused == [True], "no anonymous access"
    untrusted = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    untrusted.tls_set(cert_reqs=ssl.CERT_REQUIRED)  # the system's CAs: they do not know the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusted.connect(secure_broker.host, secure_broker.tls_port)
