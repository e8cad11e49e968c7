"""One broker user per process, and an ACL from `wattbus acl` that gives each exactly its topics.

Everything runs against the real Mosquitto started from mosquitto/mosquitto.prod.conf
(tests/deploy/support.py): anonymous and wrong passwords are refused, a process that publishes on another's
topic gets PUBACK "not authorized" (0x87) and nobody receives the message, and every process of
`wattbus demo` does its work logged in as itself.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from producers.hhpc.generate import generate_year
from tests.deploy.support import NOT_AUTHORIZED, Client, make_users, production_broker, write_acl
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def demo_config(data: Path, mqtt_port: int) -> tuple[str, dict[str, list[str]]]:
    """The config `wattbus demo` runs, for this test's broker and on free ports, and the demo's hardware
    (emulator commands to start first)."""
    from wattbus import demo

    if hasattr(demo, "compose"):  # every plugin's demo.toml (issue 9's demo): not run on this branch
        from wattbus.plugins import plugins

        everything = plugins()
        for p in everything:
            if p.demo_data is not None:
                p.demo_data(data)
        composed = demo.compose([(p, p.demo) for p in everything if p.demo is not None], data=data,
                                mqtt_port=mqtt_port, ports=demo.Ports(free=True))
        return composed.text, composed.hardware
    generate_year(2024, data / "hhpc-2024.txt", seed=1, start=date(2024, 3, 1), end=date(2024, 3, 2))
    text = demo.DEMO_CONFIG.format(mqtt_port=mqtt_port, dataset=data / "hhpc-2024.txt",
                                   db=data / "wattbus.db")
    return re.sub(r"(?m)^port = 3030$", f"port = {free_port()}", text), {}


def with_passwords(config_text: str, secrets: Path, extra_mqtt: str = "") -> str:
    """Each process logs in as itself (the default username) with its own password file."""
    line = f'password_file = "{secrets}/{{process}}.pass"\n{extra_mqtt}'
    return re.sub(r"(?m)^\[mqtt\]\n", lambda m: m.group(0) + line, config_text, count=1)


def processes_of(config: Path) -> list[tuple[str, str, str]]:
    r = subprocess.run([sys.executable, "-m", "wattbus", "-c", str(config), "acl", "--processes"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return [tuple(line.split("\t")[:3]) for line in r.stdout.splitlines()]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The demo's config with a password per process, its users, and the ACL `wattbus acl` writes for it."""
    d = tmp_path_factory.mktemp("site")
    port = free_port()
    config = d / "wattbus.toml"
    text, hardware = demo_config(d, port)
    config.write_text(with_passwords(text, d / "secrets"))
    names = [n for n, _, _ in processes_of(config)]
    passwords = make_users(names + ["observer"], d / "passwd", d / "secrets")
    (d / "acl.local").write_text("# the tests' own eyes on the bus\nuser observer\ntopic read #\n")
    write_acl(config, d / "acl", d / "acl.local")
    return {"dir": d, "config": config, "port": port, "names": names, "passwords": passwords,
            "hardware": hardware}


@pytest.fixture
def prod_broker(site, tmp_path):
    # log_type debug: Mosquitto then logs every publish the ACL denies ("Denied PUBLISH")
    b = production_broker(tmp_path, site["dir"] / "passwd", site["dir"] / "acl", extra="log_type debug\n",
                          port=site["port"]).start()
    yield b
    b.kill()


@pytest.fixture
def clients():
    made: list[Client] = []

    def connect(broker, user, password, **kw) -> Client:
        c = Client(broker, user, password, **kw)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


def test_the_demo_has_one_user_per_process(site):
    assert {"house", "replay", "meters", "store", "exporter"} <= set(site["names"])
    passwd = (site["dir"] / "passwd").read_text()
    for name in site["names"]:
        assert re.search(rf"(?m)^{name}:\$7\$", passwd), f"{name} has no PBKDF2 hash in the password file"
        assert site["passwords"][name] not in passwd  # hashes only
    assert len(set(site["passwords"].values())) == len(site["passwords"])  # every process its own secret


def test_anonymous_wrong_password_and_unknown_users_are_refused(site, prod_broker, clients):
    pw = site["passwords"]
    assert not clients(prod_broker, None, None).accepted
    assert not clients(prod_broker, "store", "not-the-password").accepted
    assert not clients(prod_broker, "store", pw["exporter"]).accepted  # another process's password
    assert not clients(prod_broker, "intruder", pw["store"]).accepted
    assert clients(prod_broker, "store", pw["store"]).accepted


