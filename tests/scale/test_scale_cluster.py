"""A 3-node NATS cluster as the central broker (MQTT 3.1.1 over JetStream), one node killed mid-stream.

The wattbus processes speak ``[mqtt] protocol = "3.1.1"`` and know every node (``[mqtt] hosts``): a
replay producer publishes 1,000 readings over about 40 s, a store writes them, and one node is killed
with SIGKILL halfway through: the producer's node, the store's node, a node neither uses, or the node an
edge site's Mosquitto is bridged to (the project's bridge.conf, with the cluster's three addresses).
Whatever dies, every reading must be stored exactly once.
"""

from __future__ import annotations

import re
import time
from datetime import date
from pathlib import Path

import pytest

from producers.hhpc.generate import generate_year
from tests.scale.test_scale_bridge import BRIDGE, stored
from tests.support.mosquitto import Broker
from tests.support.nats import NatsCluster
from tests.support.processes import write_config

READINGS = 1000

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not NatsCluster.installed(), reason="nats-server is not installed "
                                 "(apt-get install nats-server)")]


def on_cluster(nodes: list, first: int) -> str:
    """``[mqtt]`` keys for a process that connects to node ``first`` and knows the others."""
    others = [n.address for i, n in enumerate(nodes) if i != first]
    return f'protocol = "3.1.1"\nhosts = {others!r}\n'.replace("'", '"')


def edge_bridge(nodes: list, site: str) -> str:
    """The project's bridge.conf for a cluster without TLS or MQTT 5: every node's address, 3.1.1."""
    text = BRIDGE.read_text()
    text = re.sub(r"(?m)^address\s+.*$", "address " + " ".join(n.address for n in nodes), text)
    text = re.sub(r"(?m)^bridge_protocol_version\s+.*$", "bridge_protocol_version mqttv311", text)
    text = re.sub(r"(?m)^(bridge_cafile|bridge_insecure|remote_username|remote_password)\s.*\n", "", text)
    return text.replace("home1", site)


@pytest.mark.parametrize("victim", ["the producer's node", "the store's node", "a node neither uses",
                                    "the node the edge bridge uses"])
def test_killing_a_node_mid_stream_loses_nothing(tmp_path: Path, processes, victim: str):
    cluster = NatsCluster(tmp_path / "nats").start()
    nodes = cluster.nodes
    try:
        dataset = tmp_path / "days.txt"
        generate_year(2024, dataset, seed=3, start=date(2024, 5, 6), end=date(2024, 5, 8))
        producer_body = f"""
            [producer.meter]
            type = "hhpc"
            dataset = "{dataset}"
            mode = "replay"
            speed = 1500
            batch = 1
            start = "2024-05-06T00:00"
            end = "2024-05-06T16:40"
            """  # 1,000 minutes at 25 a second
        db = tmp_path / "central.db"
        prefix = ""
        site = None
        if victim.startswith("the node the edge"):
            prefix = "home3/"
            site = Broker(tmp_path / "site", extra="\n" + edge_bridge(nodes, "home3")).start()
            producer_cfg = write_config(tmp_path / "site.toml", site, producer_body)
        else:
            producer_cfg = write_config(tmp_path / "producer.toml", nodes[0], producer_body,
                                        mqtt=on_cluster(nodes, 0))
        store_cfg = write_config(tmp_path / "store.toml", nodes[1], f"""
            [consumer.store]
            type = "store"
            sink = "sqlite:///{db}"
            """, mqtt=on_cluster(nodes, 1) + (f'topic_prefix = "{prefix}"\n' if prefix else ""))
        store = processes(store_cfg, "store")
        store.wait_output("subscribed to", timeout=30)
        producer = processes(producer_cfg, "meter")

        deadline = time.monotonic() + 60
        while stored(db, "meter")[1] < READINGS // 2:
            assert time.monotonic() < deadline, f"the stream did not get going: {store.output()[-2000:]}"
            time.sleep(0.1)
        killed_at = stored(db, "meter")[1]
        nodes[{"the producer's node": 0, "the store's node": 1, "a node neither uses": 2,
               "the node the edge bridge uses": 0}[victim]].kill()

        deadline = time.monotonic() + 120
        while stored(db, "meter")[1] < READINGS and time.monotonic() < deadline:
            time.sleep(0.5)
        rows, distinct = stored(db, "meter")
        assert producer.alive() and store.alive()
        assert killed_at < READINGS * 0.8, "the node must die in the middle of the stream"
        assert distinct == READINGS, f"{READINGS - distinct} readings lost: {store.output()[-1500:]}"
        assert rows == READINGS, f"{rows - distinct} readings stored twice"
        if victim in ("the producer's node", "the store's node"):
            survivor = (store if victim == "the store's node" else producer).output()
            assert "trying broker node" in survivor  # it moved to another node of the cluster
        if site is not None:
            site.stop()
    finally:
        cluster.stop()
