"""Energy in buckets from every kind of device, with answers worked out by hand in each test.

Counters (difference across the bucket, a gap apportioned by time, resets and meter swaps), interval
energies, power integrated (gaps not integrated, coverage < 1), import and export apart, tariff registers,
min/avg/max power, the DST days, and months that add up to the year.
"""

from __future__ import annotations

import random

import pytest

from tests.aggregate.conftest import MIN, Run, local_ms, make_engine, reading


def shelly(ts: int, imp: float, exp: float = 0.0, power: float | None = None) -> object:
    m = {"energy_import_wh": imp, "energy_export_wh": exp}
    if power is not None:
        m["power_w"] = power
    return reading("mains", ts, m)


def test_counters_give_the_difference_across_the_bucket_spans_at_the_edges_shared_by_time():
    t0 = local_ms("2024-06-03 09:59:30")
    rs = [shelly(t0 + k * MIN, 1000.0 + 10.0 * k) for k in range(62)]  # 10 Wh a minute, readings at :30
    run = Run(make_engine()).feed(rs)
    hour = run.get("shelly", "mains", "1h", local_ms("2024-06-03 10:00"))
    # 59 whole minutes inside the hour, plus half of the minute across 10:00 and half of the one across 11:00
    assert hour.energy_import_wh == pytest.approx(600.0, abs=1e-6)
    assert hour.energy_export_wh == 0.0
    slot = run.get("shelly", "mains", "15m", local_ms("2024-06-03 10:15"))
    assert slot.energy_import_wh == pytest.approx(150.0, abs=1e-6)
    assert hour.readings == 60 and hour.coverage == 1.0 and hour.status == "complete"
    assert hour.label == "2024-06-03T10:00+02:00"


def test_a_counter_across_a_gap_is_apportioned_by_time_and_the_buckets_are_partial():
    t = local_ms("2024-06-03 10:00")
    rs = [
        shelly(t - MIN, 999.0),
        shelly(t, 1000.0),
        shelly(t + 120 * MIN, 1600.0),
        shelly(t + 121 * MIN, 1601.0),
    ]
    run = Run(make_engine()).feed(rs)
    h10, h11 = (run.get("shelly", "mains", "1h", t + k * 60 * MIN) for k in (0, 1))
    assert h10.energy_import_wh == pytest.approx(300.0) and h11.energy_import_wh == pytest.approx(300.0)
    assert h10.coverage == 0.0 and h10.status == "partial" and h11.status == "partial"
    # the 600 Wh of the gap land in 8 quarter hours of 75 Wh each
    slots = [b for b in run.period("shelly", "mains", "15m") if t <= b.start < t + 120 * MIN]
    assert [b.energy_import_wh for b in slots] == pytest.approx([75.0] * 8)


def test_a_counter_reset_never_gives_a_negative_and_power_fills_that_minute():
    t = local_ms("2024-06-03 10:00")
    counters = [1000.0, 1010.0, 1020.0, 5.0, 15.0, 25.0]  # reset to zero between the 3rd and 4th reading
    without = Run(make_engine()).feed([shelly(t + k * MIN, c) for k, c in enumerate(counters)])
    h = without.get("shelly", "mains", "1h", t)
    assert h.energy_import_wh == pytest.approx(40.0)  # 10 + 10 + (nothing for the reset minute) + 10 + 10
    assert all(
        b.energy_import_wh is None or b.energy_import_wh >= 0
        for b in without.period("shelly", "mains", "15m")
    )
    assert without.engine.counters["counter_resets"] == 1
    with_power = Run(make_engine()).feed(
        [shelly(t + k * MIN, c, power=600.0) for k, c in enumerate(counters)]
    )
    # the reset minute falls back to power: 600 W for 60 s = 10 Wh
    assert with_power.get("shelly", "mains", "1h", t).energy_import_wh == pytest.approx(50.0)


def test_a_meter_swapped_for_one_with_a_higher_index_is_not_a_spike():
    t = local_ms("2024-06-03 10:00")
    counters = [1000.0, 1010.0, 1020.0, 50_000.0, 50_010.0]  # +48,980 Wh in a minute: 2.9 MW, impossible
    run = Run(make_engine()).feed([shelly(t + k * MIN, c) for k, c in enumerate(counters)])
    assert run.get("shelly", "mains", "1h", t).energy_import_wh == pytest.approx(30.0)


def test_interval_energies_and_sub_meters_add_up():
    t = local_ms("2024-06-03 10:00")
    rs = [
        reading(
            "house",
            t + k * MIN,
            {
                "power_w": 600.0 + k,
                "energy_wh": 10.0 + k / 100,
                "sub1_energy_wh": 1.0,
                "sub3_energy_wh": float(k % 2),
            },
            source="hhpc",
            period_s=60.0,
        )
        for k in range(1, 61)
    ]
    run = Run(make_engine()).feed(rs)
    h = run.get("hhpc", "house", "1h", t)
    assert h.energy_import_wh == pytest.approx(600.0 + sum(range(1, 61)) / 100)  # 618.3
    assert h.sub1_energy_wh == 60.0 and h.sub3_energy_wh == 30.0 and h.sub2_energy_wh is None
    assert h.energy_export_wh == 0.0
    assert (h.power_min_w, h.power_max_w) == (601.0, 660.0)
    assert h.power_avg_w == pytest.approx(630.5)
    assert h.readings == 60 and h.coverage == 1.0


