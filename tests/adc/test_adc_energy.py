"""Energy counters: integrated from power, split by direction, carried through the retained state."""

import orjson
import pytest

from bus.clock import EmulatedClock
from producers.adc.circuit import RemoteVoltage
from producers.adc.energy import EnergyCounter


def test_power_integrates_into_import_and_export():
    e = EnergyCounter(interval_s=1.0)
    e.add(3600.0, now_s=100.0)      # first reading counts one interval: 1 Wh
    e.add(3600.0, now_s=102.0)      # two seconds later: 2 Wh
    e.add(-1800.0, now_s=103.0)     # exporting: 0.5 Wh export
    assert e.import_wh == pytest.approx(3.0)
    assert e.export_wh == pytest.approx(0.5)


def test_a_long_gap_counts_one_interval_not_the_gap():
    e = EnergyCounter(interval_s=1.0)
    e.add(3600.0, now_s=0.0)
    e.add(3600.0, now_s=3600.0)     # an hour without readings: not an hour of 3.6 kW
    assert e.import_wh == pytest.approx(2.0)


def test_state_round_trip_through_json_continues_the_counters():
    e = EnergyCounter(interval_s=1.0)
    for t in range(10):
        e.add(1000.0 if t % 2 else -500.0, now_s=float(t))
    retained = orjson.dumps(e.state(ts_ms=1_700_000_000_000))   # what save_state publishes
    restarted = EnergyCounter(interval_s=1.0)
    assert restarted.restore(orjson.loads(retained)) is None
    assert (restarted.import_wh, restarted.export_wh) == (e.import_wh, e.export_wh)
    restarted.add(3600.0, now_s=0.0)
    assert restarted.import_wh == pytest.approx(e.import_wh + 1.0)
    assert restarted.export_wh == e.export_wh


@pytest.mark.parametrize("state", [
    {"v": 2, "energy_import_wh": 1.0, "energy_export_wh": 0.0},
    {"v": 1, "energy_import_wh": -5.0, "energy_export_wh": 0.0},
    {"v": 1, "energy_import_wh": "12", "energy_export_wh": 0.0},
    {"v": 1, "energy_import_wh": 1.0},
    ["not", "a", "dict"],
])
def test_an_unusable_state_is_reported_and_ignored(state):
    e = EnergyCounter(interval_s=1.0)
    assert e.restore(state)
    assert (e.import_wh, e.export_wh) == (0.0, 0.0)


def test_no_state_starts_from_zero():
    e = EnergyCounter(interval_s=1.0)
    assert e.restore(None) is None
    assert (e.import_wh, e.export_wh) == (0.0, 0.0)


def reading(volts=None, quality="ok", batch=False):
    metrics = {} if volts is None else {"voltage_v": volts}
    item = {"ts": 1_700_000_000_000, "metrics": metrics, "quality": quality}
    if batch:
        return orjson.dumps({"v": 1, "source": "adc", "device": "mains", "readings": [item, item]})
    return orjson.dumps({"v": 1, "source": "adc", "device": "mains", **item})


def test_remote_voltage_takes_the_latest_and_expires():
    clock = EmulatedClock(0.0)
    rv = RemoteVoltage(max_age_s=10.0, clock=clock)
    assert rv.value() is None
    assert rv.on_message(reading(236.5)) is None
    assert rv.value() == 236.5
    assert rv.on_message(reading(238.0, batch=True)) is None
    assert rv.value() == 238.0
    assert rv.on_message(reading(None, quality="missing")) is None
    assert rv.value() == 238.0
    clock.advance(11.0)
    assert rv.value() is None


def test_remote_voltage_rejects_garbage_with_a_reason():
    rv = RemoteVoltage()
    assert "JSON" in rv.on_message(b"{not json")
    assert rv.on_message(orjson.dumps({"v": 1, "source": "adc", "device": "m", "ts": 1,
                                       "metrics": {"voltage_v": -3.0}}))
    assert rv.value() is None
