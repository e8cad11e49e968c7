"""The relay consumer as a process on the real broker, switching an emulated Tasmota relay over MQTT."""

from __future__ import annotations

import signal
import time

import orjson
import pytest

from bus import envelope
from consumers.relay.emulator_tasmota import TasmotaDevice
from tests.conftest import unique
from tests.support.processes import write_config

pytestmark = pytest.mark.slow


def _config(tmp_path, broker, topic: str, grid: str, **over) -> object:
    keys = {"load_w": 2000, "min_on": 0, "min_off": 0, "max_switches_per_hour": 0, "stale_after": 3,
            "manual_timeout": 0} | over
    relay = "\n".join(f"{k} = {orjson.dumps(v).decode()}" for k, v in keys.items())
    return write_config(tmp_path / "wattbus.toml", broker, f"""
        [consumer.relays]
        type = "relay"
        grid = "shelly/{grid}"
        tick = 0.1

        [consumer.relays.relay.ev]
        {relay}
        output = {{kind = "tasmota", topic = "{topic}", timeout = 1.0, retries = 1}}

        [consumer.relays.relay.ev.surplus]
        on_export_w = 1500
        off_import_w = 500
        on_delay = 1
        off_delay = 1
        """)


class Site:
    """The grid meter (readings at the real time) and a view of the relay's retained state."""

    def __init__(self, collector, grid: str):
        self.c, self.grid, self.seq = collector, grid, 0

    def power(self, watts: float) -> None:
        self.seq += 1
        self.c.publish(f"shelly/{self.grid}/reading",
                       envelope.encode_reading("shelly", self.grid, int(time.time() * 1000), {"power_w": watts},
                                               seq=self.seq))

    def state(self) -> dict | None:
        got = self.c.on("relay/ev/state")
        return orjson.loads(got[-1][1]) if got and got[-1][1] else None  # b"": cleared at the start

    def wait_state(self, what: str, pred, timeout: float = 15.0, feed: float | None = None) -> dict:
        """Wait until the state satisfies ``pred``; ``feed``: keep the grid meter sending that power."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if feed is not None:
                self.power(feed)
            s = self.state()
            if s is not None and pred(s):
                return s
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last state {self.state()}")


@pytest.fixture
def rig(broker, processes, collector_factory, tmp_path):
    def make(**over):
        topic, grid = unique("ev"), unique("mains")
        device = TasmotaDevice(broker.host, broker.port, topic).start()
        assert device.ready.wait(5)
        collector = collector_factory(broker, "relay/ev/state", "wattbus/dlq/#", "wattbus/relays/#")
        # a retained state of an earlier test must not be restored into this one
        collector.publish("relay/ev/state", b"", retain=True)
        proc = processes(_config(tmp_path, broker, topic, grid, **over), "relays")
        return Site(collector, grid), device, proc

    made = []

    def tracked(**over):
        got = make(**over)
        made.append(got[1])
        return got

    yield tracked
    for d in made:
        d.stop()


def test_starts_safe_then_switches_on_sustained_surplus_and_off_on_import(rig):
    site, device, _ = rig()
    first = site.wait_state("the safe state at start", lambda s: s["state"] == "off")
    assert "safe state" in first["reason"] or "starting" in first["reason"]
    on = site.wait_state("on after a second of 2.5 kW export", lambda s: s["state"] == "on", feed=-2500)
    assert "surplus" in on["reason"] and on["mode"] == "auto"
    assert device.power == [True]  # the device itself confirmed
    # with the load on the house now imports 800 W (> off_import_w 500) for longer than off_delay
    off = site.wait_state("off after sustained import", lambda s: s["state"] == "off", feed=800)
    assert "import" in off["reason"]
    assert device.power == [False]


def test_own_load_does_not_switch_itself_off(rig):
    site, device, _ = rig()
    site.wait_state("on", lambda s: s["state"] == "on", feed=-2500)
    # export 2.5 kW minus the 2 kW load: the grid still exports 500 W; nothing may turn it off
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        site.power(-500)
        time.sleep(0.2)
    assert site.state()["state"] == "on" and device.power == [True]


def test_stale_input_puts_the_relay_in_its_safe_state_and_says_why(rig):
    site, device, _ = rig()
    site.wait_state("on", lambda s: s["state"] == "on", feed=-2500)
    # the meter goes silent: after stale_after (3 s) the relay is off, with the reason
    off = site.wait_state("safe state on stale input", lambda s: s["state"] == "off", timeout=10)
    assert "safe state" in off["reason"] and "old" in off["reason"]
    assert device.power == [False]


def test_manual_modes_win_and_expire_back_to_auto(rig):
    site, device, _ = rig(manual_timeout=2)
    site.wait_state("safe off", lambda s: s["state"] == "off")
    site.c.publish("relay/ev/set", "ON")  # any case, as Home Assistant or a user types it
    on = site.wait_state("manual on", lambda s: s["state"] == "on" and s["mode"] == "on")
    assert on["manual_until"] is not None and on["reason"] == "manual on"
    assert device.power == [True]
    # no input at all: in auto that would be the safe state, so the expiry shows as the relay going off
    off = site.wait_state("back to auto after 2 s", lambda s: s["mode"] == "auto", timeout=10)
    assert "expired" in off["reason"] and off["state"] == "off"
    site.c.publish("relay/ev/set", "off")
    site.wait_state("manual off", lambda s: s["mode"] == "off")
    site.c.publish("relay/ev/set", "auto")
    site.wait_state("auto", lambda s: s["mode"] == "auto")


@pytest.mark.parametrize("payload", [b"", b"toggle", b"\xff\xfe", b"on" * 5000, b'{"state": "on"}', b"1"])
def test_hostile_commands_go_to_the_dead_letter_topic_and_change_nothing(rig, payload):
    site, device, proc = rig()
    site.wait_state("safe off", lambda s: s["state"] == "off")
    site.c.publish("relay/ev/set", payload)
    site.c.wait_for(lambda: site.c.on("wattbus/dlq/relays"), what="a dead letter")
    dead = orjson.loads(site.c.on("wattbus/dlq/relays")[-1][1])
    assert "must be one of auto, on, off" in dead["reason"]
    assert site.state()["mode"] == "auto" and device.power == [False] and proc.alive()


def test_a_manual_mode_survives_a_restart(rig, processes, tmp_path):
    site, device, proc = rig(manual_timeout=3600)
    site.c.publish("relay/ev/set", "on")
    site.wait_state("manual on", lambda s: s["mode"] == "on" and s["state"] == "on")
    assert proc.terminate() == 0
    assert site.state()["state"] == "off" and device.power == [False]  # SIGTERM: the safe state
    processes(tmp_path / "wattbus.toml", "relays")
    again = site.wait_state("manual on restored", lambda s: s["state"] == "on")
    assert again["mode"] == "on" and device.power == [True]


def test_sigterm_leaves_the_relay_in_its_safe_state(rig):
    site, device, proc = rig()
    site.wait_state("on", lambda s: s["state"] == "on", feed=-2500)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(10) == 0
    assert device.power == [False]
    assert site.state()["reason"] == "stopped: safe state"


def test_a_device_that_does_not_confirm_is_retried_and_reported(rig):
    site, device, proc = rig()
    site.wait_state("safe off", lambda s: s["state"] == "off")
    device.silent = True
    site.c.publish("relay/ev/set", "on")
    failed = site.wait_state("the error", lambda s: s["error"], timeout=15)
    assert "not confirmed after 2 attempts" in failed["error"] and failed["state"] == "off"
    assert device.commands >= 2  # retried
    device.silent = False
    ok = site.wait_state("on once the device answers again", lambda s: s["state"] == "on", timeout=20)
    assert ok["error"] is None and proc.alive()


def test_the_switch_cap_holds_a_flapping_site(rig):
    site, device, _ = rig(max_switches_per_hour=2)
    site.wait_state("on", lambda s: s["state"] == "on", feed=-2500)
    site.wait_state("off", lambda s: s["state"] == "off", feed=800)
    # two switchings in the hour: a third must wait, whatever the surplus says
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        site.power(-2500)
        time.sleep(0.2)
    assert site.state()["state"] == "off" and device.power == [False]
    assert device.commands == 3  # the safe state at start, on, off: the cap held the third switching


def test_home_assistants_switch_and_mode_select_drive_the_relay(rig, broker, processes, collector_factory,
                                                                tmp_path):
    """The homeassistant consumer's discovery for the relay, used as HA uses it: its command topics."""
    site, device, _ = rig()
    ha_cfg = write_config(tmp_path / "ha.toml", broker, """
        [consumer.ha]
        type = "homeassistant"
        prune_unconfigured = false
        relays = [{name = "ev", title = "EV charger", process = "relays"}]
        """)
    processes(ha_cfg, "ha")
    doc_topic = "homeassistant/device/wattbus_relay_ev/config"
    ha = collector_factory(broker, doc_topic)
    ha.wait_for(lambda: any(p for _, p, _ in ha.on(doc_topic)), what="the relay's discovery")
    doc = orjson.loads([p for _, p, _ in ha.on(doc_topic) if p][-1])
    switch, select = doc["components"]["output"], doc["components"]["mode"]
    assert switch["platform"] == "switch" and select["options"] == ["auto", "on", "off"]
    assert {"topic": "wattbus/relays/status"} in doc["availability"]
    site.wait_state("safe off", lambda s: s["state"] == "off")
    ha.publish(switch["command_topic"], switch["payload_on"])
    on = site.wait_state("on from HA's switch", lambda s: s["state"] == switch["state_on"])
    assert on["mode"] == "on" and device.power == [True]
    ha.publish(select["command_topic"], "auto")
    site.wait_state("auto from HA's select", lambda s: s["mode"] == "auto")