def test_each_process_may_publish_only_on_its_own_topics(site, prod_broker, clients):
    pw = site["passwords"]
    observer = clients(prod_broker, "observer", pw["observer"])
    observer.subscribe("#")
    house = clients(prod_broker, "house", pw["house"])
    store = clients(prod_broker, "store", pw["store"])
    meters = clients(prod_broker, "meters", pw["meters"])

    allowed = [(house, "hhpc/house/reading"), (house, "hhpc/house/status"), (house, "wattbus/house/health"),
               (house, "wattbus/dlq/house"), (store, "wattbus/store/status"), (store, "wattbus/dlq/store"),
               (meters, "sim/kili/reading"), (meters, "sim/kili/config"), (meters, "sim/pico/heartbeat")]
    denied = [(house, "hhpc/replay/reading"),   # another producer's device of the same source
              (house, "sim/kili/reading"),      # another source
              (house, "wattbus/store/status"),  # another process's status, health, DLQ
              (house, "wattbus/store/health"), (house, "wattbus/dlq/store"),
              (store, "hhpc/house/reading"),    # a consumer is no producer
              (store, "agg/hhpc/house/1h"), (store, "relay/boiler/set"),
              (meters, "sim/kili/config/set"),  # the sim meter reads its remote config, it does not write it
              (meters, "sim/other/reading"), (house, "homeassistant/sensor/x/config")]
    for client, topic in allowed:
        assert client.publish(topic, b"ok") == 0, topic
    for client, topic in denied:
        assert client.publish(topic, b"sneaky") == NOT_AUTHORIZED, topic
    observer.wait(lambda: len(observer.messages) >= len(allowed), "the allowed messages")
    time.sleep(0.3)  # a denied message would have arrived with the allowed ones
    assert sorted(t for t, _ in observer.messages) == sorted(t for _, t in allowed)
    assert b"sneaky" not in [p for _, p in observer.messages]
    assert "Denied PUBLISH" in prod_broker.log.read_text()


def test_each_process_receives_only_what_it_reads(site, prod_broker, clients):
    pw = site["passwords"]
    store = clients(prod_broker, "store", pw["store"])
    store.subscribe("#")
    house = clients(prod_broker, "house", pw["house"])
    meters = clients(prod_broker, "meters", pw["meters"])
    exporter = clients(prod_broker, "exporter", pw["exporter"])
    exporter.subscribe("#")
    for topic in ("hhpc/house/reading", "hhpc/house/status", "wattbus/house/health", "wattbus/dlq/house"):
        assert house.publish(topic, b"m") == 0
    assert meters.publish("sim/kili/reading", b"m") == 0
    exporter.wait(lambda: len(exporter.messages) >= 4, "the exporter's messages")
    store.wait(lambda: len(store.messages) >= 2, "the store's readings")
    time.sleep(0.3)
    assert sorted(t for t, _ in store.messages) == ["hhpc/house/reading", "sim/kili/reading"]
    assert sorted(t for t, _ in exporter.messages) == ["hhpc/house/reading", "hhpc/house/status",
                                                       "sim/kili/reading", "wattbus/house/health"]


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _stored(db: Path) -> set[tuple[str, str]]:
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(db) as c:
            return set(c.execute("SELECT DISTINCT source, device FROM readings").fetchall())
    except sqlite3.OperationalError:
        return set()


