"""Store-and-forward from a site to a central broker over the project's mosquitto/bridge.conf.

Two real Mosquittos: the site's (the development config plus bridge.conf, pointed at the central one) and
the central one (the production config: no anonymous access, the project's ACL format, a TLS listener with
a test CA). A replay producer on the site publishes 2,000 readings over about 100 s; a store on the central
broker writes them. The central broker goes down for 60 s, then the site broker is restarted in the middle;
or the site broker is killed (SIGKILL) mid-stream: either way every reading must be stored exactly once.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from producers.hhpc.generate import generate_year
from tests.deploy.support import make_users, production_broker
from tests.support.mosquitto import Broker
from tests.support.ports import free_port
from tests.support.processes import write_config

REPO = Path(__file__).resolve().parents[2]
BRIDGE = REPO / "mosquitto" / "bridge.conf"
READINGS = 2000

pytestmark = pytest.mark.slow


def site_bridge(central_tls_port: int, ca: Path, password: str, site: str) -> str:
    """The project's bridge.conf as a site would install it: only address, CA, password and prefix change."""
    text = BRIDGE.read_text()
    for key, value in (("address", f"127.0.0.1:{central_tls_port}"), ("bridge_cafile", str(ca)),
                       ("remote_password", password)):
        text, n = re.subn(rf"(?m)^{key}\s+.*$", f"{key} {value}", text)
        assert n == 1, f"bridge.conf must set {key} once"
    return text.replace("home1", site)


def stored(db: Path, device: str) -> tuple[int, int]:
    """(rows, distinct timestamps) of ``device`` in the central store."""
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("SELECT count(*), count(DISTINCT ts) FROM readings WHERE device = ?",
                             (device,)).fetchone()
    except sqlite3.OperationalError:
        return 0, 0


@pytest.mark.parametrize("outage", ["central down 60 s, then the site broker restarted",
                                    "the site broker killed with SIGKILL"])
def test_outages_lose_nothing_and_store_nothing_twice(tmp_path, processes, outage):
    certs = tmp_path / "certs"
    subprocess.run(["sh", str(REPO / "mosquitto" / "make-test-ca.sh"), str(certs)], check=True,
                   capture_output=True)
    passwd, secrets = tmp_path / "passwd", tmp_path / "secrets"
    users = make_users(["site-home7", "central-store"], passwd, secrets)
    acl = tmp_path / "acl"  # the central side: each user may use its site's prefix only
    acl.write_text("user site-home7\ntopic readwrite home7/#\n\nuser central-store\ntopic readwrite home7/#\n")
    tls_port = free_port()
    central = production_broker(tmp_path / "central", passwd, acl, extra=(
        f"\nlistener {tls_port} 127.0.0.1\ncertfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
        f"cafile {certs}/ca.crt\n")).start()
    site = Broker(tmp_path / "site", extra="\n" + site_bridge(tls_port, certs / "ca.crt",
                                                            users["site-home7"], "home7")).start()

    dataset = tmp_path / "days.txt"
    generate_year(2024, dataset, seed=9, start=date(2024, 3, 4), end=date(2024, 3, 6))
    site_cfg = write_config(tmp_path / "site.toml", site, f"""
        [producer.meter]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        speed = {1200 if outage.startswith("central") else 3000}
        batch = 1
        start = "2024-03-04T00:00"
        end = "2024-03-05T09:20"
        """)  # 2,000 minutes at 20 (or 50) a second
    db = tmp_path / "central.db"
    central_cfg = write_config(tmp_path / "central.toml", central, f"""
        [consumer.store]
        type = "store"
        sink = "sqlite:///{db}"
        """, mqtt=f'topic_prefix = "home7/"\nusername = "central-store"\n'
                  f'password_file = "{secrets / "central-store.pass"}"\n')
    store = processes(central_cfg, "store")
    store.wait_output("subscribed to")
    producer = processes(site_cfg, "meter")

    def count() -> int:
        return stored(db, "meter")[1]

    deadline = time.monotonic() + 30
    while count() < 50:  # the bridge carries readings up
        assert time.monotonic() < deadline, f"nothing reached the central store: {site.log.read_text()[-2000:]}"
        time.sleep(0.2)
    down_at = count()
    if outage.startswith("central"):
        central.stop()
        time.sleep(60)  # the producer never stops; the site broker queues for the bridge
        central.start()
        time.sleep(8)
        site.restart()  # mid-stream, with the bridge's queue and the producer's session on disk
    else:
        # No clean shutdown: the site broker loses what it took since its last autosave; the producer
        # sends again what the broker acknowledged within its resend window ([mqtt] resend_window_s).
        time.sleep(5)
        site.kill()
        time.sleep(2)
        site.start()
    deadline = time.monotonic() + 180
    while count() < READINGS and time.monotonic() < deadline:
        time.sleep(0.5)
    rows, distinct = stored(db, "meter")
    assert producer.alive() and store.alive()
    assert down_at < 1000, "the outage must fall in the middle of the stream"
    assert distinct == READINGS, f"{READINGS - distinct} readings lost"
    assert rows == READINGS, f"{rows - distinct} readings stored twice"
    central.stop()
    site.stop()
