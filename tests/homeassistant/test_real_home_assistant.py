"""The homeassistant consumer against a real Home Assistant Core (pinned release, cached venv, headless).

Real parts end to end: a P1 meter emulator (grid and gas) and a Shelly Pro 3EM emulator (solar) read by
the real producers, the real Mosquitto, the homeassistant consumer, and HA with its MQTT integration set up
through its own config flow. Everything is asserted through HA's own APIs: REST ``/api/states`` for each
entity's unit, device_class, state_class and value, the websocket for the Energy preferences and
``energy/validate``, and HA's MQTT switch and select for a relay. The first run builds HA's venv (minutes);
later runs reuse it.
"""

from __future__ import annotations

import time

import orjson
import pytest

from bus import rollup
from bus.clock import EmulatedClock
from producers.p1.emulator import Emulator, generated_frames
from producers.shelly.emulator import EmulatedShelly
from schemas import METRICS
from tests.conftest import unique
from tests.support import homeassistant as hasupport
from tests.support.processes import write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

STATS_WAIT_S = 420
"""HA compiles statistics every 5 minutes; energy/validate needs the first compile after the sensors exist."""


@pytest.fixture(scope="module")
def home_assistant(tmp_path_factory):
    work = tmp_path_factory.mktemp("homeassistant")
    t0 = time.monotonic()
    try:
        venv = hasupport.ensure_venv(work / "venv.log")
    except hasupport.Unavailable as exc:
        pytest.skip(f"Home Assistant cannot run here: {exc}")
    print(f"\nHome Assistant {hasupport.HA_VERSION} venv ready in {time.monotonic() - t0:.0f} s")
    t0 = time.monotonic()
    ha = hasupport.HomeAssistant(work, venv).start()
    print(f"Home Assistant answering in {time.monotonic() - t0:.0f} s")
    ha.onboard()
    yield ha
    ha.stop()


def number(state: dict) -> float:
    return float(state["state"])


