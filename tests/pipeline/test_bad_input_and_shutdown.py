"""Bad input goes to the DLQ with its reason and the consumer goes on; SIGTERM stops cleanly."""

from __future__ import annotations

import sqlite3
import time

import orjson

from tests.support.processes import write_config

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def test_bad_messages_land_in_the_dlq_and_the_store_keeps_going(broker, processes, collector_factory, tmp_path):
    db = tmp_path / "w.db"
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [consumer.dlqstore]
        type = "store"
        sink = "sqlite:///{db}"
        """)
    store = processes(cfg, "dlqstore")
    store.wait_output("subscribed to +/+/reading")
    c = collector_factory(broker, "wattbus/dlq/dlqstore")
    c.publish("hhpc/dlqdev/reading", b'{"v": 1, "source": "hhpc", "dev')                        # malformed JSON
    c.publish("hhpc/dlqdev/reading", orjson.dumps({"v": 1, "source": "hhpc", "device": "dlqdev",
                                                    "ts": "noon", "metrics": {}}))            # schema
    c.publish("hhpc/dlqdev/reading", orjson.dumps({"v": 1, "source": "hhpc", "device": "dlqdev",
                                                    "ts": T0, "metrics": {"power_kw": 1.0}}))  # unknown key
    c.publish("hhpc/otherdev/reading", orjson.dumps({"v": 1, "source": "hhpc", "device": "dlqdev",
                                                      "ts": T0, "metrics": {}}))              # wrong topic
    c.publish("hhpc/dlqdev/reading", orjson.dumps({"v": 1, "source": "hhpc", "device": "dlqdev",
                                                    "ts": T0 + 60_000, "metrics": {"power_w": 42.0}}))  # good
    c.wait_for(lambda: len(c.on("wattbus/dlq/dlqstore")) >= 4, what="4 dead letters")
    reasons = [orjson.loads(p)["reason"] for _, p, _ in c.on("wattbus/dlq/dlqstore")]
    assert "malformed JSON" in reasons[0]
    assert "$.ts" in reasons[1]
    assert "power_kw" in reasons[2] and "metrics.toml" in reasons[2]
    assert "does not match" in reasons[3]
    first = orjson.loads(c.on("wattbus/dlq/dlqstore")[0][1])
    assert first["topic"] == "hhpc/dlqdev/reading" and first["payload"].startswith('{"v": 1')

    deadline = time.monotonic() + 10
    while True:
        try:
            with sqlite3.connect(db) as conn:
                got = conn.execute("SELECT ts, power_w FROM readings WHERE device = 'dlqdev'").fetchall()
        except sqlite3.OperationalError:
            got = []
        if got or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == [(T0 + 60_000, 42.0)]
    assert store.alive()
    assert store.terminate() == 0


def test_sigterm_stops_a_producer_within_10_s_publishing_offline(broker, processes, collector_factory, tmp_path,
                                                                  seed_sample):
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.termhouse]
        type = "hhpc"
        dataset = "{seed_sample}"
        mode = "live"
        interval = 1
        """)
    c = collector_factory(broker, "wattbus/termhouse/#", "hhpc/termhouse/#")
    p = processes(cfg, "termhouse")
    c.wait_for(lambda: any(t == "wattbus/termhouse/status" and m == b"online" for t, m, _ in c.messages),
               what="online")
    c.wait_for(lambda: len(c.on("hhpc/termhouse/reading")) >= 1, what="a live reading")
    c.wait_for(lambda: len(c.on("wattbus/termhouse/health")) >= 1, what="a health document")
    health = orjson.loads(c.on("wattbus/termhouse/health")[-1][1])
    assert health["process"] == "termhouse" and "counters" in health
    t0 = time.monotonic()
    assert p.terminate(timeout=12) == 0
    assert time.monotonic() - t0 < 10
    c.wait_for(lambda: c.on("wattbus/termhouse/status")[-1][1] == b"offline", what="offline")
    assert c.on("hhpc/termhouse/status")[-1][1] == b"offline"
    # a live reading outside the dataset's ten minutes is published as missing, never skipped
    reading = orjson.loads(c.on("hhpc/termhouse/reading")[0][1])
    assert reading["quality"] == "missing" and reading["metrics"] == {}
