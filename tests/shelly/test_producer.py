"""The shelly producer against the emulator, through the real RPC client, on a fake clock.

What a user would notice: the values and their signs, an outage filled once and completely,
counters that never go backwards, and a producer that shrugs off a misbehaving device.
"""

from __future__ import annotations

import pytest
from shelly_support import JUNE_MORNING, shelly_context, make_poller, truth_counters

from bus.clock import EmulatedClock
from producers.shelly.emulator import EmulatedShelly

COUNTERS = ("energy_import_wh", "energy_export_wh", "energy_import_l1_wh", "energy_export_l1_wh",
            "energy_import_l2_wh", "energy_export_l2_wh", "energy_import_l3_wh", "energy_export_l3_wh")


def run_until(ctx, poller, t: float) -> None:
    ctx.stop_at = t
    ctx.stopping.clear()
    poller.run()


def assert_series_sound(readings, *, max_gap_s: float) -> None:
    """Distinct timestamps, no hole wider than ``max_gap_s``, counters never decreasing."""
    stamps = [r.ts for r in readings]
    assert len(stamps) == len(set(stamps)), "a timestamp was published twice"
    ordered = sorted(readings, key=lambda r: r.ts)
    gaps = [(b.ts - a.ts) / 1000 for a, b in zip(ordered, ordered[1:])]
    assert max(gaps) <= max_gap_s, f"hole of {max(gaps)} s in the series"
    for key in COUNTERS:
        values = [r.metrics[key] for r in ordered if key in r.metrics]
        assert all(b >= a for a, b in zip(values, values[1:])), f"{key} went down"


# -- values and signs ------------------------------------------------------------------------------

def test_grid_device_values_and_signs_follow_the_device():
    clock = EmulatedClock(JUNE_MORNING)
    with EmulatedShelly(role="grid", clock=clock) as emu:
        ctx = shelly_context(clock)
        status = emu.rpc("Shelly.GetStatus", {})  # what the device shows at the time of the poll
        run_until(ctx, make_poller(ctx, emu), JUNE_MORNING + 1)  # one poll
    em, data = status["em:0"], status["emdata:0"]
    [r] = ctx.readings
    m = r.metrics
    assert r.ts == JUNE_MORNING * 1000 and r.quality == "ok" and r.period_s == 0
    # a sunny June morning: the house exports, and a grid device shows export as negative power
    assert em["total_act_power"] < 0
    assert m["power_w"] == pytest.approx(em["total_act_power"])
    assert m["power_l1_w"] == pytest.approx(em["a_act_power"])
    assert m["voltage_l2_v"] == pytest.approx(em["b_voltage"])
    assert m["current_l3_a"] == pytest.approx(em["c_current"])
    assert m["apparent_power_l1_va"] == pytest.approx(em["a_aprt_power"])
    assert m["current_a"] == pytest.approx(em["total_current"])
    assert m["current_n_a"] == pytest.approx(em["n_current"])
    assert m["frequency_hz"] == pytest.approx(50.0, abs=0.1)
    assert m["voltage_v"] == pytest.approx((em["a_voltage"] + em["b_voltage"] + em["c_voltage"]) / 3)
    assert 0 <= m["power_factor"] <= 1
    assert m["energy_import_wh"] == pytest.approx(data["total_act"])
    assert m["energy_export_wh"] == pytest.approx(data["total_act_ret"])
    assert m["energy_export_l2_wh"] == pytest.approx(data["b_total_act_ret_energy"])
    assert ctx.device_status[0] == ("mains", True)


