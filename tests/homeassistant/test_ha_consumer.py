"""The homeassistant consumer as a real process on a real Mosquitto: what it publishes, when, what it clears.

Each test has its own broker, so retained discovery from one test never reaches another.
"""

from __future__ import annotations

import time
from textwrap import dedent

import orjson
import pytest

from bus import envelope, rollup
from tests.homeassistant.ha_support import latest, reading

pytestmark = pytest.mark.slow

DEV_DOC = "homeassistant/device/wattbus_{}_{}/config"


def write(path, broker, body: str, prefix: str = ""):
    path.write_text(
        dedent(f"""\
        [mqtt]
        host = "{broker.host}"
        port = {broker.port}
        keepalive = 5
        topic_prefix = "{prefix}"

        [site]
        timezone = "Europe/Brussels"
        """)
        + dedent(body)
    )
    return path


def docs(c, topic: str) -> list[dict | None]:
    """Every message on a discovery topic, None for an empty (clearing) one."""
    return [orjson.loads(p) if p else None for _, p, _ in c.on(topic)]


def start(processes, cfg, name: str = "ha"):
    p = processes(cfg, name)
    p.wait_output("subscribed to +/+/reading")
    return p


def test_discovery_state_availability_and_a_restart_that_republishes_nothing(
    own_broker, processes, collector_factory, tmp_path
):
    c = collector_factory(own_broker, "homeassistant/#", "ha/#", "wattbus/ha/status")
    c.publish("p1/mains/status", b"online", retain=True)
    c.publish(
        "wattbus/meter1/health", orjson.dumps({"kind": "producer", "devices": ["p1/mains"]}), retain=True
    )
    cfg = write(
        tmp_path / "wattbus.toml",
        own_broker,
        """
        [consumer.ha]
        type = "homeassistant"
        min_interval = 0.2
        """,
    )
    ha = start(processes, cfg)
    now = int(time.time() * 1000)
    batch = envelope.encode_batch(
        "p1",
        "mains",
        [
            {"ts": now - 2000, "seq": 1, "metrics": {"power_w": 100.0, "energy_import_wh": 1000.0}},
            {"ts": now - 1000, "seq": 2, "metrics": {"power_w": 120.0, "energy_import_wh": 1000.5}},
            {"ts": now, "seq": 3, "metrics": {"power_w": 90.0, "energy_import_wh": 1001.0}},
        ],
    )
    c.publish("p1/mains/reading", batch)
    c.wait_for(lambda: latest(c, "ha/p1/mains/state"), what="the device's state")
    state = latest(c, "ha/p1/mains/state")
    assert {k: v for k, v in state.items() if k != "ts"} == {"power_w": 90.0, "energy_import_wh": 1001.0}
    assert state["ts"].startswith(time.strftime("%Y-"))
    [doc] = docs(c, DEV_DOC.format("p1", "mains"))
    assert set(doc["components"]) == {"power_w", "energy_import_wh", "last_reading"}  # nothing never sent
    assert doc["availability"] == [
        {"topic": "p1/mains/status"},
        {"topic": "wattbus/meter1/status"},
        {"topic": "wattbus/ha/status"},
    ]
    assert doc["availability_mode"] == "all" and doc["state_topic"] == "ha/p1/mains/state"
    uids = {k: v["unique_id"] for k, v in doc["components"].items()}
    # retained, as a new subscriber (HA starting later) sees it
    late = collector_factory(own_broker, "homeassistant/#", "ha/#")
    late.wait_for(
        lambda: late.on(DEV_DOC.format("p1", "mains")) and late.on("ha/p1/mains/state"), what="retained"
    )
    assert late.on(DEV_DOC.format("p1", "mains"))[-1][2] and late.on("ha/p1/mains/state")[-1][2]

    assert ha.terminate() == 0
    c.wait_for(lambda: c.on("wattbus/ha/status")[-1][1] == b"offline", what="offline: HA shows unavailable")
    start(processes, cfg)
    c.publish("p1/mains/reading", reading("p1", "mains", now + 1000, {"power_w": 80.0}, seq=4))
    c.wait_for(lambda: latest(c, "ha/p1/mains/state")["power_w"] == 80.0, what="the state after a restart")
    assert latest(c, "ha/p1/mains/state")["energy_import_wh"] == 1001.0  # every entity keeps its key
    assert len(docs(c, DEV_DOC.format("p1", "mains"))) == 1  # same document: not published again
    c.publish(
        "p1/mains/reading", reading("p1", "mains", now + 2000, {"power_w": 80.0, "voltage_v": 231.0}, seq=5)
    )
    c.wait_for(lambda: len(docs(c, DEV_DOC.format("p1", "mains"))) == 2, what="discovery with the new metric")
    doc = docs(c, DEV_DOC.format("p1", "mains"))[-1]
    assert set(doc["components"]) == {"power_w", "energy_import_wh", "voltage_v", "last_reading"}
    assert {k: doc["components"][k]["unique_id"] for k in uids} == uids


