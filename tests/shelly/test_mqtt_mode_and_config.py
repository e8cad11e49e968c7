"""``mode = "mqtt"`` (the device's own status topics, NotifyStatus deltas) and the config's checks."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from shelly_support import JUNE_MORNING, shelly_context, _ImmediateSaver

from bus import envelope
from bus.clock import EmulatedClock
from bus.config import ConfigError, parse_config
from producers.shelly import Config
from producers.shelly.emulator import EmulatedShelly
from producers.shelly.follower import MqttFollower
from tests.conftest import unique
from tests.support.processes import write_config
from wattbus.plugins import resolve

PREFIX = "shellypro3em-fce8c0dba900"


def test_follows_status_topics_and_merges_notify_deltas_over_the_last_full_status():
    clock = EmulatedClock(JUNE_MORNING)
    emu = EmulatedShelly(role="grid", clock=clock)  # used as a model only: its status objects
    full = emu.rpc("Shelly.GetStatus", {})
    ctx = shelly_context(clock)
    spec = Config(type="shelly", device="mains", mode="mqtt", mqtt_prefix=PREFIX, interval=30).specs("mains")[0]
    follower = MqttFollower(ctx, spec, _ImmediateSaver(ctx), host_time=clock)

    def deliver(topic: str, obj) -> None:
        payload = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        for flt, cb in ctx.subscriptions.items():
            if flt.endswith("/#") or flt == topic or (flt.endswith("/+") and topic.rsplit("/", 1)[0] == flt[:-2]):
                cb(topic, payload)

    t0 = JUNE_MORNING
    ctx.at(t0 + 10, lambda: deliver(f"{PREFIX}/online", b"true"))
    ctx.at(t0 + 10, lambda: deliver(f"{PREFIX}/status/em:0", full["em:0"]))  # emdata not seen yet: no reading
    ctx.at(t0 + 40, lambda: deliver(f"{PREFIX}/status/emdata:0", full["emdata:0"]))
    delta = {"src": PREFIX, "dst": "x/events", "method": "NotifyStatus",
             "params": {"ts": t0 + 95.2, "em:0": {"id": 0, "a_act_power": 1234.5, "n_current": None},
                        "emdata:0": {"id": 0, "total_act": full["emdata:0"]["total_act"] + 7.5}}}
    ctx.at(t0 + 95, lambda: deliver(f"{PREFIX}/events/rpc", delta))
    ctx.at(t0 + 130, lambda: deliver(f"{PREFIX}/status/em:0", b"{not json"))
    ctx.stop_at = t0 + 200
    follower.run()

    assert set(ctx.subscriptions) == {f"{PREFIX}/status/+", f"{PREFIX}/events/rpc", f"{PREFIX}/online"}
    stamps = [r.ts // 1000 - t0 for r in ctx.readings]
    assert stamps == [60, 120], "one reading per interval with news; none before every component was seen"
    first, second = ctx.readings
    assert first.metrics["power_l1_w"] == pytest.approx(full["em:0"]["a_act_power"])
    assert first.metrics["current_n_a"] == pytest.approx(full["em:0"]["n_current"])
    assert second.metrics["power_l1_w"] == 1234.5, "the delta is laid over the full status"
    assert second.metrics["power_l2_w"] == pytest.approx(full["em:0"]["b_act_power"]), "unchanged keys are kept"
    assert "current_n_a" not in second.metrics, "a null in a delta removes the key"
    assert second.metrics["energy_import_wh"] == pytest.approx(full["emdata:0"]["total_act"] + 7.5)
    assert ctx.device_status == [("mains", True)]
    assert len(ctx.dead) == 1 and ctx.count("bad_messages") == 1


def parse(body: str, tmp_path: Path):
    return parse_config(body, tmp_path / "wattbus.toml", resolve)


def test_config_defaults_and_inheritance(tmp_path):
    (tmp_path / "pass").write_text("s3cret\n")
    app = parse(f"""
[producer.mains]
type = "shelly"
host = "192.168.1.20"

