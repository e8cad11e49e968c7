"""The adc producer as a real process on the emulated MCP3208, against a real Mosquitto: readings, device
status, energy counters that continue after a restart, and a current-only circuit fed over MQTT."""

import threading

import orjson
import pytest

from tests.conftest import unique, write_config

pytestmark = pytest.mark.timeout(90)


def adc_config(tmp_path, broker, name: str, circuits: str) -> object:
    return write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.{name}]
        type = "adc"
        spi = "sim"
        interval = 0.2

        [producer.{name}.sim]
        voltage_v = 230.0
        noise_v = 0.001
        """ + circuits)


def readings(collector, device: str) -> list[dict]:
    return [orjson.loads(p) for _, p, _ in collector.on(f"adc/{device}/reading")]


def test_readings_and_counters_that_survive_a_restart(tmp_path, broker, processes, collector_factory):
    name, dev = unique("adc"), unique("mains")
    cfg = adc_config(tmp_path, broker, name, f"""
        [producer.{name}.circuits.{dev}]
        role = "grid"
        voltage_channel = 0
        current_channels = [1]
        sim = {{ current_a = 10.0, power_factor = 0.9 }}
        """)
    col = collector_factory(broker, f"adc/{dev}/#")
    first = processes(cfg, name)
    col.wait_for(lambda: len(readings(col, dev)) >= 5, what="five readings")
    assert first.terminate() == 0
    col.wait_for(lambda: col.on(f"adc/{dev}/status")[-1][1] == b"offline", what="device offline")

    run1 = readings(col, dev)
    last = run1[-1]
    assert last["source"] == "adc" and last["device"] == dev and last["period_s"] == 0.2
    m = last["metrics"]
    assert m["voltage_v"] == pytest.approx(230.0, rel=0.005)
    assert m["current_a"] == pytest.approx(10.0, rel=0.005)
    assert m["power_w"] == pytest.approx(2070.0, rel=0.005)
    assert m["power_factor"] == pytest.approx(0.9, abs=0.005)
    assert m["frequency_hz"] == pytest.approx(50.0, abs=0.01)
    counters = [r["metrics"]["energy_import_wh"] for r in run1]
    assert counters == sorted(counters) and counters[-1] > counters[0] > 0
    assert all(r["metrics"]["energy_export_wh"] == 0 for r in run1)
    state = orjson.loads(col.on(f"adc/{dev}/state")[-1][1])
    assert state["energy_import_wh"] == pytest.approx(counters[-1], abs=0.001)

    processes(cfg, name)
    col.wait_for(lambda: len(readings(col, dev)) >= len(run1) + 2, what="readings after the restart")
    after = readings(col, dev)[len(run1)]
    assert after["boot"] != last["boot"]
    one_interval_wh = 2070.0 * 0.2 / 3600
    assert after["metrics"]["energy_import_wh"] == pytest.approx(counters[-1] + one_interval_wh, abs=0.01)


def test_current_only_circuit_takes_its_voltage_over_mqtt(tmp_path, broker, processes, collector_factory):
    name, dev, meter = unique("adc"), unique("ct"), unique("meter")
    cfg = adc_config(tmp_path, broker, name, f"""
        [producer.{name}.circuits.{dev}]
        current_channels = [3]
        voltage_from = "adc/{meter}"
        nominal_voltage_v = 230.0
        sim = {{ current_a = 8.0 }}
        """)
    col = collector_factory(broker, f"adc/{dev}/reading", f"wattbus/dlq/{name}")
    processes(cfg, name)
    col.wait_for(lambda: len(readings(col, dev)) >= 1, what="a reading")
    assert readings(col, dev)[0]["metrics"]["power_w"] == pytest.approx(230.0 * 8.0, rel=0.005)

    stop = threading.Event()

    def meter_readings():
        ts = 1_700_000_000_000
        while not stop.is_set():
            ts += 200
            col.publish(f"adc/{meter}/reading", orjson.dumps(
                {"v": 1, "source": "adc", "device": meter, "ts": ts, "metrics": {"voltage_v": 241.0}}))
            stop.wait(0.2)

    feeder = threading.Thread(target=meter_readings, daemon=True)
    feeder.start()
    try:
        col.wait_for(lambda: readings(col, dev)[-1]["metrics"]["power_w"] > 1900,
                     what="the remote voltage used")
        m = readings(col, dev)[-1]["metrics"]
        assert m["power_w"] == pytest.approx(241.0 * 8.0, rel=0.005)
        assert "voltage_v" not in m and "energy_export_wh" not in m
        col.publish(f"adc/{meter}/reading", b"{garbage")
        col.wait_for(lambda: col.on(f"wattbus/dlq/{name}"), what="the garbage in the DLQ")
        assert b"voltage_from" in col.on(f"wattbus/dlq/{name}")[-1][1]
    finally:
        stop.set()
        feeder.join(2)
