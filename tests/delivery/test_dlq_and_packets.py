"""The DLQ can never jam the broker, and no publish is ever over the broker's packet limit."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

import orjson
import pytest

from bus.config import MqttConfig
from bus.envelope import encode_batch
from bus.mqtt import BusClient, PacketTooLarge
from tests.conftest import unique
from tests.delivery.common import dlq, expected_keys, report, stored, wait_until, write_dataset
from tests.support.mosquitto import Broker
from tests.support.processes import run_cli, write_config

T0 = 1_704_067_200_000


def _items(n: int, start: int = T0) -> list[dict]:
    return [{"ts": start + i * 60_000, "seq": i + 1, "metrics": {"power_w": 100.0 + i}} for i in range(n)]


def test_a_huge_bad_message_becomes_a_small_dead_letter_and_the_store_goes_on(broker, processes,
                                                                              collector_factory, tmp_path):
    name, device = unique("store"), unique("dev")
    db = tmp_path / "w.db"
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [consumer.{name}]
        type = "store"
        sink = "sqlite:///{db}"
        """)
    store = processes(cfg, name)
    store.wait_output("subscribed to +/+/reading")
    c = collector_factory(broker, f"wattbus/dlq/{name}")
    junk = bytes(range(32)) * 8000 + b"\xff\xfe" * 1000  # 258 kB of control bytes and invalid UTF-8
    c.publish(f"hhpc/{device}/reading", junk)
    for i in range(3):
        c.publish(f"hhpc/{device}/reading", encode_batch("hhpc", device, _items(50, T0 + i * 50 * 60_000)))
    wait_until(lambda: stored(db, device)[0] == 150, 30, "150 later readings stored")
    c.wait_for(lambda: len(dlq(c, name)) == 1, 10, "the dead letter")
    raw = c.on(f"wattbus/dlq/{name}")[0][1]
    doc = orjson.loads(raw)
    report("258 kB bad message", sent=150, stored=stored(db, device)[0], dlq=1, dead_letter_bytes=len(raw))
    assert doc["payload_bytes"] == len(junk) and doc["payload_truncated"] is True
    assert doc["payload_sha256"] == hashlib.sha256(junk).hexdigest()
    assert doc["payload"] == junk[:4096].decode("utf-8", "backslashreplace")
    assert len(raw) < 32_000 and "malformed JSON" in doc["reason"]
    assert "lost connection" not in store.output()


def test_every_publish_is_checked_against_the_limit_the_broker_announced(tmp_path):
    broker = Broker(tmp_path / "mosquitto", extra="max_packet_size 20000\n").start()
    client = BusClient(MqttConfig(host=broker.host, port=broker.port), unique("limit"),
                       log=logging.getLogger("test"))
    try:
        client.start()
        assert client.wait_connected(10)
        assert client.max_packet_size == 20000  # from the CONNACK, below the config's 262144
        with pytest.raises(PacketTooLarge, match="exceeds the broker's limit of 20000"):
            client.publish("hhpc/x/reading", b"x" * 20000)
        info = client.publish("hhpc/x/reading", b"x" * client.room("hhpc/x/reading"))
        info.wait_for_publish(5)
        assert info.is_published() and client.connected.is_set()  # the largest allowed packet went through
    finally:
        client.close()
        broker.kill()


@pytest.mark.slow
def test_a_replay_batch_larger_than_a_message_is_split_to_fit_and_all_of_it_stored(tmp_path, processes):
    broker = Broker(tmp_path / "mosquitto", extra="max_packet_size 20000\n").start()
    try:
        dataset = write_dataset(tmp_path / "hhpc.txt", datetime(2024, 5, 1), 3000)
        db = tmp_path / "w.db"
        cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
            [producer.splitter]
            type = "hhpc"
            dataset = "{dataset}"
            mode = "replay"
            batch = 3000

            [consumer.store]
            type = "store"
            sink = "sqlite:///{db}"
            """)
        from tests.support.mqtt import Collector

        watch = Collector(broker, "hhpc/splitter/reading")
        store = processes(cfg, "store")
        store.wait_output("subscribed to +/+/reading")
        producer = processes(cfg, "splitter")
        expected = expected_keys(dataset)
        wait_until(lambda: stored(db, "splitter")[0] >= len(expected), 60, "the whole replay stored")
        sizes = [len(p) for _, p, _ in watch.on("hhpc/splitter/reading")]
        watch.close()
        rows, distinct, keys = stored(db, "splitter")
        report("3000-reading batch, 20 kB packet limit", sent=len(expected), stored=rows,
               lost=len(set(expected) - set(keys)), duplicated=rows - distinct, messages=len(sizes))
        assert keys == expected and rows == distinct
        assert len(sizes) > 1 and max(sizes) <= 20000
        assert "lost connection" not in producer.output() + store.output()
    finally:
        broker.kill()


def test_batch_sizes_a_message_cannot_carry_are_config_errors(tmp_path, broker):
    cfg = write_config(tmp_path / "wattbus.toml", broker, """
        [producer.big]
        type = "hhpc"
        batch = 100000

        [consumer.store]
        type = "store"
        batch_max = 10000000
        """)
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "producer.big.batch: must be 1..6528 readings" in r.stderr
    assert "consumer.store.batch_max: must be 1..652800" in r.stderr
    assert "max_packet_size" in r.stderr
