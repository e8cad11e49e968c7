"""The synthetic year: complete, in the dataset's format, realistic in the ways a user would look at."""

from __future__ import annotations

import io
import re
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from producers.hhpc.dataset import HEADER, METRIC_KEYS, BadRow, iter_rows
from producers.hhpc.yeartable import load_year
from producers.hhpc.generate import generate_year

POWER, REACTIVE, VOLTAGE, CURRENT, SUB1, SUB2, SUB3 = range(7)
assert METRIC_KEYS[POWER] == "power_w" and METRIC_KEYS[SUB3] == "sub3_energy_wh"

ROW = re.compile(r"\d\d/\d\d/\d{4};\d\d:\d\d:00;(\d+\.\d{3};){6}\d+\.\d{3}")
MISSING_ROW = re.compile(r"\d\d/\d\d/\d{4};\d\d:\d\d:00;;;;;;;")


@pytest.fixture(scope="module")
def year_2024(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hhpc") / "hhpc-2024.txt"
    assert generate_year(2024, path, seed=0) == 527_040
    return path


@pytest.fixture(scope="module")
def table(year_2024):
    bad: list[BadRow] = []
    t = load_year(year_2024, on_bad=bad.append)
    assert bad == []
    return t


@pytest.fixture(scope="module")
def days(table) -> np.ndarray:
    """(366, 1440, 7) float64, NaN where missing."""
    return table.values.astype(np.float64).reshape(table.days, 1440, len(METRIC_KEYS))


def test_every_minute_of_2024_is_there_once_and_in_order(year_2024, table):
    assert table.year == 2024
    assert table.stats.rows == 527_040 and table.stats.duplicates == 0
    # Slot i (day-of-year and minute) came from line i + 2: the file walks the calendar minute by minute.
    assert np.array_equal(table.lines, np.arange(2, 527_042))
    with open(year_2024) as f:
        assert f.readline().rstrip("\n") == HEADER
        assert f.readline().startswith("01/01/2024;00:00:00;")
    assert year_2024.read_text().splitlines()[-1].startswith("31/12/2024;23:59:00;")


def test_rows_are_formatted_like_the_seed(year_2024):
    lines = year_2024.read_text().splitlines()[1:]
    odd = [line for line in lines if not (ROW.fullmatch(line) or MISSING_ROW.fullmatch(line))]
    assert odd == []


def test_about_one_and_a_quarter_percent_is_missing_in_runs(days):
    missing = np.isnan(days[..., POWER]).ravel()
    assert np.isnan(days[missing.reshape(days.shape[:2])]).all()  # a missing row misses every value
    assert 0.008 <= missing.mean() <= 0.02
    edges = np.diff(np.r_[0, missing.astype(np.int8), 0])
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert np.median(runs) <= 5  # mostly short gaps...
    assert runs.max() >= 6 * 60  # ...and at least one outage of hours or more
    assert len(runs) < missing.sum() / 2  # in runs, not scattered minutes


def test_mean_power_is_household_like(days):
    mean_kw = np.nanmean(days[..., POWER]) / 1000
    assert 0.5 <= mean_kw <= 2.0
    assert np.nanmin(days[..., POWER]) > 50  # never below the standby load


def test_evenings_use_more_than_nights(days):
    evening = np.nanmean(days[:, 18 * 60:22 * 60, POWER])
    night = np.nanmean(days[:, 2 * 60:5 * 60, POWER])
    morning = np.nanmean(days[:, 6 * 60 + 30:8 * 60 + 30, POWER])
    assert evening > 2 * night
    assert morning > 1.5 * night


def test_winter_uses_more_than_summer(days):
    dec_feb = np.r_[0:60, 335:366]
    jun_aug = np.r_[152:244]
    assert np.nanmean(days[dec_feb, :, POWER]) > 1.2 * np.nanmean(days[jun_aug, :, POWER])


def test_weekends_differ_from_weekdays(days):
    weekday = np.array([(date(2024, 1, 1) + timedelta(d)).weekday() for d in range(366)])
    late_morning = slice(10 * 60, 12 * 60)  # at work on weekdays, at home on weekends
    assert np.nanmean(days[weekday >= 5, late_morning, POWER]) > 1.5 * np.nanmean(
        days[weekday < 5, late_morning, POWER])


def test_lights_follow_the_sunset(days):
    # At 17:30 it is dark in December and broad daylight in June; people are home at both.
    at = slice(17 * 60 + 30, 17 * 60 + 45)
    december, june = np.r_[335:366], np.r_[152:182]
    lit = days[..., POWER] - days[..., SUB1:SUB3 + 1].sum(axis=-1) * 60  # what the sub-meters do not see
    assert np.nanmean(lit[december, at]) > np.nanmean(lit[june, at]) + 150


def test_sub_meters_stay_within_the_global_energy(days):
    present = ~np.isnan(days[..., POWER])
    energy = days[..., POWER][present] / 60
    subs = days[..., SUB1:SUB3 + 1][present]
    assert (energy >= subs.sum(axis=-1)).all()
    assert (subs >= 0).all() and (subs == np.round(subs)).all()  # whole Wh pulses


def test_each_sub_meter_shows_its_appliances(days):
    sub1, sub2, sub3 = (days[..., k] for k in (SUB1, SUB2, SUB3))
    assert np.nanmax(sub1) >= 30  # oven or dishwasher heating: 2 kW = 33 Wh a minute
    assert np.nanmax(sub2) >= 35  # washer heating or drier
    # The fridge compressor: laundry meter ticks most minutes, and is idle in some.
    assert 0.3 < np.nanmean(sub2 > 0) < 0.95
    # The water heater: 1050 W is 17.5 Wh a minute, which a pulse meter shows as 17s and 18s.
    assert np.sum(sub3 == 17) > 10_000 and np.sum(sub3 == 18) > 10_000
    # Air conditioning on summer afternoons only.
    summer_afternoons = sub3[152:244, 14 * 60:20 * 60]
    winter_afternoons = sub3[np.r_[0:60, 335:366], 14 * 60:20 * 60]
    assert np.nanmean(summer_afternoons > 25) > np.nanmean(winter_afternoons > 25)


def test_voltage_current_and_reactive_power_are_plausible(days):
    volts, amps = days[..., VOLTAGE], days[..., CURRENT]
    assert 238 <= np.nanmean(volts) <= 242 and np.nanmin(volts) > 215 and np.nanmax(volts) < 255
    assert np.nanstd(volts) > 1  # it drifts
    # The grid sags at the evening peak and recovers at night.
    assert np.nanmean(volts[:, 19 * 60:20 * 60]) < np.nanmean(volts[:, 3 * 60:5 * 60]) - 1
    apparent = np.hypot(days[..., POWER], days[..., REACTIVE])
    assert np.nanmax(np.abs(amps - apparent / volts)) <= 0.11  # current = S / V at 0.2 A resolution
    ratio = np.nanmean(days[..., REACTIVE]) / np.nanmean(days[..., POWER])
    assert 0.05 < ratio < 0.4


def test_a_date_range_is_exactly_those_lines_of_the_full_year(year_2024):
    out = io.StringIO()
    rows = generate_year(2024, out, seed=0, start=date(2024, 3, 30), end=date(2024, 4, 2))
    assert rows == 3 * 1440
    full = year_2024.read_text().splitlines(True)
    first = 1 + (date(2024, 3, 30) - date(2024, 1, 1)).days * 1440
    assert out.getvalue() == full[0] + "".join(full[first:first + rows])


def test_another_seed_makes_another_year(year_2024):
    out = io.StringIO()
    generate_year(2024, out, seed=1, start=date(2024, 1, 1), end=date(2024, 1, 8))
    same_week = "".join(year_2024.read_text().splitlines(True)[:1 + 7 * 1440])
    assert out.getvalue() != same_week
    assert len(out.getvalue().splitlines()) == len(same_week.splitlines())


def test_a_common_year_has_no_29_february_and_progress_is_reported(tmp_path):
    calls: list[tuple[int, int]] = []
    path = tmp_path / "2023.txt"
    rows = generate_year(2023, path, seed=0, progress=lambda done, total: calls.append((done, total)),
                         start=date(2023, 2, 20), end=date(2023, 3, 10))
    assert rows == 18 * 1440
    assert calls[0] == (0, rows) and calls[-1] == (rows, rows)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    dates = {r.local.date() for r in iter_rows(path)}
    assert date(2023, 2, 28) in dates and date(2023, 3, 1) in dates and len(dates) == 18


def test_a_range_outside_the_year_is_refused():
    with pytest.raises(ValueError):
        generate_year(2024, io.StringIO(), start=date(2024, 12, 1), end=date(2025, 1, 2))


def test_live_lookup_reads_the_same_calendar_minute_from_a_generated_year(table):
    # The live mode's question: what does the file say for 14 December at 17:58?
    row = table.for_local(datetime(2025, 12, 14, 17, 58))
    assert row.local == datetime(2024, 12, 14, 17, 58)
    assert row.line == 2 + (348 * 1440) + 17 * 60 + 58