def test_solar_device_reports_production_as_positive_power_and_import():
    clock = EmulatedClock(JUNE_MORNING)
    with EmulatedShelly(role="solar", clock=clock, neutral=False) as emu:
        ctx = shelly_context(clock)
        status = emu.rpc("Shelly.GetStatus", {})
        run_until(ctx, make_poller(ctx, emu, device="solar", role="solar"), JUNE_MORNING + 1)
    em, data = status["em:0"], status["emdata:0"]
    [r] = ctx.readings
    m = r.metrics
    assert em["total_act_power"] < -1000, "the inverter's feed reads negative through normally installed CTs"
    assert m["power_w"] == pytest.approx(-em["total_act_power"]) and m["power_w"] > 1000
    assert m["power_l2_w"] == pytest.approx(-em["b_act_power"])
    # counters follow power_w: import = energy in the positive (production) direction
    assert m["energy_import_wh"] == pytest.approx(data["total_act_ret"])
    assert m["energy_export_wh"] == pytest.approx(data["total_act"])
    assert m["energy_import_l3_wh"] == pytest.approx(data["c_total_act_ret_energy"])
    assert "current_n_a" not in m, "no neutral CT: n_current is null, so no neutral current is published"


def test_solar_at_night_draws_standby_power_as_negative():
    night = JUNE_MORNING - 8 * 3600  # midnight UTC
    clock = EmulatedClock(night)
    with EmulatedShelly(role="solar", clock=clock) as emu:
        ctx = shelly_context(clock)
        run_until(ctx, make_poller(ctx, emu, device="solar", role="solar", interval=600), night + 3600)
    powers = [r.metrics["power_w"] for r in ctx.readings]
    assert len(powers) == 6 and all(-15 < p < 0 for p in powers)
    imports = [r.metrics["energy_import_wh"] for r in ctx.readings]
    exports = [r.metrics["energy_export_wh"] for r in ctx.readings]
    assert imports[0] == imports[-1] and exports[-1] > exports[0]


def test_monophase_profile_maps_channels_to_phases():
    clock = EmulatedClock(JUNE_MORNING)
    with EmulatedShelly(role="grid", profile="monophase", clock=clock) as emu:
        ctx = shelly_context(clock)
        status = emu.rpc("Shelly.GetStatus", {})
        run_until(ctx, make_poller(ctx, emu), JUNE_MORNING + 1)
    [r] = ctx.readings
    m = r.metrics
    powers = [status[f"em1:{i}"]["act_power"] for i in range(3)]
    assert [m["power_l1_w"], m["power_l2_w"], m["power_l3_w"]] == pytest.approx(powers)
    assert m["power_w"] == pytest.approx(sum(powers))
    assert m["energy_import_wh"] == pytest.approx(sum(status[f"em1data:{i}"]["total_act_energy"] for i in range(3)))
    assert m["energy_export_l2_wh"] == pytest.approx(status["em1data:1"]["total_act_ret_energy"])
    assert m["voltage_l3_v"] == pytest.approx(status["em1:2"]["voltage"])


# -- outages and backfill --------------------------------------------------------------------------

