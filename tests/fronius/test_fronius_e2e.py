"""``wattbus run`` with a fronius producer against the emulator over HTTP and a real Mosquitto: readings that
decode, the device's status, and a clean stop."""

from __future__ import annotations

import orjson
import pytest

from bus import envelope
from bus.clock import HostClock
from producers.fronius.emulator import EmulatedFronius
from producers.fronius.plant import Plant
from tests.conftest import unique
from tests.support.processes import write_config

pytestmark = pytest.mark.timeout(90)


def test_solar_and_battery_sections_publish_through_the_broker(broker, processes, collector_factory,
                                                                tmp_path):
    pv, bat = unique("pv"), unique("battery")
    with EmulatedFronius(clock=HostClock(), plant=Plant(battery_wh=10_000)) as emu:
        cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
            [producer.{pv}]
            type = "fronius"
            host = "{emu.url}"
            interval = 1

            [producer.{bat}]
            type = "fronius"
            host = "{emu.url}"
            role = "battery"
            interval = 1
            """)
        c = collector_factory(broker, f"fronius/{pv}/#", f"fronius/{bat}/#")
        solar, battery = processes(cfg, pv), processes(cfg, bat)
        c.wait_for(lambda: len(c.on(f"fronius/{pv}/reading")) >= 2
                   and len(c.on(f"fronius/{bat}/reading")) >= 2, what="two readings of each")
        assert solar.terminate() == 0 and battery.terminate() == 0
        c.wait_for(lambda: c.on(f"fronius/{pv}/status")[-1][1] == b"offline", what="offline at stop")
    readings = [r for _, p, _ in c.on(f"fronius/{pv}/reading") for r in envelope.decode(p)]
    assert all(r.source == "fronius" and r.device == pv and r.metrics["power_w"] >= 0 for r in readings)
    assert all(r.metrics["energy_import_wh"] > 12_000_000 for r in readings)
    stamps = [r.ts for r in readings]
    assert stamps == sorted(set(stamps))
    soc = [orjson.loads(p)["metrics"]["battery_soc_pct"] for _, p, _ in c.on(f"fronius/{bat}/reading")]
    assert all(0 <= s <= 100 for s in soc)
    assert [p for _, p, _ in c.on(f"fronius/{pv}/status")][0] == b"online"
