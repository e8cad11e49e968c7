"""Synthetic household-power-consumption years, in the dataset's own text format.

The seed's 2024 file is not redistributable and the UCI file stops in 2010, so wattbus makes its own:
a simulated household near Brussels, minute by minute, written exactly like the seed's file (same
header, ``dd/mm/yyyy;hh:mm:ss``, three decimals, empty fields for missing rows) so that everything
reading the real file reads this one unchanged.

What the simulation models (all of it vectorised with numpy; a year takes about a second):

* occupancy per day: wake-up, leaving for work and coming back on workdays, some days worked from
  home, late weekends, a summer and a Christmas holiday with the house empty;
* lighting when someone is awake and it is dark (sunrise and sunset computed for the site, so
  lighting follows the season), electronics, a kettle, a thermostatic space heater on cold days;
* the appliances of the three sub-meters (:data:`APPLIANCES`, data not code): kitchen (dishwasher,
  oven, microwave), laundry (washer, drier, the fridge's compressor duty cycle, a light), water
  heater (tank reheats after showers, night-tariff recovery) and summer air conditioning;
* sub-meters count whole Wh pulses (the fraction carries over to the next minute, which is why the
  seed shows 17, 17, 18, 17 Wh for a 1050 W heater), and the global power always covers them;
* reactive power from the motors and electronics, current = S / V at the meter's 0.2 A resolution,
  a voltage near 240 V with its own slow drift, a daily sag at the grid's peaks and a small drop
  under the house's own load;
* about 1.25 % missing rows in runs: mostly a few minutes, plus a few outages of hours to days.

Wall-clock minutes: one row per local minute of every day (366 x 1440 rows for 2024), like the real
file, which records local time without any daylight-saving mark: the spring-forward hour has rows
(it never happened; readers skip it) and the fall-back hour appears once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple, TextIO
from zoneinfo import ZoneInfo

import numpy as np

from producers.hhpc.dataset import HEADER, MINUTES_PER_DAY

# --------------------------------------------------------------------------------------------------
# The house, as data
# --------------------------------------------------------------------------------------------------

#: Where the simulated house stands (sun times and the daylight-saving calendar come from here).
LATITUDE = 50.85
LONGITUDE = 4.35
TIMEZONE = "Europe/Brussels"

KITCHEN, LAUNDRY, HEATING = 1, 2, 3  # sub-meter numbers; 0 = not sub-metered


class Phase(NamedTuple):
    """A stretch of an appliance's programme: ``minutes`` at ``watts``.

    With ``on``/``off`` set, a thermostat cycles the load: ``on`` minutes at ``watts``, ``off`` at
    ``idle`` watts.
    """

    minutes: int
    watts: float
    on: int = 0
    off: int = 0
    idle: float = 0.0


class Appliance(NamedTuple):
    meter: int  # sub-meter that sees it (0 = only the global meter)
    var_per_w: float  # reactive power drawn per watt (motors high, heating elements zero)
    programme: tuple[Phase, ...]


APPLIANCES: dict[str, Appliance] = {
    "dishwasher": Appliance(
        KITCHEN,
        0.08,
        (Phase(4, 90), Phase(18, 2050, 8, 1, 130), Phase(28, 140), Phase(14, 2000, 6, 1, 130), Phase(25, 12)),
    ),
    "oven": Appliance(KITCHEN, 0.0, (Phase(12, 2400), Phase(48, 2400, 3, 3, 25))),
    "microwave": Appliance(KITCHEN, 0.35, (Phase(3, 1250),)),
    "washer": Appliance(
        LAUNDRY,
        0.25,
        (Phase(5, 40), Phase(16, 2100), Phase(42, 240), Phase(20, 150), Phase(8, 480), Phase(3, 20)),
    ),
    "drier": Appliance(LAUNDRY, 0.06, (Phase(75, 2500, 8, 3, 250), Phase(12, 240))),
    "laundry_light": Appliance(LAUNDRY, 0.1, (Phase(7, 60),)),
    "kettle": Appliance(0, 0.0, (Phase(3, 2050),)),
}

#: Loads whose length is decided per event rather than by a programme.
WATER_HEATER_W = 1050.0  # sub-meter 3, resistive: 17.5 Wh a minute
AIR_CONDITIONER_W = 1350.0  # sub-meter 3, compressor cycles with the heat
AIR_CONDITIONER_VAR_PER_W = 0.35
SPACE_HEATER_W = 1800.0  # not sub-metered, resistive
FRIDGE_W = 105.0  # sub-meter 2, compressor
FRIDGE_VAR_PER_W = 0.7

# --------------------------------------------------------------------------------------------------
# Calendar and sun
# --------------------------------------------------------------------------------------------------


def _utc_offsets_min(year: int, days: int) -> np.ndarray:
    """The site's UTC offset at noon of each day, in minutes (60 in winter, 120 in summer)."""
    tz = ZoneInfo(TIMEZONE)
    noon = datetime(year, 1, 1, 12, tzinfo=tz)
    return np.array([(noon + timedelta(days=d)).utcoffset().total_seconds() / 60 for d in range(days)])


