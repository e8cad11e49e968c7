"""End to end: `wattbus run` with a p1 producer reading the emulator over TCP (a P1 WiFi dongle), a real
Mosquitto, readings on MQTT that pass the envelope and metrics-table validation; corrupt telegrams on the
DLQ; SIGTERM publishes offline and exits 0."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson
import pytest

from bus.envelope import decode
from producers.p1.emulator import Emulator, bad_crc, generated_frames, noise
from tests.support.processes import write_config

pytestmark = pytest.mark.slow

T0 = datetime(2025, 1, 20, 17, 0, 0, tzinfo=timezone.utc)   # a winter evening in Brussels


def test_p1_producer_publishes_meter_readings_over_the_real_broker(broker, processes, collector_factory, tmp_path):
    name = f"p1e2e{time.monotonic_ns() % 10**8}"
    gen = generated_frames("5B", "Europe/Brussels", start=T0, step=1.0, seed=7)
    frames = [next(gen) for _ in range(12)]
    frames += [noise(20), bad_crc(next(gen))]
    frames += [next(gen) for _ in range(12)]
    with Emulator(frames, period=0.05) as emu:
        emu.start_tcp()
        cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
            [producer.{name}]
            type = "p1"
            port = "{emu.url}"
            dsmr = "5B"
            interval = 5
            """)
        c = collector_factory(broker, f"p1/{name}/#", f"p1/{name}_gas/#", f"p1/{name}_water/#",
                              f"wattbus/dlq/{name}")
        proc = processes(cfg, name)
        c.wait_for(lambda: emu.done.is_set() and len(c.on(f"p1/{name}/reading")) >= 5, timeout=30,
                   what="readings from the p1 producer")
        c.wait_for(lambda: len(c.on(f"wattbus/dlq/{name}")) >= 2, what="two dead letters")
        assert proc.terminate() == 0
    readings = [r for _, p, _ in c.on(f"p1/{name}/reading") for r in decode(p)]   # validates every metric key
    t0 = int(T0.timestamp() * 1000)
    # Telegrams at T0+0..11 s and T0+13..24 s (T0+12 was corrupted): every 5 s of meter time, then the
    # rest at stop.
    assert [r.ts - t0 for r in readings][:5] == [0, 5000, 10_000, 15_000, 20_000]
    assert all(r.source == "p1" and r.device == name for r in readings)
    m = readings[-1].metrics
    assert m["energy_import_wh"] == m["energy_import_t1_wh"] + m["energy_import_t2_wh"]
    assert {"power_w", "power_l1_w", "voltage_l1_v", "current_l1_a", "tariff", "demand_avg_w",
            "demand_peak_month_w", "energy_export_wh"} <= set(m)
    assert readings[1].period_s == 5
    gas = [r for _, p, _ in c.on(f"p1/{name}_gas/reading") for r in decode(p)]
    water = [r for _, p, _ in c.on(f"p1/{name}_water/reading") for r in decode(p)]
    assert [r.ts for r in gas] == [t0] and set(gas[0].metrics) == {"gas_m3"}
    assert [r.ts for r in water] == [t0] and water[0].metrics["water_m3"] > 0
    reasons = [orjson.loads(p)["reason"] for _, p, _ in c.on(f"wattbus/dlq/{name}")]
    assert reasons[0].startswith("noise") and reasons[1].startswith("bad_crc")
    status = [p for t, p, _ in c.on(f"p1/{name}/status")]
    assert status[0] == b"online" and status[-1] == b"offline"