def test_at_most_one_state_per_interval_and_the_last_counter_value_is_never_skipped(
    own_broker, processes, collector_factory, tmp_path
):
    c = collector_factory(own_broker, "ha/#")
    cfg = write(
        tmp_path / "wattbus.toml",
        own_broker,
        """
        [consumer.ha]
        type = "homeassistant"
        min_interval = 3
        """,
    )
    ha = start(processes, cfg)
    now = int(time.time() * 1000)

    def send(i: int) -> None:
        c.publish(
            "sim/kili/reading",
            reading("sim", "kili", now + i * 100, {"energy_import_wh": 500.0 + i}, seq=i + 1),
        )

    send(0)
    c.wait_for(lambda: c.on("ha/sim/kili/state"), what="the first state, at once")
    for i in range(1, 40):
        send(i)
    # 39 readings within the interval: one more state, when the interval ends, with the latest counter value
    c.wait_for(
        lambda: len(c.on("ha/sim/kili/state")) == 2, what="the pending state at the end of the interval"
    )
    states = [orjson.loads(p) for _, p, _ in c.on("ha/sim/kili/state")]
    assert [s["energy_import_wh"] for s in states] == [500.0, 539.0]
    send(40)
    send(41)
    assert ha.terminate() == 0  # the interval is not over: the pending latest value goes out at stop
    states = [orjson.loads(p) for _, p, _ in c.on("ha/sim/kili/state")]
    assert [s["energy_import_wh"] for s in states] in ([500.0, 539.0, 541.0], [500.0, 539.0, 540.0, 541.0])


def test_ha_birth_republishes_discovery_and_hostile_status_payloads_change_nothing(
    own_broker, processes, collector_factory, tmp_path
):
    c = collector_factory(own_broker, "homeassistant/device/#", "ha/#", "wattbus/dlq/#")
    cfg = write(
        tmp_path / "wattbus.toml",
        own_broker,
        """
        [consumer.ha]
        type = "homeassistant"
        min_interval = 0.2
        """,
    )
    ha = start(processes, cfg)
    now = int(time.time() * 1000)
    topic = DEV_DOC.format("hhpc", "house")
    c.publish("hhpc/house/reading", reading("hhpc", "house", now, {"power_w": 1.0}))
    c.wait_for(lambda: len(c.on(topic)) == 1, what="discovery")
    for hostile in (
        b"\xff\xfe\x00",
        b"online\n",
        b"ONLINE",
        b"x" * 200_000,  # under the broker's 256 KiB packet limit (a larger one costs the sender its connection)
        b'{"online": true}',
        b"offline",
    ):
        c.publish("homeassistant/status", hostile)
    c.publish("hhpc/house/reading", reading("hhpc", "house", now + 1, {"power_w": 2.0}, seq=2))
    c.wait_for(lambda: latest(c, "ha/hhpc/house/state")["power_w"] == 2.0, what="the next state")
    time.sleep(0.5)  # what a wrongly taken payload would have caused would be out by now (interval 0.2 s)
    assert len(c.on(topic)) == 1
    c.publish("homeassistant/status", b"online")
    c.wait_for(lambda: len(c.on(topic)) == 2, what="discovery again after HA's birth message")
    assert c.on(topic)[-1][1] == c.on(topic)[0][1]
    assert ha.alive()
    ha.terminate()
    assert "ignored 3-byte payload on homeassistant/status" in ha.output()