def _wait(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_every_demo_process_works_logged_in_as_itself(site, prod_broker, clients, processes):
    observer = clients(prod_broker, "observer", site["passwords"]["observer"])
    observer.subscribe("#")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    hardware = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for cmd in site["hardware"].values()]  # the demo's emulated devices, when it has some
    try:
        running = {name: processes(site["config"], name) for name in site["names"]}
        for name in site["names"]:
            observer.wait(lambda n=name: observer.on(f"wattbus/{n}/health"), f"{name}'s health", timeout=30)
            assert (f"wattbus/{name}/status", b"online") in observer.on(f"wattbus/{name}/status")
        db = site["dir"] / "wattbus.db"
        _wait(lambda: {("hhpc", "replay"), ("sim", "kili")} <= _stored(db), "replay's, kili's readings")
        observer.wait(lambda: observer.on("sim/kili/config") and observer.on("hhpc/house/status"), "devices")
        exporter_port = int(re.search(r"(?ms)^\[consumer\.exporter\].*?^port = (\d+)$",
                                      site["config"].read_text()).group(1))
        _wait(lambda: 'wattbus_up{device="replay",source="hhpc"} 1.0' in _scrape(exporter_port), "replay up")
        metrics = _scrape(exporter_port)
        for name in site["names"]:
            assert f'wattbus_process_up{{process="{name}"}} 1.0' in metrics, name
        assert not observer.on("wattbus/dlq/#"), observer.on("wattbus/dlq/#")
        log = prod_broker.log.read_text()
        assert "Denied" not in log, [line for line in log.splitlines() if "Denied" in line][:5]
        assert all(p.alive() for p in running.values()), {n: p.output()[-500:] for n, p in running.items()}
    finally:
        for h in hardware:
            h.kill()
            h.wait(10)


@pytest.mark.slow
def test_topic_prefix_is_part_of_every_rule(tmp_path, clients, processes):
    port = free_port()
    secrets = tmp_path / "secrets"
    db = tmp_path / "w.db"
    config = tmp_path / "wattbus.toml"
    config.write_text(with_passwords(f"""\
[mqtt]
host = "127.0.0.1"
port = {port}
topic_prefix = "home1/"

[producer.meters]
type = "sim"
interval = 60
speed = 600
[[producer.meters.meters]]
serial = "kili"

[consumer.store]
type = "store"
sink = "sqlite:///{db}"
group = "stores"
""", secrets))
    pw = make_users(["meters", "store", "observer"], tmp_path / "passwd", secrets)
    (tmp_path / "acl.local").write_text("user observer\ntopic read #\n")
    acl = write_acl(config, tmp_path / "acl", tmp_path / "acl.local")
    assert "topic read home1/+/+/reading" in acl  # the store's $share/stores/+/+/reading, prefixed
    b = production_broker(tmp_path / "b", tmp_path / "passwd", tmp_path / "acl", port=port).start()
    try:
        meters = clients(b, "meters", pw["meters"])
        assert meters.publish("home1/sim/kili/heartbeat") < 0x80  # 0x10: accepted, nobody subscribed yet
        assert meters.publish("sim/kili/heartbeat") == NOT_AUTHORIZED  # outside its site
        assert meters.publish("home2/sim/kili/heartbeat") == NOT_AUTHORIZED
        processes(config, "store")
        processes(config, "meters")
        _wait(lambda: ("sim", "kili") in _stored(db), "kili's readings through home1/ into the store")
    finally:
        b.kill()


def test_a_process_logs_in_over_tls_with_its_password(site, tmp_path, clients, processes):
    certs = tmp_path / "certs"
    r = subprocess.run(["sh", str(REPO / "mosquitto/make-test-ca.sh"), str(certs)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    tls_port = free_port()
    tls = (REPO / "mosquitto/tls.conf").read_text()
    tls = re.sub(r"(?m)^listener 8883$", f"listener {tls_port} 127.0.0.1", tls)
    tls = tls.replace("/etc/wattbus/mosquitto/certs", str(certs))
    assert f"listener {tls_port}" in tls and str(certs) in tls
    b = production_broker(tmp_path / "b", site["dir"] / "passwd", site["dir"] / "acl", extra=tls)
    b.start()
    try:
        pw = site["passwords"]
        assert not clients(b, "meters", "wrong", tls_ca=certs / "ca.crt", port=tls_port).accepted
        observer = clients(b, "observer", pw["observer"], tls_ca=certs / "ca.crt", port=tls_port)
        assert observer.accepted
        observer.subscribe("wattbus/+/health")
        config = tmp_path / "tls.toml"
        config.write_text(f"""\
[mqtt]
host = "localhost"
port = {tls_port}
tls_ca = "{certs / 'ca.crt'}"
password_file = "{site['dir'] / 'secrets'}/{{process}}.pass"

[producer.meters]
type = "sim"
[[producer.meters.meters]]
serial = "kili"
""")
        processes(config, "meters")
        observer.wait(lambda: observer.on("wattbus/meters/health"), "meters' health over TLS", timeout=30)
    finally:
        b.kill()