def _sun_times(doy: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local sunrise and sunset in minutes after midnight (NOAA's low-precision formulas)."""
    b = 2 * np.pi * (doy - 81) / 364
    eot = 9.87 * np.sin(2 * b) - 7.53 * np.cos(b) - 1.5 * np.sin(b)
    decl = np.radians(-23.44) * np.cos(2 * np.pi * (doy + 10) / 365)
    lat = math.radians(LATITUDE)
    cos_w = (math.sin(math.radians(-0.833)) - math.sin(lat) * np.sin(decl)) / (math.cos(lat) * np.cos(decl))
    half_day = np.degrees(np.arccos(np.clip(cos_w, -1, 1))) * 4  # minutes
    noon = 720 - 4 * LONGITUDE - eot + offsets
    return noon - half_day, noon + half_day


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def _ar1(rng: np.random.Generator, n: int, rho: float, sigma: float) -> np.ndarray:
    """A mean-reverting random series (stationary AR(1)); used for short series (days, hours)."""
    e = rng.normal(0.0, sigma * math.sqrt(1 - rho * rho), n).tolist()
    x = rng.normal(0.0, sigma)
    out = []
    for v in e:
        x = rho * x + v
        out.append(x)
    return np.array(out)


def _smooth_noise(rng: np.random.Generator, n: int, step: int, sigma: float) -> np.ndarray:
    """Noise that wanders over ``step`` minutes: random knots, linearly interpolated."""
    knots = rng.normal(0.0, sigma, n // step + 2)
    return np.interp(np.arange(n) / step, np.arange(len(knots)), knots)


def _programme(app: Appliance, stretch: float) -> np.ndarray:
    """Per-minute watts of one run of an appliance, its phases stretched by ``stretch``."""
    parts = []
    for ph in app.programme:
        n = max(1, round(ph.minutes * stretch))
        if ph.on:
            t = np.arange(n) % (ph.on + ph.off)
            parts.append(np.where(t < ph.on, ph.watts, ph.idle))
        else:
            parts.append(np.full(n, ph.watts))
    return np.concatenate(parts)


class _House:
    """Accumulates per-minute active power per meter and reactive power."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.p = np.zeros((4, n))  # watts per meter: 0 unmetered, 1..3 sub-meters
        self.q = np.zeros(n)

    def add(self, meter: int, start: int, watts: np.ndarray, var_per_w: float) -> None:
        if start >= self.n or start + len(watts) <= 0:
            return
        lo, hi = max(start, 0), min(start + len(watts), self.n)
        w = watts[lo - start : hi - start]
        self.p[meter, lo:hi] += w
        if var_per_w:
            self.q[lo:hi] += w * var_per_w

    def run(self, name: str, start: int, rng: np.random.Generator, stretch: float = 1.0) -> int:
        """Add one run of a programmed appliance; returns the minute it ends."""
        app = APPLIANCES[name]
        watts = _programme(app, stretch) * rng.uniform(0.96, 1.04)
        self.add(app.meter, start, watts, app.var_per_w)
        return start + len(watts)


# --------------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------------


class _Year(NamedTuple):
    """Integer columns, in thousandths of the file's units, plus the missing-row mask."""

    active: np.ndarray  # W = thousandths of kW
    reactive: np.ndarray
    voltage: np.ndarray
    current: np.ndarray
    sub: np.ndarray  # (3, n)
    missing: np.ndarray  # bool


def _days_off(rng: np.random.Generator, year: int, days: int) -> np.ndarray:
    """Holidays with the house empty: two weeks in July/August and a few days around Christmas."""
    away = np.zeros(days, bool)
    summer = date(year, 7, 1).timetuple().tm_yday - 1 + int(rng.integers(0, 45))
    away[summer : summer + int(rng.integers(10, 17))] = True
    xmas = date(year, 12, 26).timetuple().tm_yday - 1 + int(rng.integers(-2, 2))
    away[xmas : xmas + int(rng.integers(3, 6))] = True
    return away


def _simulate(year: int, seed: int) -> _Year:
    rng = np.random.default_rng([seed, year])
    first = date(year, 1, 1)
    days = (date(year + 1, 1, 1) - first).days
    n = days * MINUTES_PER_DAY
    doy = np.arange(1, days + 1)
    weekday = (first.weekday() + np.arange(days)) % 7  # 0 = Monday
    minute = np.tile(np.arange(MINUTES_PER_DAY), days)
    day = np.repeat(np.arange(days), MINUTES_PER_DAY)

    # Weather: daily mean temperature (coldest mid-January) with multi-day weather swings.
    temp = 10.5 - 7.5 * np.cos(2 * np.pi * (doy - 20) / days) + _ar1(rng, days, 0.8, 3.0)
    tmax = temp + 5 + rng.normal(0, 1.2, days)
    winter = np.clip((15.0 - temp) / 13.0, 0, 1)  # 0 in warm weather, ~1 on cold days

    offsets = _utc_offsets_min(year, days)
    sunrise, sunset = _sun_times(doy, offsets)

    # Who is home and awake, per day.
    away = _days_off(rng, year, days)
    weekend = weekday >= 5
    home_all_day = weekend | (rng.random(days) < 0.25)  # weekends, and days worked from home
    wake = np.where(weekend, rng.normal(510, 45, days), rng.normal(395, 18, days))
    friday_saturday = (weekday == 4) | (weekday == 5)
    sleep = np.where(friday_saturday, rng.normal(1420, 40, days), rng.normal(1375, 30, days))
    leave = np.where(home_all_day, -1, wake + rng.normal(75, 12, days))
    back = np.where(home_all_day, -1, rng.normal(1070, 35, days))
    outing = weekend & (rng.random(days) < 0.4)  # a weekend afternoon out
    leave = np.where(outing, rng.normal(840, 40, days), leave)
    back = np.where(outing, leave + rng.normal(200, 45, days), back)
    wake, sleep = np.clip(wake, 300, 720), np.clip(sleep, 1260, 1520)

    m = minute
    awake = (m >= wake[day]) & (m < np.minimum(sleep, 1440)[day])
    late = np.concatenate([[0.0], sleep[:-1] - 1440])  # past-midnight bedtime of the night before
    awake |= m < late[day]
    out = (m >= leave[day]) & (m < back[day])
    present = ~away[day]
    active = awake & ~out & present

    house = _House(n)

    # Always on: fridge-freezer, router, standby; a bit more in winter (boiler pump, more standby).
    base = 185 + 70 * winter[day] + _smooth_noise(rng, n, 90, 15) + rng.normal(0, 4, n)
    house.add(0, 0, np.maximum(base, 100), 0.35)

    # Lighting follows the sun: when someone is up and it is dark indoors.
    dusk = sunset[day] - 35 + 15 * rng.standard_normal(days)[day]
    dawn = sunrise[day] + 30
    dark = (m < dawn) | (m >= dusk)
    level = (180 + 160 * winter + rng.normal(0, 30, days))[day]
    lights = np.where(active & dark, level * (1 + 0.25 * _smooth_noise(rng, n, 20, 1.0)), 0)
    house.add(0, 0, np.maximum(lights, 0), 0.12)

    # Electronics and the rest of daily life; TV in the evening.
    life = np.where(active, 160 + np.abs(_smooth_noise(rng, n, 15, 160)), 0)
    tv = active & (m >= 1170) & (m < 1380)
    house.add(0, 0, life + np.where(tv, 120, 0), 0.3)

    # Space heater on cold days while someone is home: a thermostat cycling with the cold.
    duty = np.clip(0.7 * winter - 0.1, 0, 0.6)[day]
    phase = rng.integers(0, 15, days)[day]
    heating = active & (((m + phase) % 15) < duty * 15)
    house.add(0, 0, np.where(heating, SPACE_HEATER_W, 0), 0.0)

    # Fridge compressor: on ~15 min, off longer when the room is cool.
    cycles = n // 30 + 100
    on_len = rng.integers(12, 19, cycles)
    off_base = rng.integers(26, 42, cycles)
    at = np.clip(np.cumsum(on_len + off_base) // MINUTES_PER_DAY, 0, days - 1)
    off_len = np.maximum(10, np.round(off_base * (1.25 - 0.45 * (1 - winter[at])))).astype(int)
    fridge = np.repeat(np.tile([1.0, 0.0], cycles), np.column_stack([on_len, off_len]).ravel())[:n]
    fridge = fridge * FRIDGE_W + 2.0  # 2 W of electronics
    house.add(LAUNDRY, 0, fridge, FRIDGE_VAR_PER_W)

    heater_on = np.zeros(n, bool)
    ac_on = np.zeros(n, bool)
    for d in range(days):
        _one_day(house, rng, d, bool(away[d]), bool(weekend[d]), wake[d], sleep[d], leave[d], back[d],
                 float(winter[d]), float(tmax[d]), heater_on, ac_on)
    house.add(HEATING, 0, heater_on * WATER_HEATER_W, 0.0)
    house.add(HEATING, 0, ac_on * AIR_CONDITIONER_W, AIR_CONDITIONER_VAR_PER_W)

    return _meter(rng, house, day, m, weekend, n)


def _one_day(house: _House, rng: np.random.Generator, d: int, away: bool, weekend: bool, wake: float,
             sleep: float, leave: float, back: float, winter: float, tmax: float,
             heater_on: np.ndarray, ac_on: np.ndarray) -> None:
    """The day's appliance events."""
    t0 = d * MINUTES_PER_DAY

    def at(minute: float) -> int:
        return t0 + int(round(minute))

    def heat(start: int, minutes: float) -> None:
        heater_on[max(start, 0) : max(start + int(round(minutes)), 0)] = True

    # Water heater: a night-tariff recovery run every night (standby losses only when empty).
    night = at(1410 + rng.normal(0, 10))  # the night-tariff timer, 23:30
    if away:
        heat(night, rng.uniform(8, 20))
        return
    hot_water_kwh = max(1.0, 3.6 + 2.6 * winter + rng.normal(0, 0.6))
    morning_share = rng.uniform(0.25, 0.4)
    heat(at(wake + rng.normal(25, 8)), morning_share * hot_water_kwh / WATER_HEATER_W * 60_000)
    evening_share = 0.0
    if rng.random() < 0.5:  # a bath or evening showers
        evening_share = rng.uniform(0.15, 0.3)
        evening = (back if back > 0 and back < 1200 else 1050) + rng.normal(60, 30)
        heat(at(evening), evening_share * hot_water_kwh / WATER_HEATER_W * 60_000)
    heat(night, (1 - morning_share - evening_share) * hot_water_kwh / WATER_HEATER_W * 60_000)

    home_midday = leave < 0 or leave > 780 or back < 720
    dinner = (back if back > 0 and back > 960 else 1080) + rng.normal(40, 15)

    # Kitchen: microwave at meals, oven some evenings (and weekend lunches), dishwasher after dinner.
    if rng.random() < 0.5:
        house.run("microwave", at(wake + rng.normal(20, 5)), rng, rng.uniform(0.4, 1.0))
    if home_midday and rng.random() < 0.6:
        house.run("microwave", at(rng.normal(750, 20)), rng, rng.uniform(0.6, 1.6))
    if rng.random() < 0.7:
        house.run("microwave", at(dinner + rng.normal(0, 10)), rng, rng.uniform(0.4, 1.4))
    if weekend and rng.random() < 0.45:
        house.run("oven", at(rng.normal(720, 25)), rng, rng.uniform(0.7, 1.3))
    if rng.random() < (0.3 + 0.25 * winter):
        house.run("oven", at(dinner - rng.uniform(10, 40)), rng, rng.uniform(0.7, 1.3))
    if rng.random() < (0.7 if weekend else 0.55):
        # Straight after dinner, or at bedtime for the night tariff.
        when = dinner + rng.normal(100, 25) if rng.random() < 0.5 else min(sleep, 1430) - rng.normal(30, 10)
        house.run("dishwasher", at(when), rng, rng.uniform(0.9, 1.1))

    # Kettle at breakfast.
    if rng.random() < 0.75:
        house.run("kettle", at(wake + rng.normal(12, 4)), rng, rng.uniform(0.7, 1.2))

    # Laundry: mostly weekends; the drier in cold months (line-drying in summer).
    p_wash = 0.65 if weekend else (0.3 if leave < 0 else 0.18)
    if rng.random() < p_wash:
        start = rng.normal(600, 60) if weekend or leave < 0 else back + rng.normal(45, 15)
        house.run("laundry_light", at(start - 4), rng)
        end = house.run("washer", at(start), rng, rng.uniform(0.85, 1.25))
        house.run("laundry_light", end + int(rng.integers(0, 30)), rng)
        if rng.random() < 0.2 + 0.65 * winter:
            house.run("drier", end + int(rng.integers(5, 40)), rng, rng.uniform(0.75, 1.2))

    # Air conditioning on hot afternoons while someone is home.
    if tmax > 26:
        duty = min(0.9, 0.3 + (tmax - 26) / 8)
        start = 840 if home_midday else max(back, 900)
        span = np.arange(at(start), at(min(sleep, 1410)))
        period = 20
        ac_on[span[(span % period) < duty * period]] = True


def _meter(rng: np.random.Generator, house: _House, day: np.ndarray, m: np.ndarray,
           weekend: np.ndarray, n: int) -> _Year:
    """Turn true powers into what the meters report, at their resolutions."""
    p = house.p
    # Sub-meters count whole Wh pulses; the fractional energy carries into the next minute.
    cum = np.cumsum(p[1:] / 60.0, axis=1) + rng.random((3, 1))
    pulses = np.floor(cum)
    sub = np.diff(pulses, axis=1, prepend=np.floor(cum[:, :1] - p[1:, :1] / 60.0)).astype(np.int64)

    total = p.sum(axis=0) * (1 + rng.normal(0, 0.004, n))
    active_w = 2 * np.round(total / 2).astype(np.int64)  # the meter's 2 W resolution
    active_w = np.maximum(active_w, 60 * sub.sum(axis=0) + 2)  # global energy covers the sub-meters'

    reactive = house.q * (1 + rng.normal(0, 0.05, n)) + rng.normal(0, 6, n)
    reactive_var = 2 * np.round(np.clip(reactive, 0, None) / 2).astype(np.int64)

    # Voltage: slow drift, grid sag at the morning and evening peaks, higher at night, own-load drop.
    hour = m / 60.0
    sag = (-2.2 * np.exp(-((hour - 19.0) ** 2) / 4.5) - 1.2 * np.exp(-((hour - 8.0) ** 2) / 3.0)
           + 1.6 * np.exp(-((hour - 4.0) ** 2) / 6.0))
    hourly = _ar1(rng, n // 60 + 2, 0.97, 2.2)
    drift = np.interp(np.arange(n) / 60, np.arange(len(hourly)), hourly)
    volts = 240.6 + drift + sag + 0.5 * weekend[day] + rng.normal(0, 0.35, n)
    volts -= 0.25 * (total / volts)
    volts = np.clip(volts, 218, 254)
    centivolts = np.round(volts * 100).astype(np.int64)

    apparent = np.hypot(active_w, reactive_var)
    current_steps = np.round(apparent / (centivolts / 100) / 0.2).astype(np.int64)  # 0.2 A resolution

    return _Year(active_w, reactive_var, centivolts * 10, current_steps * 200, sub * 1000,
                 _missing_runs(rng, n))


def _missing_runs(rng: np.random.Generator, n: int) -> np.ndarray:
    """About 1.25 % of minutes missing: many short runs and a few outages of hours to days."""
    mask = np.zeros(n, bool)
    budget = int(n * rng.uniform(0.011, 0.0145))
    long_total = int(budget * rng.uniform(0.45, 0.6))
    n_long = int(rng.integers(2, 4))
    lengths = np.maximum(120, (rng.dirichlet(np.ones(n_long) * 0.8) * long_total).astype(int))
    for length in lengths:
        s = int(rng.integers(0, n - length))
        mask[s : s + length] = True
    short_total = budget - int(lengths.sum())
    while short_total > 0:
        length = int(rng.geometric(0.35)) if rng.random() < 0.92 else int(rng.integers(10, 90))
        length = min(length, short_total)
        s = int(rng.integers(0, n - length))
        mask[s : s + length] = True
        short_total -= length
    return mask


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _strings(thousandths: np.ndarray) -> np.ndarray:
    """Format non-negative fixed-point integers as '12.345', once per distinct value."""
    uniq, inverse = np.unique(thousandths, return_inverse=True)
    table = np.array([f"{v // 1000}.{v % 1000:03d}" for v in uniq.tolist()], dtype=object)
    return table[inverse.reshape(-1)]


def _write_rows(f: TextIO, year: int, sim: _Year, first_day: int, last_day: int,
                progress: Callable[[int, int], None] | None) -> int:
    times = [f"{h:02d}:{mi:02d}:00" for h in range(24) for mi in range(60)]
    total = (last_day - first_day) * MINUTES_PER_DAY
    written = 0
    chunk_days = 7
    cols = [sim.active, sim.reactive, sim.voltage, sim.current, sim.sub[0], sim.sub[1], sim.sub[2]]
    for d0 in range(first_day, last_day, chunk_days):
        d1 = min(d0 + chunk_days, last_day)
        lo, hi = d0 * MINUTES_PER_DAY, d1 * MINUTES_PER_DAY
        dates = [f"{date(year, 1, 1) + timedelta(d):%d/%m/%Y}" for d in range(d0, d1)]
        date_col = [s for s in dates for _ in range(MINUTES_PER_DAY)]
        missing = sim.missing[lo:hi]
        values = []
        for c in cols:
            s = _strings(c[lo:hi])
            s[missing] = ""
            values.append(s.tolist())
        f.write("\n".join(map(";".join, zip(date_col, times * (d1 - d0), *values))))
        f.write("\n")
        written += hi - lo
        if progress is not None:
            progress(written, total)
    return written


def generate_year(
    year: int,
    out: Path | str | TextIO,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    *,
    start: date | None = None,
    end: date | None = None,
) -> int:
    """Write a synthetic year of minute rows to ``out``; returns the number of rows written.

    Deterministic: the same (year, seed) gives the same bytes. ``start``/``end`` (end exclusive,
    both within ``year``) write only those days; they are exactly the matching lines of the full
    year's file. A path is written through a temporary file and renamed, so an interrupted run never
    leaves a half-written dataset behind. ``progress(rows_written, rows_total)`` is called as it goes.
    """
    first = date(year, 1, 1)
    days = (date(year + 1, 1, 1) - first).days
    d0 = 0 if start is None else (start - first).days
    d1 = days if end is None else (end - first).days
    if not 0 <= d0 <= d1 <= days:
        raise ValueError(f"range {start}..{end} is not within {year}")
    if progress is not None:
        progress(0, (d1 - d0) * MINUTES_PER_DAY)
    sim = _simulate(year, seed)
    if not isinstance(out, (str, os.PathLike)):
        out.write(HEADER + "\n")
        return _write_rows(out, year, sim, d0, d1, progress)
    path = Path(out)
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "w", encoding="ascii", newline="\n") as f:
            f.write(HEADER + "\n")
            rows = _write_rows(f, year, sim, d0, d1, progress)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