def test_a_restart_with_a_changed_config_clears_what_must_go(
    own_broker, processes, collector_factory, tmp_path
):
    """Excluded, producer no longer configured, silent past forget_after, relay removed, layout switched."""
    c = collector_factory(own_broker, "homeassistant/#", "ha/#")
    for process, device in (("meter1", "p1/keep"), ("oldproc", "p1/gone")):
        c.publish(
            f"wattbus/{process}/health", orjson.dumps({"kind": "producer", "devices": [device]}), retain=True
        )
    base = """
        [producer.meter1]
        type = "hhpc"
        dataset = "x.txt"

        [consumer.ha]
        type = "homeassistant"
        min_interval = 0.1
        """
    cfg = write(
        tmp_path / "wattbus.toml",
        own_broker,
        base
        + """
        prune_unconfigured = false
        relays = [{name = "ev"}, {name = "boiler", title = "Boiler", process = "relays"}]
        """,
    )
    ha = start(processes, cfg)
    now = int(time.time() * 1000)
    forty_days = 40 * 86_400_000
    for source, device, ts in (
        ("p1", "keep", now),
        ("p1", "gone", now),
        ("hhpc", "hidden", now),
        ("sim", "quiet", now - forty_days),
    ):
        c.publish(f"{source}/{device}/reading", reading(source, device, ts, {"power_w": 5.0}))
    every = [
        DEV_DOC.format(s, d)
        for s, d in (("p1", "keep"), ("p1", "gone"), ("hhpc", "hidden"), ("sim", "quiet"))
    ]
    c.wait_for(lambda: all(c.on(t) and c.on(t)[-1][1] for t in every), what="four devices discovered")
    c.wait_for(lambda: c.on("homeassistant/device/wattbus_relay_boiler/config"), what="relay discovery")
    boiler = docs(c, "homeassistant/device/wattbus_relay_boiler/config")[-1]
    assert boiler["device"]["name"] == "Boiler"
    assert {"topic": "wattbus/relays/status"} in boiler["availability"]
    assert {c["platform"] for c in boiler["components"].values()} == {"switch", "select"}
    ha.terminate()

    cfg = write(
        tmp_path / "wattbus.toml",
        own_broker,
        base
        + """
        exclude = ["hhpc/*"]
        forget_after = 2592000
        discovery = "entity"
        relays = [{name = "ev"}]
        """,
    )
    start(processes, cfg)
    for topic, name in zip(every[1:], ("gone", "hidden", "quiet")):
        c.wait_for(lambda: c.on(topic)[-1][1] == b"" and c.on(topic)[-1][0] == topic, what=f"{name} cleared")
    c.wait_for(
        lambda: c.on("homeassistant/device/wattbus_relay_boiler/config")[-1][1] == b"", what="relay cleared"
    )
    for device in ("p1/gone", "hhpc/hidden", "sim/quiet"):
        c.wait_for(lambda: c.on(f"ha/{device}/state")[-1][1] == b"", what=f"{device} state cleared")
    # the kept device moves to the per-entity layout, same unique_ids
    c.wait_for(lambda: c.on(every[0])[-1][1] == b"", what="old layout cleared")
    entity = "homeassistant/sensor/wattbus_p1_keep/power_w/config"
    c.wait_for(lambda: c.on(entity), what="per-entity document")
    one = orjson.loads(c.on(entity)[-1][1])
    assert one["unique_id"] == "wattbus_p1_keep_power_w" and one["state_topic"] == "ha/p1/keep/state"
    assert {"topic": "wattbus/meter1/status"} in one["availability"]
    c.wait_for(lambda: c.on("homeassistant/switch/wattbus_relay_ev/output/config"), what="relay per entity")


