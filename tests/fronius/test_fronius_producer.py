"""The fronius producer against the emulated Datamanager, through the real HTTP client, on a fake clock.

What a user would notice: the values and their signs for each flow, the inverter's own data, the night (0 W,
counters still, the sleeping inverter not taken for an outage), a producer that shrugs off a misbehaving
device, and garbage that ends in the DLQ rather than in a reading."""

from __future__ import annotations

import pytest
from fronius_support import JUNE_NIGHT, JUNE_NOON, context, poller, run_until

from bus.clock import EmulatedClock
from producers.fronius.emulator import EmulatedFronius
from producers.fronius.plant import Plant


def test_solar_device_publishes_production_and_the_inverters_own_data():
    clock = EmulatedClock(JUNE_NOON)
    with EmulatedFronius(clock=clock) as emu:
        ctx = context(clock)
        s = emu.snapshot()
        assert poller(ctx, emu).poll_once()
    [r] = ctx.readings
    m = r.metrics
    assert r.source == "fronius" and r.device == "pv" and r.quality == "ok"
    assert r.ts == JUNE_NOON * 1000                      # the device's clock
    assert m["power_w"] == pytest.approx(s.pv_w, abs=0.01) and m["power_w"] > 2000
    assert m["energy_import_wh"] == pytest.approx(s.e_total, abs=0.01)
    assert m["voltage_v"] == pytest.approx(sum(s.uac) / 3, abs=0.001)
    assert m["current_a"] == pytest.approx(sum(s.iac), abs=0.001)
    assert m["frequency_hz"] == pytest.approx(s.fac, abs=0.001)
    for n in (1, 2, 3):
        assert m[f"voltage_l{n}_v"] == pytest.approx(s.uac[n - 1], abs=0.001)
        assert m[f"current_l{n}_a"] == pytest.approx(s.iac[n - 1], abs=0.001)
    assert ctx.device_status == [("pv", True)]


@pytest.mark.parametrize("role,sign", [("grid", 1), ("load", -1), ("battery", 1)])
def test_grid_load_and_battery_flows_in_their_natural_direction(role, sign):
    """The Solar API's P_Load is negative while the house consumes: a load device reads it positive."""
    clock = EmulatedClock(JUNE_NOON + 7 * 3600)  # 19:00 local: the house draws, the battery covers it
    with EmulatedFronius(clock=clock, plant=Plant(battery_wh=10_000)) as emu:
        ctx = context(clock, role)
        flow = emu.power_flow(emu.snapshot())["Site"]
        assert poller(ctx, emu, role=role, device=role).poll_once()
    [r] = ctx.readings
    key = {"grid": "P_Grid", "load": "P_Load", "battery": "P_Akku"}[role]
    assert r.metrics["power_w"] == pytest.approx(sign * flow[key], abs=0.01)
    if role == "load":
        assert r.metrics["power_w"] > 0
    if role == "battery":
        assert 0 <= r.metrics["battery_soc_pct"] <= 100
    assert "energy_import_wh" not in r.metrics and "voltage_v" not in r.metrics


def test_a_site_without_meter_or_battery_publishes_no_grid_reading():
    clock = EmulatedClock(JUNE_NOON)
    with EmulatedFronius(clock=clock, meter=False) as emu:
        ctx = context(clock, "grid")
        assert not poller(ctx, emu, role="grid").poll_once()
        ctx2 = context(clock, "battery")
        assert not poller(ctx2, emu, role="battery").poll_once()
    assert ctx.readings == [] and ctx.count("absent") == 1


def test_single_phase_inverter_is_asked_for_per_phase_data_once():
    clock = EmulatedClock(JUNE_NOON)
    with EmulatedFronius(clock=clock, plant=Plant(phases=1)) as emu:
        ctx = context(clock)
        p = poller(ctx, emu, interval=10)
        run_until(ctx, p, JUNE_NOON + 60)
        assert emu.requests["GetInverterRealtimeData.cgi"] == 6 + 1   # CommonInverterData x 6, 3P once
    assert len(ctx.readings) == 6
    assert all("voltage_v" in r.metrics and "voltage_l1_v" not in r.metrics for r in ctx.readings)


def test_dusk_then_night_standby_reads_zero_and_the_counter_stands_still():
    """A Datamanager with its own supply keeps answering at night: P_PV null (0 W), inverter data
    DeviceNotAvailable; the lifetime counter from the power flow stays where the day left it."""
    clock = EmulatedClock(JUNE_NOON + 8 * 3600)  # 20:00 local, the last light
    with EmulatedFronius(clock=clock) as emu:
        ctx = context(clock)
        run_until(ctx, poller(ctx, emu, interval=600), JUNE_NIGHT + 3600)
    powers = [r.metrics["power_w"] for r in ctx.readings]
    totals = [r.metrics["energy_import_wh"] for r in ctx.readings]
    assert len(powers) == 5 * 6 and all(r.quality == "ok" for r in ctx.readings)
    assert powers[0] > 0 and powers[-1] == 0.0 and powers[-12:] == [0.0] * 12
    assert totals == sorted(totals) and totals[-12:] == [totals[-1]] * 12
    assert ctx.count("inverter_asleep") > 0 and ctx.count("poll_failures") == 0
    assert "voltage_v" not in ctx.readings[-1].metrics
    assert ctx.device_status == [("pv", True), ("pv", False)]    # online all night; offline at stop