[producer.site]
type = "shelly"
interval = 10
password_file = "{tmp_path / 'pass'}"

[[producer.site.devices]]
device = "grid"
host = "192.168.1.20"

[[producer.site.devices]]
device = "pv"
host = "192.168.1.21"
role = "solar"
""", tmp_path)
    [mains] = app.producers["mains"].specs("mains")
    assert (mains.device, mains.role, mains.invert, mains.interval, mains.mode) == ("mains", "grid", False, 60.0, "poll")
    grid, pv = app.producers["site"].specs("site")
    assert (grid.device, grid.invert, grid.password, grid.interval) == ("grid", False, "s3cret", 10.0)
    assert (pv.device, pv.role, pv.invert, pv.host) == ("pv", "solar", True, "192.168.1.21")


@pytest.mark.parametrize("body,expected", [
    ('host = "h"\ninterval = 0.5', "producer.x.interval"),
    ('mode = "poll"', "producer.x.host: required in poll mode"),
    ('mode = "mqtt"', "producer.x.mqtt_prefix"),
    ('host = "h"\nrole = "wind"', "producer.x.role"),
    ('host = "h"\nintervall = 5', "unknown key; did you mean `interval`?"),
    ('host = "h"\npassword_file = "a"\npassword_env = "B"', "not both"),
    ('host = "h"\nmqtt_prefix = "a/#"', "producer.x.mqtt_prefix"),
])
def test_config_errors_name_the_key(tmp_path, body, expected):
    with pytest.raises(ConfigError) as err:
        parse(f'[producer.x]\ntype = "shelly"\n{body}\n', tmp_path)
    assert expected in str(err.value)
    assert "wattbus.toml:" in str(err.value)


def test_unreadable_password_file_is_a_config_error(tmp_path):
    cfg = Config(type="shelly", host="h", password_file=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="producer.mains.password_file: cannot read"):
        cfg.specs("mains")


def test_sample_config_is_valid(tmp_path):
    sample = Path(__file__).resolve().parents[2] / "producers" / "shelly" / "sample.toml"
    app = parse(sample.read_text(), tmp_path)
    assert {c.type for c in app.producers.values()} == {"shelly"}


@pytest.mark.slow
def test_mqtt_mode_follows_the_device_topics_outside_the_sites_topic_prefix(broker, processes,
                                                                            collector_factory, tmp_path):
    """The device publishes where it was told (``<its prefix>/status/...``), whatever the site calls itself:
    with ``topic_prefix = "site7/"`` the producer still hears it, and its readings go under the prefix."""
    device_prefix = unique("shellypro3em-")
    dev = unique("pv")
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.{dev}]
        type = "shelly"
        mode = "mqtt"
        mqtt_prefix = "{device_prefix}"
        interval = 1
        role = "grid"
        """, mqtt='topic_prefix = "site7/"')
    site = collector_factory(broker, f"site7/shelly/{dev}/#", f"shelly/{dev}/#", f"site7/{device_prefix}/#")
    device = collector_factory(broker)
    model = EmulatedShelly(role="grid", clock=EmulatedClock(JUNE_MORNING))  # its status objects only
    full = model.rpc("Shelly.GetStatus", {})
    p = processes(cfg, dev)
    p.wait_output("following the device's MQTT topics")

    def published_reading() -> bool:
        for comp in ("em:0", "emdata:0"):
            device.publish(f"{device_prefix}/status/{comp}", orjson.dumps(full[comp]))
        return bool(site.on(f"site7/shelly/{dev}/reading"))

    site.wait_for(published_reading, timeout=30, what="a reading under the site prefix")
    reading = envelope.decode(site.on(f"site7/shelly/{dev}/reading")[0][1])[0]
    assert reading.metrics["power_l1_w"] == pytest.approx(full["em:0"]["a_act_power"])
    assert reading.metrics["energy_import_wh"] == pytest.approx(full["emdata:0"]["total_act"], abs=0.01)
    assert not site.on(f"shelly/{dev}/#"), "readings go under topic_prefix"
    assert p.terminate() == 0
