"""The household profile as a user would judge it: energy per day, peaks, seasons, solar, EV."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bus import solar
from producers.sim.config import MeterParams
from producers.sim.profile import LoadProfile, Site

BRUSSELS = Site(ZoneInfo("Europe/Brussels"), 50.85, 4.35)
AUCKLAND = Site(ZoneInfo("Pacific/Auckland"), -36.85, 174.76)


def days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=k) for k in range(n)]


def hourly(profile: LoadProfile, dates: list[date], component: str = "load_w") -> np.ndarray:
    """Mean power per local clock hour (0..23) over ``dates``."""
    sums, counts = np.zeros(24), np.zeros(24)
    for d in dates:
        day = profile.day(d)
        h = day.local_h.astype(int)
        np.add.at(sums, h, getattr(day, component))
        np.add.at(counts, h, 1)
    return sums / counts


def test_daily_energy_stays_within_configured_bounds_and_averages_to_daily_kwh():
    p = MeterParams(daily_kwh=12.0, season_amplitude=0.25, weekend_factor=1.2, day_variation=0.15)
    prof = LoadProfile("kili", p, BRUSSELS, seed=3)
    year = days(date(2024, 1, 1), 366)
    kwh = np.array([prof.day(d).import_wh / 1000 for d in year])
    assert kwh.mean() == pytest.approx(12.0, rel=0.04)
    sigma = p.day_variation
    wk_lo, wk_hi = 7 / (5 + 2 * 1.2), 7 * 1.2 / (5 + 2 * 1.2)
    lo = 12.0 * (1 - 0.25) * wk_lo * np.exp(-2.5 * sigma - sigma ** 2 / 2)
    hi = 12.0 * (1 + 0.25) * wk_hi * np.exp(2.5 * sigma)
    assert lo <= kwh.min() and kwh.max() <= hi
    # no solar, no EV: the meter only imports
    assert all(prof.day(d).export_wh == 0 for d in year[:30])


def test_winter_uses_more_than_summer_and_hemisphere_flips_it():
    north = LoadProfile("m", MeterParams(), BRUSSELS, seed=1)
    south = LoadProfile("m", MeterParams(), AUCKLAND, seed=1)
    jan, jul = days(date(2024, 1, 1), 31), days(date(2024, 7, 1), 31)
    mean = lambda prof, ds: np.mean([prof.day(d).import_wh for d in ds])  # noqa: E731
    assert mean(north, jan) > 1.3 * mean(north, jul)
    assert mean(south, jul) > 1.3 * mean(south, jan)


@pytest.mark.parametrize("morning,evening", [(7.5, 19.0), (6.0, 20.5)])
def test_weekday_peaks_sit_where_configured(morning, evening):
    params = MeterParams(morning_peak_hour=morning, evening_peak_hour=evening)
    prof = LoadProfile("kili", params, BRUSSELS, seed=7)
    weekdays = [d for d in days(date(2024, 3, 4), 70) if d.weekday() < 5]
    curve = hourly(prof, weekdays)
    hour_mid = np.arange(24) + 0.5
    assert abs(hour_mid[np.argmax(curve)] - evening) <= 1.0  # the day's biggest peak
    am = slice(3, 12)
    assert abs(hour_mid[am][np.argmax(curve[am])] - morning) <= 1.0
    assert curve[3] < curve.max() / 4  # night is quiet


def test_weekend_differs_from_weekdays():
    p = MeterParams(weekend_shift_h=2.0)
    prof = LoadProfile("kili", p, BRUSSELS, seed=11)
    span = days(date(2024, 4, 1), 84)
    weekday = hourly(prof, [d for d in span if d.weekday() < 5])
    weekend = hourly(prof, [d for d in span if d.weekday() >= 5])
    assert weekend[7] < 0.7 * weekday[7]            # nobody rushing out at 7
    assert weekend[11:15].mean() > 1.5 * weekday[11:15].mean()  # home at midday
    am = slice(3, 12)
    assert np.argmax(weekend[am]) > np.argmax(weekday[am])  # the morning peak comes later


def test_solar_is_zero_at_night_and_peaks_near_solar_noon():
    prof = LoadProfile("sun", MeterParams(solar_kwp=4.0, cloudiness=0.0), BRUSSELS, seed=0)
    summer = prof.day(date(2024, 6, 21))
    night = (summer.local_h < 4.5) | (summer.local_h > 22.5)
    assert np.all(summer.solar_w[night] == 0)
    # solar noon in Brussels: about 13:44 CEST in June, 12:44 CET in December
    assert 13.4 <= summer.local_h[np.argmax(summer.solar_w)] <= 14.0
    assert 2500 < summer.solar_w.max() < 4000
    winter = prof.day(date(2024, 12, 21))
    assert 12.4 <= winter.local_h[np.argmax(winter.solar_w)] <= 13.0
    assert winter.solar_w.max() < summer.solar_w.max() / 2
    assert winter.solar_w.sum() < summer.solar_w.sum() / 4


def test_sun_elevation_at_known_moments():
    # Brussels, June solstice at solar noon: 90 - 50.85 + 23.44 = 62.6 degrees
    noon = datetime(2024, 6, 21, 11, 44, tzinfo=ZoneInfo("UTC")).timestamp()
    assert solar.elevation_deg(np.array([noon]), 50.85, 4.35)[0] == pytest.approx(62.6, abs=0.5)
    midnight = datetime(2024, 6, 21, 23, 44, tzinfo=ZoneInfo("UTC")).timestamp()
    assert solar.elevation_deg(np.array([midnight]), 50.85, 4.35)[0] < 0


def test_southern_meter_makes_most_in_december_and_clouds_cut_the_yield():
    south = LoadProfile("nz", MeterParams(solar_kwp=3.0), AUCKLAND, seed=2)
    dec = sum(south.day(d).solar_w.sum() for d in days(date(2024, 12, 1), 31))
    jun = sum(south.day(d).solar_w.sum() for d in days(date(2024, 6, 1), 30))
    assert dec > 1.8 * jun
    clear = LoadProfile("be", MeterParams(solar_kwp=1.0, cloudiness=0.0), BRUSSELS, seed=2, cache_days=1)
    cloudy = LoadProfile("be", MeterParams(solar_kwp=1.0), BRUSSELS, seed=2, cache_days=1)
    year = days(date(2024, 1, 1), 366)
    kwh = lambda prof: sum(prof.day(d).solar_w.sum() for d in year) / 60000  # noqa: E731
    default_yield = kwh(cloudy)
    assert 800 < default_yield < 1200  # kWh per kWp and year, what Belgian systems make
    assert default_yield < 0.8 * kwh(clear)


def test_ev_sessions_charge_in_the_evening_and_deliver_their_energy():
    p = MeterParams(ev_kw=7.4, ev_sessions_per_week=7.0, ev_kwh=20.0)
    prof = LoadProfile("ev", p, BRUSSELS, seed=5)
    weekdays = [d for d in days(date(2024, 9, 2), 56) if d.weekday() < 5]
    energy = [prof.day(d).ev_w.sum() / 60000 for d in days(date(2024, 9, 2), 56)]
    assert np.mean(energy) == pytest.approx(20.0, rel=0.15)
    assert max(prof.day(d).ev_w.max() for d in weekdays) == pytest.approx(7400)
    curve = hourly(prof, weekdays, "ev_w")
    assert curve[19:23].mean() > 5 * curve[8:15].mean()
    assert curve[0] > 0  # long sessions run past midnight into the next day
    none = LoadProfile("ev", MeterParams(ev_kw=0.0), BRUSSELS, seed=5)
    assert none.day(date(2024, 9, 2)).ev_w.max() == 0


def test_same_seed_same_profile_other_seed_other_profile():
    p = MeterParams(solar_kwp=4.0, ev_kw=11.0)
    a = LoadProfile("kili", p, BRUSSELS, seed=42).day(date(2024, 5, 4))
    b = LoadProfile("kili", p, BRUSSELS, seed=42).day(date(2024, 5, 4))
    assert np.array_equal(a.net_w, b.net_w)
    c = LoadProfile("kili", p, BRUSSELS, seed=43).day(date(2024, 5, 4))
    d = LoadProfile("pico", p, BRUSSELS, seed=42).day(date(2024, 5, 4))
    assert not np.allclose(a.net_w, c.net_w) and not np.allclose(a.net_w, d.net_w)


def test_adding_solar_leaves_the_household_load_alone():
    plain = LoadProfile("kili", MeterParams(), BRUSSELS, seed=9).day(date(2024, 5, 4))
    sunny = LoadProfile("kili", MeterParams(solar_kwp=5.0, ev_kw=7.0), BRUSSELS, seed=9).day(date(2024, 5, 4))
    assert np.array_equal(plain.load_w, sunny.load_w)
    assert sunny.export_wh > 0 and np.min(sunny.net_w) < 0  # a grid meter: export is negative power


def test_dst_days_have_23_and_25_hours_and_keep_their_energy():
    prof = LoadProfile("kili", MeterParams(), BRUSSELS, seed=1)
    spring, autumn = prof.day(date(2024, 3, 31)), prof.day(date(2024, 10, 27))
    assert len(spring.net_w) == 23 * 60 and len(autumn.net_w) == 25 * 60
    for d in (spring, autumn):
        assert d.import_wh == pytest.approx(prof.day_target_wh(d.date), rel=1e-9)
    assert spring.local_h[0] < 0.1 and 2.9 < spring.local_h[121] < 3.1  # 02:00-03:00 does not exist


def test_energy_integrates_power_across_days():
    prof = LoadProfile("kili", MeterParams(solar_kwp=4.0, ev_kw=7.4), BRUSSELS, seed=4)
    t0 = datetime(2024, 6, 1, 13, 7, 30, tzinfo=BRUSSELS.tz).timestamp()
    times = t0 + np.arange(1, 3 * 1440 + 1) * 60.0
    imp, exp = prof.energy(t0, times)
    assert np.all(np.diff(imp) >= 0) and np.all(np.diff(exp) >= 0)
    minute_mid = np.concatenate(([t0], times[:-1])) + 30
    net = prof.power(minute_mid)
    # the counters' net is the integral of power (step function: exact up to the half-minute offsets)
    assert imp[-1] - exp[-1] == pytest.approx(net.sum() / 60, rel=0.01)
