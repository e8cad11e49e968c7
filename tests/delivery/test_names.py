"""Names are checked where they enter: config, topics, payloads; the exporter cannot be flooded."""

from __future__ import annotations

import logging
import time
import urllib.request

import orjson
import pytest

from bus.config import load_config
from bus.envelope import EnvelopeError, decode, encode_reading, is_name
from bus.mqtt import BusClient
from bus.producer import ProducerContext
from bus.topics import check_name
from tests.conftest import unique
from tests.delivery.common import dlq, wait_until
from tests.support.ports import free_port
from tests.support.processes import run_cli, write_config
from wattbus.plugins import resolve


@pytest.mark.parametrize("name", ["a/b", "#", "+", "House", "-x", "", "x" * 65, "house\n", "ho use", "é"])
def test_a_bad_name_is_refused_everywhere_it_can_enter(name):
    assert not is_name(name)
    with pytest.raises(ValueError, match="not allowed"):
        check_name(name)
    with pytest.raises(EnvelopeError, match="device"):
        decode(encode_reading("hhpc", name, 1_704_067_200_000, {}))


@pytest.mark.parametrize("device", ["a/b", "#", "Haus"])
def test_a_bad_device_name_in_the_config_is_a_config_error_saying_what_is_allowed(device, tmp_path, broker):
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.house]
        type = "hhpc"
        device = "{device}"
        """)
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "producer.house.device" in r.stderr and "is not allowed" in r.stderr
    assert "lowercase letters a-z, digits 0-9, '_' and '-'" in r.stderr


def test_a_share_group_that_is_not_a_name_is_a_config_error(tmp_path, broker):
    cfg = write_config(tmp_path / "wattbus.toml", broker, """
        [consumer.store]
        type = "store"
        group = "a/#"
        """)
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "consumer.store.group: 'a/#' is not allowed" in r.stderr


def test_a_process_name_with_a_trailing_newline_is_a_config_error(tmp_path, broker):
    cfg = write_config(tmp_path / "wattbus.toml", broker, """
        [producer."house\\n"]
        type = "hhpc"
        """)
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "process name 'house\\n' is not allowed" in r.stderr


def test_a_plugin_publishing_under_a_bad_device_name_dead_letters_it_and_goes_on(broker, tmp_path,
                                                                                collector_factory):
    cfg = load_config(write_config(tmp_path / "w.toml", broker, ""), resolve)
    name = unique("prod")
    c = collector_factory(broker, f"wattbus/dlq/{name}", "hhpc/#")
    client = BusClient(cfg.mqtt, name, log=logging.getLogger(name))
    ctx = ProducerContext(cfg, name, logging.getLogger(name), client, source="hhpc")
    client.start()
    try:
        ctx.publish_reading("#", {"power_w": 1.0})
        ctx.publish_reading("a/b", {"power_w": 1.0})
        ctx.publish_reading("ok", {"power_w": float("nan")})
        ctx.publish_reading("ok", {"energy_import_wh": -5.0})
        ctx.publish_reading("ok", {"power_w": 1e308})
        ctx.publish_reading("ok", {"power_w": 1.0}, ts=0)
        ctx.publish_reading("ok", {"power_w": 230.0})
        c.wait_for(lambda: len(dlq(c, name)) == 6, 10, "six dead letters")
        c.wait_for(lambda: len(c.on("hhpc/ok/reading")) == 1, 10, "the one good reading")
        reasons = [d["reason"] for d in dlq(c, name)]
        assert "'#' is not allowed" in reasons[0] and "'a/b' is not allowed" in reasons[1]
        assert "power_w = nan" in reasons[2] and "counter energy_import_wh is negative" in reasons[3]
        assert "1e+308" in reasons[4] and "before [readings] min_ts" in reasons[5]
        assert orjson.loads(c.on("hhpc/ok/reading")[0][1])["metrics"] == {"power_w": 230.0}
        assert ctx.counters.get("readings_rejected") == 4 and ctx.counters.get("bad_device_names") == 2
    finally:
        ctx.stopping.set()
        client.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _series(text: str, name: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(name + "{")]


@pytest.mark.slow
def test_the_exporter_makes_series_only_for_devices_with_readings_caps_them_and_is_not_frozen_by_the_future(
        broker, processes, collector_factory, tmp_path):
    name, port = unique("exp"), free_port()
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [consumer.{name}]
        type = "exporter"
        listen = "127.0.0.1"
        port = {port}
        max_series = 3
        """)
    c = collector_factory(broker, f"wattbus/{name}/health")
    flood = unique("flood")
    # what a hostile or broken publisher could leave retained: a health document naming 15,000 devices
    # (as much as a message can carry),
    # and statuses of devices nobody reads
    c.publish(f"wattbus/{flood}/health", orjson.dumps({"devices": [f"hhpc/d{i}" for i in range(15_000)]}),
              retain=True)
    for i in range(200):
        c.publish(f"hhpc/{flood}{i}/status", b"online", retain=True)
    exporter = processes(cfg, name)
    exporter.wait_output("subscribed to +/+/reading")
    wait_until(lambda: _scrape(port) is not None, 10, "the exporter to serve")
    time.sleep(1)
    assert _series(_scrape(port), "wattbus_up") == []
    now = int(time.time() * 1000)
    devs = [unique("dev") for _ in range(5)]
    for d in devs:
        c.publish(f"hhpc/{d}/reading", encode_reading("hhpc", d, now - 60_000, {"power_w": 100.0}))
    wait_until(lambda: len(_series(_scrape(port), "wattbus_up")) == 3, 10, "three series")
    text = _scrape(port)
    assert "wattbus_exporter_refused_devices_total 2.0" in text
    # a clock 200 s ahead (within [readings] max_future_s) is shown, and does not hide the next reading
    d = devs[0]
    c.publish(f"hhpc/{d}/reading", encode_reading("hhpc", d, now + 200_000, {"power_w": 999.0}))
    shown = f'wattbus_power_watts{{device="{d}",source="hhpc"}}'
    wait_until(lambda: f"{shown} 999.0" in _scrape(port), 10, "999 W")
    c.publish(f"hhpc/{d}/reading", encode_reading("hhpc", d, int(time.time() * 1000) + 1000,
                                                   {"power_w": 5.0}))
    wait_until(lambda: f"{shown} 5.0" in _scrape(port), 10,
               "the next real reading replacing the future one")
    c.publish(f"wattbus/{flood}/health", b"", retain=True)
    for i in range(200):
        c.publish(f"hhpc/{flood}{i}/status", b"", retain=True)
    c.wait_for(lambda: c.on(f"wattbus/{name}/health"), 40, "exporter health")
    doc = orjson.loads(c.on(f"wattbus/{name}/health")[-1][1])
    assert doc["rss_mb"] <= doc["rss_peak_mb"] < 120