def test_every_device_in_home_assistant_energy_ready_and_unavailable_when_its_producer_stops(
    home_assistant, own_broker, processes, collector_factory, tmp_path
):
    ha = home_assistant
    ha.add_mqtt(own_broker.host, own_broker.port)
    grid, solar, hass_name, legacy = unique("grid"), unique("solar"), "hadev", "haold"
    c = collector_factory(own_broker, "homeassistant/#", "ha/#", "relay/#", "wattbus/+/status")
    now = int(time.time() * 1000)
    day_start = now - now % 86_400_000
    site = rollup.Bucket(
        source="site",
        device="home",
        period="1d",
        start=day_start,
        end=day_start + 86_400_000,
        label="today",
        grid_import_wh=3200.0,
        grid_export_wh=1800.0,
        solar_wh=5100.0,
        home_wh=6500.0,
        self_consumption_wh=3300.0,
        self_sufficiency_pct=50.8,
        cost=0.96,
        revenue=0.09,
        currency="EUR",
    )
    c.publish("agg/site/home/1d", rollup.encode(site), retain=True)
    c.publish("relay/ev/state", b'{"state": "on", "mode": "auto", "reason": "surplus"}', retain=True)

    with (
        Emulator(generated_frames("5B", "Europe/Brussels", seed=3), period=1.0) as p1,
        EmulatedShelly(role="solar", clock=EmulatedClock(int(time.time()), 1.0)) as shelly,
    ):
        p1.start_tcp()
        cfg = write_config(
            tmp_path / "wattbus.toml",
            own_broker,
            f"""
            [producer.{grid}]
            type = "p1"
            port = "{p1.url}"
            dsmr = "5B"
            interval = 2

            [producer.{solar}]
            type = "shelly"
            host = "{shelly.url}"
            role = "solar"
            interval = 2

            [consumer.{hass_name}]
            type = "homeassistant"
            min_interval = 1.0
            relays = [{{name = "ev", title = "EV charger"}}]

            [consumer.{legacy}]
            type = "homeassistant"
            discovery = "entity"
            node_id = "wbold"
            min_interval = 1.0
            """,
        )
        consumer = processes(cfg, hass_name)
        processes(cfg, legacy)
        consumer.wait_output("subscribed to +/+/reading")
        producers = {grid: processes(cfg, grid), solar: processes(cfg, solar)}

        devices = {("p1", grid): "grid", ("p1", f"{grid}_gas"): "gas", ("shelly", solar): "solar"}

        def doc(source: str, device: str) -> dict | None:
            got = c.on(f"homeassistant/device/wattbus_{source}_{device}/config")
            return orjson.loads(got[-1][1]) if got and got[-1][1] else None

        def complete() -> bool:
            """Each device's discovery names its producer's status (from its health) and its own status."""
            for (source, device), _ in devices.items():
                d = doc(source, device)
                producer = solar if source == "shelly" else grid
                if (
                    not d
                    or {"topic": f"wattbus/{producer}/status"} not in d["availability"]
                    or {"topic": f"{source}/{device}/status"} not in d["availability"]
                ):
                    return False
            return True

        c.wait_for(
            complete, timeout=90, what="discovery of the grid, gas and solar devices with full availability"
        )

        # -- every entity, as HA sees it -----------------------------------------------------------------
        def check_all() -> list[str]:
            states = ha.states()
            problems = []
            for (source, device), _ in devices.items():
                d = doc(source, device)
                got = c.on(f"ha/{source}/{device}/state")
                values = orjson.loads(got[-1][1])
                for key, comp in d["components"].items():
                    eid = f"{comp['platform']}.{comp['object_id']}"
                    st = states.get(eid)
                    if st is None:
                        problems.append(f"{eid} missing")
                        continue
                    a = st["attributes"]
                    if key in METRICS:
                        m = METRICS[key]
                        want = {
                            "unit_of_measurement": m.unit or None,
                            "device_class": m.device_class or None,
                            "state_class": (m.state_class if m.kind != "interval" else "") or None,
                        }
                        have = {k: a.get(k) for k in want}
                        if have != want:
                            problems.append(f"{eid}: {have} != {want}")
                        try:
                            same = abs(number(st) - values[key]) < 1e-6
                        except ValueError:
                            same = False
                        if not same:
                            problems.append(f"{eid}: HA shows {st['state']}, wattbus sent {values[key]}")
            return problems

        deadline = time.monotonic() + 60
        while (problems := check_all()) and time.monotonic() < deadline:
            time.sleep(0.3)  # values move every 2 s: HA and the last state agree between two readings
        assert problems == []
        states = ha.states()
        p1_keys = set(doc("p1", grid)["components"])
        assert {
            "power_w",
            "power_l1_w",
            "voltage_l1_v",
            "current_l1_a",
            "energy_import_t1_wh",
            "energy_export_t2_wh",
            "tariff",
        } <= p1_keys
        assert states[f"sensor.wattbus_p1_{grid}_gas_gas_m3"]["attributes"]["device_class"] == "gas"
        assert states[f"sensor.wattbus_p1_{grid}_gas_gas_m3"]["attributes"]["unit_of_measurement"] == "m³"
        assert "last_reset" not in states[f"sensor.wattbus_p1_{grid}_energy_import_wh"]["attributes"]
        # the older per-entity layout makes the same entities under its own node id
        old = states.get(f"sensor.wbold_p1_{grid}_energy_import_wh")
        assert old is not None and old["attributes"]["state_class"] == "total_increasing"
        # today's site balance from the aggregate's bucket
        solar_today = states["sensor.wattbus_site_home_today_solar_wh"]
        assert number(solar_today) == 5100.0 and solar_today["attributes"]["unit_of_measurement"] == "Wh"
        assert solar_today["attributes"]["last_reset"].startswith(time.strftime("%Y-"))
        assert states["sensor.wattbus_site_home_today_cost"]["attributes"]["unit_of_measurement"] == "EUR"
        assert number(states["sensor.wattbus_site_home_today_self_sufficiency_pct"]) == 50.8

        # -- a relay: HA's switch and select read relay/ev/state and command relay/ev/set -----------------
        assert states["switch.wattbus_relay_ev_output"]["state"] == "on"
        assert states["select.wattbus_relay_ev_mode"]["state"] == "auto"
        ha.ws(
            [
                {
                    "type": "call_service",
                    "domain": "switch",
                    "service": "turn_off",
                    "target": {"entity_id": "switch.wattbus_relay_ev_output"},
                },
                {
                    "type": "call_service",
                    "domain": "select",
                    "service": "select_option",
                    "target": {"entity_id": "select.wattbus_relay_ev_mode"},
                    "service_data": {"option": "on"},
                },
            ]
        )
        c.wait_for(lambda: [p for _, p, _ in c.on("relay/ev/set")] == [b"off", b"on"], what="relay commands")

        # -- the Energy dashboard accepts grid, solar and gas ------------------------------------------------
        eid = "sensor.wattbus_{}_{}_{}"
        ha.ws(
            [
                {
                    "type": "energy/save_prefs",
                    "energy_sources": [
                        {
                            "type": "grid",
                            "cost_adjustment_day": 0,
                            "flow_from": [
                                {
                                    "stat_energy_from": eid.format("p1", grid, "energy_import_wh"),
                                    "stat_cost": None,
                                    "entity_energy_price": None,
                                    "number_energy_price": None,
                                }
                            ],
                            "flow_to": [
                                {
                                    "stat_energy_to": eid.format("p1", grid, "energy_export_wh"),
                                    "stat_compensation": None,
                                    "entity_energy_price": None,
                                    "number_energy_price": None,
                                }
                            ],
                        },
                        {
                            "type": "solar",
                            "stat_energy_from": eid.format("shelly", solar, "energy_import_wh"),
                            "config_entry_solar_forecast": None,
                        },
                        {
                            "type": "gas",
                            "stat_energy_from": eid.format("p1", f"{grid}_gas", "gas_m3"),
                            "stat_cost": None,
                            "entity_energy_price": None,
                            "number_energy_price": None,
                        },
                    ],
                    "device_consumption": [],
                }
            ]
        )
        t0 = time.monotonic()

        def validated():
            result = ha.ws([{"type": "energy/validate"}])[0]
            issues = [i for source in result["energy_sources"] for i in source]
            return result if not issues else None

        try:
            result = ha.wait(validated, timeout=STATS_WAIT_S, what="energy/validate with no issue", every=10)
        except AssertionError:
            raise AssertionError(f"energy/validate: {ha.ws([{'type': 'energy/validate'}])[0]}") from None
        print(f"energy/validate clean after {time.monotonic() - t0:.0f} s (statistics compile)")
        assert len(result["energy_sources"]) == 3

        # -- a producer stops: its device shows unavailable, never 0 ----------------------------------------
        assert producers[solar].terminate() == 0
        solar_power = f"sensor.wattbus_shelly_{solar}_power_w"
        ha.wait(
            lambda: ha.states()[solar_power]["state"] == "unavailable",
            timeout=30,
            what="the solar device unavailable after its producer stopped",
        )
        assert ha.states()[f"sensor.wattbus_shelly_{solar}_energy_import_wh"]["state"] == "unavailable"
        producers[grid].kill()  # no clean stop: the broker's last will says offline
        ha.wait(
            lambda: ha.states()[f"sensor.wattbus_p1_{grid}_power_w"]["state"] == "unavailable",
            timeout=60,
            what="the grid device unavailable after its producer was killed",
        )
        assert ha.states()[f"sensor.wbold_p1_{grid}_power_w"]["state"] == "unavailable"
        assert consumer.alive()
