"""A publish the broker refuses (MQTT v5 reason code >= 0x80) is not a delivered one.

A real Mosquitto with a password file and an ACL that does not let user ``house`` write its readings: the
producer logs which topic the broker refused and why, counts it in health, keeps the readings queued and
tries again with a growing pause; once the ACL is fixed (and reloaded with SIGHUP, as an administrator
would), every reading arrives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.delivery.common import expected_keys, report, stored, wait_until, write_dataset
from tests.support.mosquitto import Broker
from tests.support.processes import write_config

DENY = """\
user house
topic readwrite wattbus/#
topic readwrite hhpc/house/status
user store
topic readwrite wattbus/#
topic read +/+/reading
user watch
topic read #
"""
ALLOW = DENY.replace("topic readwrite hhpc/house/status", "topic readwrite hhpc/house/#")


def _user(passwd, user: str, tmp_path) -> str:
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, f"{user}-secret"], check=True,
                   capture_output=True)
    (tmp_path / f"{user}.pass").write_text(f"{user}-secret\n")
    return str(tmp_path / f"{user}.pass")


def _config(path, broker, user: str, password_file: str, body: str):
    cfg = write_config(path, broker, body)
    cfg.write_text(cfg.read_text().replace("keepalive = 5", f'keepalive = 5\nusername = "{user}"\n'
                                                            f'password_file = "{password_file}"'))
    return cfg


@pytest.mark.slow
def test_readings_the_broker_refuses_stay_queued_are_reported_and_arrive_once_allowed(tmp_path, processes):
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    passwd.touch()
    acl.write_text(DENY)
    broker = Broker(tmp_path / "mosquitto",
                    extra=f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n")
    files = {u: _user(passwd, u, tmp_path) for u in ("house", "store", "watch")}
    broker.start()
    try:
        dataset = write_dataset(tmp_path / "hhpc.txt", datetime(2024, 2, 1), 240)
        db = tmp_path / "w.db"
        store_cfg = _config(tmp_path / "store.toml", broker, "store", files["store"], f"""
            [consumer.store]
            type = "store"
            sink = "sqlite:///{db}"
            """)
        house_cfg = _config(tmp_path / "house.toml", broker, "house", files["house"], f"""
            [producer.house]
            type = "hhpc"
            dataset = "{dataset}"
            mode = "replay"
            batch = 60
            """)
        health: list[dict] = []
        watch = paho.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=paho.MQTTv5)
        watch.username_pw_set("watch", "watch-secret")
        watch.on_message = lambda c, u, m: health.append(orjson.loads(m.payload))
        watch.connect(broker.host, broker.port)
        watch.loop_start()
        watch.subscribe("wattbus/house/health", qos=1)

        processes(store_cfg, "store").wait_output("subscribed to +/+/reading")
        house = processes(house_cfg, "house")
        house.wait_output("refused the publish to hhpc/house/reading: Not authorized (0x87)")
        house.wait_output("replay of")  # the plugin is done; nothing was delivered
        time.sleep(2)
        assert stored(db, "house")[0] == 0
        wait_until(lambda: health and health[-1]["counters"].get("publish_refused", 0) >= 1, 10,
                   "publish_refused in health")
        refused_health = health[-1]
        assert refused_health["queued"] + refused_health["inflight"] >= 1

        acl.write_text(ALLOW)
        os.kill(broker.proc.pid, signal.SIGHUP)  # mosquitto reloads its ACL
        expected = expected_keys(dataset)
        wait_until(lambda: stored(db, "house")[0] >= len(expected), 90, "every refused reading, once allowed")
        rows, distinct, keys = stored(db, "house")
        report("publish refused by the ACL, then allowed", sent=len(expected), stored=rows,
               lost=len(set(expected) - set(keys)), duplicated=rows - distinct,
               refused=int(refused_health["counters"]["publish_refused"]))
        assert keys == expected
        watch.loop_stop()
        watch.disconnect()
    finally:
        broker.kill()