def test_power_is_integrated_over_covered_time_and_a_gap_is_left_out():
    t = local_ms("2024-06-03 10:00")
    rs = [reading("plug", t + k * MIN, {"power_w": 1200.0}) for k in range(0, 31)]  # 10:00 .. 10:30
    rs += [reading("plug", t + k * MIN, {"power_w": 600.0}) for k in range(50, 62)]  # gap 10:30 -> 10:50
    run = Run(make_engine()).feed(rs)
    h = run.get("shelly", "plug", "1h", t)
    # 30 minutes at 1200 W (600 Wh) + 10 minutes at 600 W (100 Wh); the 20-minute gap is not integrated
    assert h.energy_import_wh == pytest.approx(700.0)
    assert h.coverage == pytest.approx(40 / 60)
    assert h.power_avg_w == pytest.approx(700.0 / (40 / 60))
    assert (h.power_min_w, h.power_max_w) == (600.0, 1200.0)
    assert h.status == "partial"


def test_import_and_export_are_kept_apart():
    t = local_ms("2024-06-03 10:00")
    rs = [reading("mains", t + k * MIN, {"power_w": 600.0 if k <= 30 else -1200.0}) for k in range(0, 61)]
    h = Run(make_engine()).feed(rs).get("shelly", "mains", "1h", t)
    assert h.energy_import_wh == pytest.approx(300.0) and h.energy_export_wh == pytest.approx(600.0)
    assert h.power_avg_w == pytest.approx(-300.0)
    assert (h.power_min_w, h.power_max_w) == (-1200.0, 600.0)


def test_energy_per_tariff_register():
    t = local_ms("2024-06-03 06:45")
    rs = []
    t1, t2 = 5000.0, 3000.0
    for k in range(0, 31):  # 06:45 .. 07:15: register 2 (night) until 07:00, then register 1
        if 0 < k <= 15:
            t2 += 8.0
        elif k > 15:
            t1 += 4.0
        rs.append(
            reading(
                "meter",
                t + k * MIN,
                {
                    "energy_import_t1_wh": t1,
                    "energy_import_t2_wh": t2,
                    "energy_import_wh": t1 + t2,
                    "tariff": 2.0 if k <= 15 else 1.0,
                },
                source="p1",
            )
        )
    run = Run(make_engine()).feed(rs)
    night = run.get("p1", "meter", "15m", local_ms("2024-06-03 06:45"))
    day = run.get("p1", "meter", "15m", local_ms("2024-06-03 07:00"))
    assert (night.energy_import_t1_wh, night.energy_import_t2_wh, night.energy_import_wh) == (
        0.0,
        120.0,
        120.0,
    )
    assert (day.energy_import_t1_wh, day.energy_import_t2_wh, day.energy_import_wh) == (60.0, 0.0, 60.0)
    assert night.energy_export_wh is None  # the meter has no export counter: unknown, not 0


def test_the_autumn_back_day_has_25_hourly_buckets_that_add_up_to_the_25_hour_day():
    start = local_ms("2024-10-27 00:00")
    rs = [
        reading("house", start + k * MIN, {"power_w": 600.0, "energy_wh": 10.0}, source="hhpc", period_s=60.0)
        for k in range(1, 25 * 60 + 1)
    ]
    rs.append(
        reading(
            "house",
            start + 25 * 60 * MIN + MIN,
            {"power_w": 600.0, "energy_wh": 10.0},
            source="hhpc",
            period_s=60.0,
        )
    )  # the next day began: the day is over
    run = Run(make_engine()).feed(rs)
    hours = [b for b in run.period("hhpc", "house", "1h") if b.label.startswith("2024-10-27")]
    assert len(hours) == 25
    assert [b.label for b in hours[2:4]] == ["2024-10-27T02:00+02:00", "2024-10-27T02:00+01:00"]
    assert all(b.energy_import_wh == pytest.approx(600.0) and b.readings == 60 for b in hours)
    day = run.get("hhpc", "house", "1d", start)
    assert (day.end - day.start) == 25 * 3_600_000 and day.energy_import_wh == pytest.approx(15_000.0)
    assert day.readings == 1500 and day.coverage == 1.0 and day.status == "complete"


def test_the_spring_forward_day_is_23_hours():
    start = local_ms("2024-03-31 00:00")
    rs = [
        reading("house", start + k * MIN, {"energy_wh": 1.0}, source="hhpc", period_s=60.0)
        for k in range(1, 23 * 60 + 2)
    ]
    run = Run(make_engine()).feed(rs)
    hours = [b for b in run.period("hhpc", "house", "1h") if b.label.startswith("2024-03-31")]
    assert len(hours) == 23
    day = run.get("hhpc", "house", "1d", start)
    assert day.end - day.start == 23 * 3_600_000 and day.energy_import_wh == pytest.approx(23 * 60.0)


def test_twelve_months_add_up_to_the_year_to_the_milliwatt_hour():
    rng = random.Random(7)
    t = local_ms("2024-01-01 00:00")
    end = local_ms("2025-01-01 00:00")
    rs = []
    ts = t + 15 * MIN
    while ts <= end + 15 * MIN:
        rs.append(
            reading("house", ts, {"energy_wh": round(rng.uniform(0, 900), 6)}, source="hhpc", period_s=900.0)
        )
        ts += 15 * MIN
    run = Run(make_engine()).feed(rs, batch=4000)
    months = [b for b in run.period("hhpc", "house", "1mo") if b.label.startswith("2024")]
    year = run.get("hhpc", "house", "1y", t)
    assert len(months) == 12
    assert abs(sum(m.energy_import_wh for m in months) - year.energy_import_wh) < 1e-3
    exact = sum(r.metrics["energy_wh"] for r in rs if t < r.ts <= end)
    assert abs(year.energy_import_wh - exact) < 1e-3
    for m in months:
        days = [d for d in run.period("hhpc", "house", "1d") if m.start <= d.start < m.end]
        assert abs(sum(d.energy_import_wh for d in days) - m.energy_import_wh) < 1e-3
    assert year.readings == sum(m.readings for m in months)