def test_an_inverter_that_goes_quiet_at_night_sleeps_and_is_not_an_outage():
    """Powered from its panels, the Datamanager stops answering after dusk: the producer says it sleeps,
    publishes 0 W "estimated" with the counter where it was, and wakes up with the sun."""
    clock = EmulatedClock(JUNE_NOON + 8 * 3600)
    with EmulatedFronius(clock=clock, night="offline", timeout_delay=0.5) as emu:
        ctx = context(clock)
        run_until(ctx, poller(ctx, emu, interval=900, retries=1), JUNE_NIGHT + 8 * 3600)  # to 08:00 local
    live = [r for r in ctx.readings if r.quality == "ok"]
    asleep = [r for r in ctx.readings if r.quality == "estimated"]
    assert asleep and all(r.metrics["power_w"] == 0.0 for r in asleep)
    evening = [r for r in live if r.ts < asleep[0].ts][-1]
    assert all(r.metrics["energy_import_wh"] == evening.metrics["energy_import_wh"] for r in asleep)
    assert live[-1].metrics["power_w"] > 0 and live[-1].ts > asleep[-1].ts           # morning came
    assert ctx.count("asleep_polls") == len(asleep) and ctx.count("poll_failures") == 0
    assert [s for _, s in ctx.device_status] == [True, False, True, False]   # ..., and the stop
    counters = [r.metrics["energy_import_wh"] for r in ctx.readings]
    assert counters == sorted(counters)


def test_an_outage_while_producing_is_an_outage():
    clock = EmulatedClock(JUNE_NOON)
    with EmulatedFronius(clock=clock) as emu:
        ctx = context(clock)
        p = poller(ctx, emu, interval=10, retries=2)
        assert p.poll_once()
        emu.reachable = False
        assert not p.poll_once() and not p.poll_once()
        emu.reachable = True
        clock.advance(10)
        assert p.poll_once()
    assert ctx.count("poll_failures") == 2 and ctx.count("asleep_polls") == 0
    assert len(ctx.readings) == 2 and all(r.quality == "ok" for r in ctx.readings)   # nothing invented
    assert [s for _, s in ctx.device_status] == [True, False, True]


@pytest.mark.parametrize("fault", ["ln_timeout", "http500", "garbage", "drop"])
def test_a_failed_attempt_is_retried_and_counted_and_the_reading_still_comes(fault):
    clock = EmulatedClock(JUNE_NOON)
    with EmulatedFronius(clock=clock) as emu:
        ctx = context(clock)
        p = poller(ctx, emu)
        assert p.poll_once()
        emu.faults.arm(fault, 1)
        clock.advance(10)
        assert p.poll_once()
    assert len(ctx.readings) == 2 and ctx.count("retries") == 1
    counter = {"ln_timeout": "api_transient", "http500": "http_errors", "garbage": "bad_responses",
               "drop": "transport_errors"}[fault]
    assert ctx.count(counter) == 1 and ctx.dead == []


def test_a_device_answering_only_garbage_goes_to_the_dlq_and_offline():
    clock = EmulatedClock(JUNE_NOON)
    with EmulatedFronius(clock=clock) as emu:
        ctx = context(clock)
        p = poller(ctx, emu, retries=3)
        assert p.poll_once()
        emu.faults.arm("garbage", 3)
        clock.advance(10)
        assert not p.poll_once()
    assert ctx.count("bad_responses") == 3 and ctx.count("poll_failures") == 1
    [(payload, reason)] = ctx.dead
    assert b"<html>" in payload and "not JSON" in reason
    assert ctx.device_status[-1] == ("pv", False)


def test_a_solar_api_error_status_is_a_failed_poll_with_its_name():
    clock = EmulatedClock(JUNE_NOON)
    with EmulatedFronius(clock=clock) as emu:
        ctx = context(clock)
        emu.faults.arm("unknown_error", 1)
        p = poller(ctx, emu, retries=1)
        p.identified = True  # straight to the data
        assert not p.poll_once()
    assert ctx.count("api_errors") == 1 and ctx.readings == []


def test_a_device_clock_far_off_is_replaced_by_the_hosts():
    device_clock = EmulatedClock(JUNE_NOON + 3600)     # an hour ahead
    with EmulatedFronius(clock=device_clock) as emu:
        host = EmulatedClock(JUNE_NOON)
        ctx = context(host)
        assert poller(ctx, emu).poll_once()
    assert ctx.readings[0].ts == JUNE_NOON * 1000 and ctx.count("device_clock_skewed") == 1


def test_the_same_device_second_twice_is_published_once():
    clock = EmulatedClock(JUNE_NOON)
    with EmulatedFronius(clock=clock) as emu:
        ctx = context(clock)
        p = poller(ctx, emu)
        assert p.poll_once() and not p.poll_once()
    assert len(ctx.readings) == 1 and ctx.count("stale_readings") == 1