def test_device_cap_buckets_and_hostile_aggregates(own_broker, processes, collector_factory, tmp_path):
    c = collector_factory(own_broker, "homeassistant/#", "ha/#", "wattbus/dlq/ha")
    cfg = write(
        tmp_path / "wattbus.toml",
        own_broker,
        """
        [consumer.ha]
        type = "homeassistant"
        min_interval = 0.1
        max_devices = 3
        """,
    )
    now = int(time.time() * 1000)
    day = now - now % 86_400_000
    site = rollup.Bucket(
        source="site",
        device="home",
        period="1d",
        start=day,
        end=day + 86_400_000,
        label="t",
        solar_wh=4200.0,
        self_sufficiency_pct=61.5,
        cost=1.25,
        currency="EUR",
    )
    c.publish("agg/site/home/1d", rollup.encode(site), retain=True)
    c.publish("agg/p1/mains/1d", b'{"v": 1, "source": "p1"', retain=True)
    c.publish("agg/p1/other/1d", rollup.encode(site), retain=True)
    ha = start(processes, cfg)
    c.wait_for(lambda: latest(c, "ha/site/home/state"), what="today's site balance")
    state = latest(c, "ha/site/home/state")
    assert (state["today_solar_wh"], state["today_self_sufficiency_pct"], state["today_cost"]) == (
        4200.0,
        61.5,
        1.25,
    )
    assert state["today_start"].endswith(("+01:00", "+02:00"))
    doc = docs(c, DEV_DOC.format("site", "home"))[-1]
    assert set(doc["components"]) == {"today_solar_wh", "today_self_sufficiency_pct", "today_cost"}
    assert doc["components"]["today_cost"]["unit_of_measurement"] == "EUR"
    c.wait_for(lambda: len(c.on("wattbus/dlq/ha")) == 2, what="two dead letters")
    reasons = sorted(orjson.loads(p)["reason"] for _, p, _ in c.on("wattbus/dlq/ha"))
    assert reasons[0].startswith("bucket source/device/period do not match") and reasons[1].startswith(
        "not a bucket"
    )

    for i in range(6):
        c.publish(f"sim/m{i}/reading", reading("sim", f"m{i}", now, {"power_w": float(i)}))
    ha.wait_output("more devices than max_devices = 3")
    time.sleep(0.5)
    shown = {t for t, p, _ in c.on("homeassistant/device/+/config") if p}
    assert len(shown) == 3  # the site and two meters
    assert ha.alive()


def test_topic_prefix_stays_off_homeassistant_topics(own_broker, processes, collector_factory, tmp_path):
    c = collector_factory(own_broker, "homeassistant/#", "site1/#")
    cfg = write(
        tmp_path / "wattbus.toml",
        own_broker,
        """
        [consumer.ha]
        type = "homeassistant"
        min_interval = 0.1
        """,
        prefix="site1/",
    )
    start(processes, cfg)
    c.publish("site1/p1/mains/status", b"online", retain=True)
    c.publish("site1/p1/mains/reading", reading("p1", "mains", int(time.time() * 1000), {"power_w": 7.0}))
    topic = "homeassistant/device/wattbus_site1_p1_mains/config"
    c.wait_for(lambda: c.on(topic) and latest(c, "site1/ha/p1/mains/state"), what="discovery and state")
    doc = docs(c, topic)[-1]
    assert doc["state_topic"] == "site1/ha/p1/mains/state"
    assert doc["availability"] == [{"topic": "site1/p1/mains/status"}, {"topic": "site1/wattbus/ha/status"}]
    assert doc["components"]["power_w"]["unique_id"] == "wattbus_site1_p1_mains_power_w"
    c.publish("homeassistant/status", b"online")
    c.wait_for(lambda: len(c.on(topic)) == 2, what="HA's birth message heard outside the prefix")