def test_the_cheapest_hours_follow_the_dynamic_price_topic(broker, processes, collector_factory, tmp_path):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    topic = unique("boiler")
    device = TasmotaDevice(broker.host, broker.port, topic).start()
    assert device.ready.wait(5)
    prices = unique("prices")
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [tariff]
        currency = "EUR"
        [tariff.import]
        price = 0.30
        dynamic_topic = "{prices}"

        [consumer.relays]
        type = "relay"
        tick = 0.1
        [consumer.relays.relay.boiler]
        output = {{kind = "tasmota", topic = "{topic}"}}
        min_on = 0
        min_off = 0
        cheapest = {{hours = 1, from = "00:00", to = "24:00"}}
        """)
    c = collector_factory(broker, "relay/boiler/state")
    c.publish("relay/boiler/state", b"", retain=True)
    try:
        processes(cfg, "relays").wait_output("driving 1 relay")
        now = datetime.now(ZoneInfo("Europe/Brussels"))
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        hour = now.replace(minute=0, second=0, microsecond=0)

        def send(cheap_at) -> None:
            c.publish(prices, orjson.dumps([{"start": (midnight.replace(hour=h)).isoformat(),
                                             "price": 0.05 if h == cheap_at else 0.40} for h in range(24)]))

        def state() -> dict:
            got = c.on("relay/boiler/state")
            return orjson.loads(got[-1][1]) if got and got[-1][1] else {}

        send(hour.hour)
        c.wait_for(lambda: state().get("state") == "on", what="on in the cheapest hour")
        assert state()["reason"] == "cheapest 1 h of the price window" and device.power == [True]
        send((hour.hour + 12) % 24)  # the cheapest hour moved away
        c.wait_for(lambda: state().get("state") == "off", what="off once another hour is cheaper")
        assert device.power == [False]
    finally:
        device.stop()