@pytest.mark.parametrize("role,profile", [("grid", "triphase"), ("solar", "monophase")])
def test_two_hour_outage_is_backfilled_once_without_gap_or_duplicate(role, profile):
    t0 = JUNE_MORNING
    clock = EmulatedClock(t0)
    with EmulatedShelly(role=role, profile=profile, clock=clock, keys_order="shuffled", data_chunk=45) as emu:
        ctx = shelly_context(clock)
        poller = make_poller(ctx, emu, device="dev", role=role)
        ctx.at(t0 + 600, lambda: setattr(emu, "reachable", False))
        ctx.at(t0 + 600 + 7200, lambda: setattr(emu, "reachable", True))
        run_until(ctx, poller, t0 + 9000)
        invert = role == "solar"

        readings = ctx.readings
        assert_series_sound(readings, max_gap_s=60)
        backfilled = [r for r in readings if r.period_s == 60]
        # the device was reachable until 08:09 and again from 10:10: the 120 minutes between come from
        # its records, each exactly once, one per minute
        assert [r.ts // 1000 for r in backfilled] == list(range(t0 + 600, t0 + 7800, 60))
        assert ctx.count("backfilled_readings") == 120
        assert len(ctx.batches) == 1, "the backfill is one batch message"
        # anchored on a minute boundary: counters are exact sums of the records, so quality "ok"
        assert {r.quality for r in backfilled} == {"ok"}
        for r in backfilled:
            truth = truth_counters(emu, r.ts // 1000, invert)
            for key in COUNTERS:
                assert r.metrics[key] == pytest.approx(truth[key], abs=0.05), key
            assert r.metrics["energy_wh"] == pytest.approx(
                r.metrics["power_w"] / 60, rel=1e-6, abs=1e-3)
        assert all(r.metrics["power_w"] > 0 for r in backfilled) == invert  # production, or export at noon
        assert ctx.states["dev"]["pending"] == []

        # a restart with the retained state goes on where it stopped and backfills nothing again
        before = {r.ts for r in readings}
        ctx2 = shelly_context(clock, states=ctx.states)
        run_until(ctx2, make_poller(ctx2, emu, device="dev", role=role), t0 + 9600)
    assert ctx2.readings and not ctx2.batches
    assert not before & {r.ts for r in ctx2.readings}
    assert_series_sound(readings + ctx2.readings, max_gap_s=61)


def test_stop_during_a_long_backfill_resumes_it_at_the_next_start_without_duplicates():
    t0 = JUNE_MORNING
    clock = EmulatedClock(t0)
    with EmulatedShelly(role="grid", clock=clock) as emu:
        ctx = shelly_context(clock)
        run_until(ctx, make_poller(ctx, emu), t0 + 120)
        clock.advance(30 * 3600)  # the producer was down for 30 hours: 1800 minutes, 4 batches

        ctx2 = shelly_context(clock, states=ctx.states)
        publish = ctx2.publish_readings

        def publish_then_sigterm(device, readings):
            publish(device, readings)
            ctx2.stopping.set()  # SIGTERM arrives while the first batch is being sent

        ctx2.publish_readings = publish_then_sigterm
        run_until(ctx2, make_poller(ctx2, emu), clock() + 60)
        # one whole batch, then the reading of the poll that found the gap, then nothing
        assert len(ctx2.batches) == 1 and len(ctx2.batches[0]) == 500 and len(ctx2.live()) == 1
        pending = ctx.states["mains"]["pending"]
        assert len(pending) == 1 and pending[0]["start"] == ctx2.batches[0][-1].ts // 1000

        ctx3 = shelly_context(clock, states=ctx.states)
        run_until(ctx3, make_poller(ctx3, emu), clock() + 60)
    back = [r.ts // 1000 for r in ctx2.readings + ctx3.readings if r.period_s == 60]
    assert back == list(range(t0 + 120, t0 + 120 + 30 * 3600 + 60, 60))[: len(back)]
    assert len(back) == 1800 and len(ctx3.batches) == 3
    assert ctx.states["mains"]["pending"] == []
    assert_series_sound(ctx.readings + ctx2.readings + ctx3.readings, max_gap_s=60)


def test_producer_restart_backfills_the_time_it_was_down():
    t0 = JUNE_MORNING + 30  # polls off the minute: the first record straddles the last reading
    clock = EmulatedClock(t0)
    with EmulatedShelly(role="grid", clock=clock) as emu:
        ctx = shelly_context(clock)
        run_until(ctx, make_poller(ctx, emu), t0 + 300)
        last = max(r.ts for r in ctx.readings) // 1000
        clock.advance(45 * 60)  # the producer is stopped for 45 minutes
        ctx2 = shelly_context(clock, states=ctx.states)
        run_until(ctx2, make_poller(ctx2, emu), clock() + 120)
        back = [r for r in ctx2.readings if r.period_s == 60]
        assert [r.ts // 1000 for r in back] == list(range(last + 30, last + 30 + 46 * 60, 60))
        # the minute straddling the last reading is shared pro rata: an estimate, flagged as such
        assert {r.quality for r in back} == {"estimated"}
        for r in back:
            assert r.metrics["energy_export_wh"] == pytest.approx(
                truth_counters(emu, r.ts // 1000)["energy_export_wh"], abs=2.0)
    assert_series_sound(ctx.readings + ctx2.readings, max_gap_s=60)


def test_device_power_loss_leaves_the_gap_it_really_has():
    t0 = JUNE_MORNING
    clock = EmulatedClock(t0)
    with EmulatedShelly(role="grid", clock=clock) as emu:
        ctx = shelly_context(clock)
        poller = make_poller(ctx, emu)
        ctx.at(t0 + 300, emu.power_off)
        ctx.at(t0 + 1500, emu.power_on)
        run_until(ctx, poller, t0 + 2400)
        blocks = emu.rpc("EMData.GetRecords", {"id": 0})["data_blocks"]
    assert len(blocks) == 2, "a power loss starts a new block of records"
    stamps = sorted(r.ts // 1000 for r in ctx.readings)
    # nothing is invented for the 20 minutes the device was off; the counters did not move meanwhile
    assert not [t for t in stamps if t0 + 300 < t < t0 + 1500]
    assert_series_sound(ctx.readings, max_gap_s=1500)


# -- counter resets and replaced devices -------------------------------------------------------------

def test_counter_reset_is_detected_and_published_counters_keep_growing():
    t0 = JUNE_MORNING - 6 * 3600  # 02:00 UTC: the house imports
    clock = EmulatedClock(t0)
    with EmulatedShelly(role="grid", clock=clock) as emu:
        ctx = shelly_context(clock)
        ctx.at(t0 + 600, emu.delete_all_data)
        run_until(ctx, make_poller(ctx, emu), t0 + 1500)
    live = sorted(ctx.live(), key=lambda r: r.ts)
    assert ctx.count("counter_resets") == 1
    assert_series_sound(live, max_gap_s=60)
    after = next(r for r in live if r.ts // 1000 == t0 + 600)
    before = next(r for r in live if r.ts // 1000 == t0 + 540)
    assert after.quality == "estimated", "the reading that re-anchored the counters is flagged"
    assert 0 <= after.metrics["energy_import_wh"] - before.metrics["energy_import_wh"] < 10
    growth = live[-1].metrics["energy_import_wh"] - after.metrics["energy_import_wh"]
    assert 10 < growth < 1000  # the house kept using energy, and it is still counted
    assert ctx.states["mains"]["resets"] == 1 and ctx.states["mains"]["offset"]["energy_import_wh"] > 1e6


def test_replaced_device_continues_the_counters():
    t0 = JUNE_MORNING
    clock = EmulatedClock(t0)
    with EmulatedShelly(role="grid", clock=clock) as emu:
        ctx = shelly_context(clock)
        poller = make_poller(ctx, emu)
        ctx.at(t0 + 290, lambda: setattr(emu, "reachable", False))
        ctx.at(t0 + 400, emu.replace_device)
        ctx.at(t0 + 530, lambda: setattr(emu, "reachable", True))
        run_until(ctx, poller, t0 + 900)
    assert ctx.count("device_replaced") == 1
    assert not ctx.batches, "the new device's records are not the old one's history"
    assert_series_sound(ctx.readings, max_gap_s=300)
    assert ctx.states["mains"]["device_id"] == emu.device_id


# -- faults ----------------------------------------------------------------------------------------

def test_faults_are_counted_retried_and_survived():
    t0 = JUNE_MORNING
    clock = EmulatedClock(t0)
    with EmulatedShelly(role="grid", clock=clock, timeout_delay=1.0) as emu:
        ctx = shelly_context(clock)
        poller = make_poller(ctx, emu, timeout=0.3, retries=2)
        status = "Shelly.GetStatus"
        ctx.at(t0 + 60, lambda: emu.faults.arm("http500", 1, status))
        ctx.at(t0 + 120, lambda: emu.faults.arm("garbage", 1, status))
        ctx.at(t0 + 180, lambda: emu.faults.arm("timeout", 1, status))
        ctx.at(t0 + 240, lambda: emu.faults.arm("missing_component", 1, status))
        ctx.at(t0 + 300, lambda: emu.faults.arm("missing", 1, status))
        ctx.at(t0 + 360, lambda: emu.faults.arm("http500", 2, status))  # beyond the retries: a lost poll
        run_until(ctx, poller, t0 + 600)
    assert emu.faults.injected == {"http500": 3, "garbage": 1, "timeout": 1, "missing_component": 1, "missing": 1}
    assert ctx.count("http_errors") == 3 and ctx.count("bad_responses") == 2 and ctx.count("timeouts") == 1
    assert ctx.count("retries") == 5
    assert ctx.count("poll_failures") == 1
    assert ctx.count("missing_fields") == 3  # a_voltage, b_current, total_act_ret
    stamps = sorted(r.ts // 1000 for r in ctx.readings)
    assert stamps == [t0 + 60 * k for k in range(10)], "a reading every minute, none twice"
    lost = next(r for r in ctx.readings if r.ts // 1000 == t0 + 360)
    assert lost.period_s == 60, "the lost poll's minute came back from the device's records"
    partial = next(r for r in ctx.readings if r.ts // 1000 == t0 + 300)
    m = partial.metrics
    assert "voltage_l1_v" not in m and "current_l2_a" not in m and "voltage_l2_v" in m
    # a missing total is made up from the phases' counters, which the device did send
    assert m["energy_export_wh"] == pytest.approx(sum(m[f"energy_export_l{n}_wh"] for n in (1, 2, 3)), abs=0.02)


def test_device_errors_set_reading_quality():
    t0 = JUNE_MORNING
    clock = EmulatedClock(t0)
    with EmulatedShelly(role="grid", clock=clock) as emu:
        ctx = shelly_context(clock)
        ctx.at(t0 + 60, lambda: emu.phase_errors.update(a=["out_of_range:voltage"]))
        ctx.at(t0 + 120, lambda: (emu.phase_errors.clear(), emu.errors.append("power_meter_failure")))
        ctx.at(t0 + 180, lambda: (emu.errors.clear(), emu.errors.append("phase_sequence")))
        run_until(ctx, make_poller(ctx, emu), t0 + 200)
    q = {r.ts // 1000 - t0: r for r in ctx.readings}
    assert [q[k].quality for k in (0, 60, 120, 180)] == ["ok", "estimated", "missing", "ok"]
    assert q[120].metrics == {}
    assert ctx.count("device_errors") == 3
    assert ctx.count("device_error.power_meter_failure") == 1


def test_unsynced_device_clock_falls_back_to_host_time():
    clock = EmulatedClock(JUNE_MORNING)
    with EmulatedShelly(role="grid", clock=clock) as emu:
        emu.sys_time_synced = False
        ctx = shelly_context(clock)
        poller = make_poller(ctx, emu)
        poller.host_time = lambda: 1_750_000_000.0
        run_until(ctx, poller, JUNE_MORNING + 1)
    [r] = ctx.readings
    assert r.ts == 1_750_000_000_000 and ctx.count("device_clock_unsynced") == 1


# -- the plugin entry point ----------------------------------------------------------------------------

def test_run_polls_a_mains_and_a_solar_device_from_one_process(monkeypatch):
    import threading
    import time

    import msgspec

    from producers.shelly import Config, run
    from bus.clock import EmulatedClock

    clock = EmulatedClock(JUNE_MORNING, speed=1.0)
    with EmulatedShelly(role="grid", clock=clock) as mains, \
            EmulatedShelly(role="solar", clock=clock, password="pv") as solar:
        monkeypatch.setenv("WATTBUS_TEST_PV_PASS", "pv")
        cfg = msgspec.convert({"type": "shelly", "interval": 1, "devices": [
            {"device": "mains", "host": mains.url},
            {"device": "solar", "host": solar.url, "role": "solar", "password_env": "WATTBUS_TEST_PV_PASS"}]}, Config)
        ctx = shelly_context(None, name="meters")  # real time
        worker = threading.Thread(target=run, args=(ctx, cfg))
        worker.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len({(r.device, r.ts) for r in ctx.readings}) < 6:
            time.sleep(0.1)
        ctx.stopping.set()
        worker.join(10)
    assert not worker.is_alive()
    by_device = {d: [r for r in ctx.readings if r.device == d] for d in ("mains", "solar")}
    assert len(by_device["mains"]) >= 2 and len(by_device["solar"]) >= 2
    assert all(r.metrics["power_w"] < 0 for r in by_device["mains"])  # the house exports at 10:00 in June
    assert all(r.metrics["power_w"] > 0 for r in by_device["solar"])  # production is positive
    assert set(ctx.states) == {"mains", "solar"}
    assert ctx.device_status[-2:] in ([("mains", False), ("solar", False)], [("solar", False), ("mains", False)])
