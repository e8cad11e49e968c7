"""A household's net power as a pure function of (time, parameters, seed): load, solar and EV charging.

Why pure: the same meter must produce the same reading for the same moment whether it runs live, is
restarted mid-day, replays a day it never uploaded, or runs in a test without MQTT. So nothing here
keeps history: each local day is rebuilt from its date alone, at one-minute resolution, with random
draws from a generator seeded by (seed, serial, date, component). One component's draws never shift
another's, so giving a meter solar panels does not change when its kettle boils.

A day is made of
- the always-on base load (``base_w``) with a little noise,
- the household's activity: a curve with morning, lunch and evening bumps whose shape differs on
  weekdays and weekends (``SHAPES``), with minute-to-minute noise,
- appliance switching events (``APPLIANCES``): start times drawn where the household is active,
- the day's energy target: ``daily_kwh`` times a seasonal factor, a weekday/weekend factor and a
  log-normal day-to-day factor; the activity is scaled so base + activity + appliances meets it,
- PV production (see bus/solar.py) under the day's own clouds, and
- EV charging sessions, which may run past midnight into the next day.

Net power (what the meter sees) = load + EV - solar: positive is import, negative export.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

from bus import solar
from producers.sim.config import MeterParams

STEP_S = 60
"""Resolution of the profile: power is constant within each minute."""


@dataclass(frozen=True)
class Shape:
    """The activity curve of one kind of day (relative units; only the proportions matter)."""

    night: float            # level while everyone sleeps (standby beyond base_w)
    awake: float            # level while people are up and about
    wake_before_peak_h: float
    bedtime_h: float
    morning: float
    morning_width_h: float
    lunch: float
    lunch_hour: float
    lunch_width_h: float
    evening: float
    evening_width_h: float


SHAPES: dict[bool, Shape] = {
    # weekday: out at work/school in the day, sharp morning, big evening
    False: Shape(night=0.05, awake=0.25, wake_before_peak_h=1.0, bedtime_h=23.0,
                 morning=1.0, morning_width_h=0.8, lunch=0.15, lunch_hour=12.5, lunch_width_h=1.0,
                 evening=1.6, evening_width_h=1.6),
    # weekend: late lazy morning, people home all day, lunch cooked at home
    True: Shape(night=0.05, awake=0.5, wake_before_peak_h=1.0, bedtime_h=23.5,
                morning=0.8, morning_width_h=1.2, lunch=0.6, lunch_hour=12.5, lunch_width_h=1.2,
                evening=1.5, evening_width_h=1.8),
}


@dataclass(frozen=True)
class Appliance:
    name: str
    power_w: float
    minutes: float
    weekday_per_day: float
    weekend_per_day: float


APPLIANCES: tuple[Appliance, ...] = (
    Appliance("kettle", 2000, 3, 2.0, 3.0),
    Appliance("microwave", 900, 4, 1.0, 1.0),
    Appliance("hob", 1500, 25, 0.6, 0.9),
    Appliance("oven", 2200, 45, 0.3, 0.6),
    Appliance("dishwasher", 1300, 70, 0.5, 0.7),
    Appliance("washing_machine", 900, 90, 0.35, 0.8),
    Appliance("tumble_dryer", 2300, 60, 0.15, 0.4),
    Appliance("vacuum", 1200, 20, 0.1, 0.4),
)
REFERENCE_KWH = 10.0
"""The appliance rates above are for a household using this much a day; they scale with daily_kwh."""

APPLIANCE_SHARE_MAX = 0.85
"""Appliances may take at most this share of the day's non-base energy; beyond it they are scaled down."""

# one random stream per component (see module doc)
_DAY, _NOISE, _APPLIANCES, _CLOUDS, _EV = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Site:
    """Where the meters are: the time zone for local days, coordinates for the sun."""

    tz: ZoneInfo
    latitude: float = 50.85
    longitude: float = 4.35


@dataclass
class Day:
    """One local day of a meter's profile, minute by minute."""

    date: date
    start_s: float
    end_s: float
    local_h: np.ndarray    # local clock hour (fractional) at the middle of each minute
    load_w: np.ndarray
    solar_w: np.ndarray
    ev_w: np.ndarray
    net_w: np.ndarray
    cum_import_wh: np.ndarray  # n+1 values: energy imported from midnight to each minute boundary
    cum_export_wh: np.ndarray

    @property
    def import_wh(self) -> float:
        return float(self.cum_import_wh[-1])

    @property
    def export_wh(self) -> float:
        return float(self.cum_export_wh[-1])

    def _index(self, t: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((t - self.start_s) / STEP_S).astype(np.int64), 0, len(self.net_w) - 1)

    def cumulative(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Import and export energy (Wh) from this day's midnight to ``t`` (within the day, end included)."""
        t = np.asarray(t, dtype=np.float64)
        i = self._index(t)
        frac_s = np.clip(t - self.start_s - i * STEP_S, 0.0, STEP_S)
        imp = self.cum_import_wh[i] + frac_s * np.maximum(self.net_w[i], 0.0) / 3600.0
        exp = self.cum_export_wh[i] + frac_s * np.maximum(-self.net_w[i], 0.0) / 3600.0
        return imp, exp


class LoadProfile:
    """The profile of one meter: ``serial`` and ``seed`` pick its randomness, ``params`` its behaviour."""

    def __init__(self, serial: str, params: MeterParams, site: Site, seed: int = 0, cache_days: int = 8):
        self.serial, self.params, self.site, self.seed = serial, params, site, seed
        self._serial_key = zlib.crc32(serial.encode())
        self._days: OrderedDict[date, Day] = OrderedDict()
        self._cache_days = cache_days

    # ---- public -------------------------------------------------------------------------------
    def date_of(self, t: float) -> date:
        """The local date a moment belongs to."""
        return datetime.fromtimestamp(t, self.site.tz).date()

    def day(self, d: date) -> Day:
        """The whole local day ``d`` (built on first use, kept in a small cache)."""
        if (hit := self._days.get(d)) is not None:
            self._days.move_to_end(d)
            return hit
        built = self._build(d)
        self._days[d] = built
        while len(self._days) > self._cache_days:
            self._days.popitem(last=False)
        return built

    def power(self, times: np.ndarray | list[float]) -> np.ndarray:
        """Net power (W, import positive) at each time: the minute that ends at or contains it."""
        return self.sample(times)["net_w"]

    def sample(self, times: np.ndarray | list[float]) -> dict[str, np.ndarray]:
        """load_w, solar_w, ev_w and net_w at each time (the minute ending at or containing it)."""
        t = np.asarray(times, dtype=np.float64) - 1e-3  # a reading at hh:mm:00 shows the minute just ended
        out = {k: np.empty_like(t) for k in ("load_w", "solar_w", "ev_w", "net_w")}
        for d in sorted({self.date_of(x) for x in np.unique(t)}):
            day = self.day(d)
            sel = (t >= day.start_s) & (t < day.end_s)
            i = day._index(t[sel])
            for key in out:
                out[key][sel] = getattr(day, key)[i]
        return out

    def energy(self, t0: float, times: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray]:
        """Import and export energy (Wh) from ``t0`` to each of ``times`` (ascending, all >= t0).

        Walks day by day, so it integrates gaps of any length (a meter catching up after downtime).
        """
        times = np.asarray(times, dtype=np.float64)
        imp = np.empty_like(times)
        exp = np.empty_like(times)
        day = self.day(self.date_of(t0))
        i0, e0 = day.cumulative(t0)
        acc_i, acc_e = -float(i0), -float(e0)
        j = 0
        while j < len(times):
            k = int(np.searchsorted(times, day.end_s, side="right"))
            if k > j:
                ci, ce = day.cumulative(times[j:k])
                imp[j:k] = acc_i + ci
                exp[j:k] = acc_e + ce
                j = k
            acc_i += day.import_wh
            acc_e += day.export_wh
            if j < len(times):
                day = self.day(day.date + timedelta(days=1))
        return np.maximum(imp, 0.0), np.maximum(exp, 0.0)

    # ---- building one day ----------------------------------------------------------------------
    def _rng(self, d: date, component: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._serial_key, d.toordinal(), component])

    def _midnight(self, d: date) -> float:
        return datetime.combine(d, time(), tzinfo=self.site.tz).timestamp()

    def _build(self, d: date) -> Day:
        p = self.params
        start, end = self._midnight(d), self._midnight(d + timedelta(days=1))
        n = int(round((end - start) / STEP_S))
        t_mid = start + STEP_S * np.arange(n) + STEP_S / 2
        local_h = self._local_hours(start, t_mid)
        weekend = d.weekday() >= 5

        activity = activity_curve(local_h, p, weekend)
        noise_rng = self._rng(d, _NOISE)
        x_act = smooth_noise(noise_rng, n, 5)
        x_base = smooth_noise(noise_rng, n, 30)
        activity = activity * np.exp(p.noise * x_act - p.noise ** 2 / 2)
        base = p.base_w * np.clip(1.0 + 0.5 * p.noise * x_base, 0.5, 1.5)
        appliances = self._appliances(d, n, activity) if p.appliances else np.zeros(n)

        target_wh = self.day_target_wh(d)
        avail = target_wh - base.sum() / 60.0
        appl_e = appliances.sum() / 60.0
        act_e = activity.sum() / 60.0
        if avail <= 0:
            k_act, appliances = 0.0, np.zeros(n)
        elif appl_e <= APPLIANCE_SHARE_MAX * avail:
            k_act = (avail - appl_e) / act_e
        else:
            appliances = appliances * (APPLIANCE_SHARE_MAX * avail / appl_e)
            k_act = (1 - APPLIANCE_SHARE_MAX) * avail / act_e
        load = base + k_act * activity + appliances

        solar_w = self._solar(d, t_mid) if p.solar_kwp > 0 else np.zeros(n)
        ev_w = np.zeros(n)
        if p.ev_kw > 0:
            for s, e, w in self._ev_sessions(d - timedelta(days=1)) + self._ev_sessions(d):
                paint(ev_w, start, s, e, w)

        net = load + ev_w - solar_w
        cum_i = np.concatenate(([0.0], np.cumsum(np.maximum(net, 0.0)) / 60.0))
        cum_e = np.concatenate(([0.0], np.cumsum(np.maximum(-net, 0.0)) / 60.0))
        return Day(d, start, end, local_h, load, solar_w, ev_w, net, cum_i, cum_e)

    def _local_hours(self, start: float, t_mid: np.ndarray) -> np.ndarray:
        """Local clock hour of each minute; the UTC offset is looked up per hour (DST days have 23 or 25)."""
        hours = int(math.ceil((t_mid[-1] - start) / 3600)) + 1
        offsets = np.array([datetime.fromtimestamp(start + 3600 * k, timezone.utc).astimezone(self.site.tz)
                            .utcoffset().total_seconds() for k in range(hours)])
        off = offsets[((t_mid - start) // 3600).astype(np.int64)]
        return np.mod(t_mid + off, 86400.0) / 3600.0

    def day_target_wh(self, d: date) -> float:
        """Consumption on day ``d`` (EV excluded, before solar): what the load integrates to."""
        p = self.params
        z = float(np.clip(self._rng(d, _DAY).standard_normal(), -2.5, 2.5))
        return p.daily_kwh * 1000.0 * season_factor(d, p.season_amplitude, self.site.latitude) \
            * weekday_factor(d, p.weekend_factor) * math.exp(p.day_variation * z - p.day_variation ** 2 / 2)

    def _appliances(self, d: date, n: int, activity: np.ndarray) -> np.ndarray:
        """Switching events, started where the household is active and finished before midnight."""
        rng = self._rng(d, _APPLIANCES)
        weekend = d.weekday() >= 5
        scale = self.params.daily_kwh / REFERENCE_KWH
        where = activity / activity.sum()
        out = np.zeros(n)
        for a in APPLIANCES:
            count = rng.poisson((a.weekend_per_day if weekend else a.weekday_per_day) * scale)
            for _ in range(count):
                minutes = max(1, int(round(a.minutes * rng.uniform(0.7, 1.3))))
                power = a.power_w * rng.uniform(0.9, 1.1)
                i = min(int(rng.choice(n, p=where)), n - minutes)
                out[i:i + minutes] += power
        return out

    def _solar(self, d: date, t_mid: np.ndarray) -> np.ndarray:
        p, site = self.params, self.site
        cover = cloud_cover(self._rng(d, _CLOUDS), len(t_mid), p.cloudiness)
        return solar.pv_power_w(t_mid, p.solar_kwp, site.latitude, site.longitude, cover)

    def _ev_sessions(self, d: date) -> list[tuple[float, float, float]]:
        """(start_s, end_s, power_w) of the EV session that starts on day ``d``, if any."""
        p = self.params
        if p.ev_kw <= 0:
            return []
        rng = self._rng(d, _EV)
        happens = rng.random() < p.ev_sessions_per_week / 7.0
        weekday_arrival = float(np.clip(rng.normal(18.5, 1.2), 15.5, 22.5))
        weekend_arrival = float(rng.uniform(10.0, 20.0))
        energy_kwh = p.ev_kwh * float(rng.uniform(0.5, 1.5))
        if not happens:
            return []
        arrival_h = weekend_arrival if d.weekday() >= 5 else weekday_arrival
        begin = datetime.combine(d, time(), tzinfo=self.site.tz) + timedelta(hours=arrival_h)
        start = begin.timestamp()
        hours = min(energy_kwh / p.ev_kw, 14.0)
        return [(start, start + hours * 3600.0, p.ev_kw * 1000.0)]


# ---- pure helpers (module level so tests can look at them) ----------------------------------------

def _circular(h: np.ndarray) -> np.ndarray:
    """Hours folded into -12..12, so bumps near midnight wrap around."""
    return np.mod(h + 12.0, 24.0) - 12.0


def _bump(h: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * (_circular(h - centre) / width) ** 2)


def activity_curve(local_h: np.ndarray, p: MeterParams, weekend: bool) -> np.ndarray:
    """The household's activity (relative units) at each local hour for a weekday or weekend day."""
    s = SHAPES[weekend]
    morning = p.morning_peak_hour + (p.weekend_shift_h if weekend else 0.0)
    wake = morning - s.wake_before_peak_h
    since_wake = np.mod(local_h - wake, 24.0)
    awake_len = (s.bedtime_h - wake) % 24.0
    up = 1 / (1 + np.exp(-since_wake / 0.3)) * 1 / (1 + np.exp(-(awake_len - since_wake) / 0.3))
    return (s.night + (s.awake - s.night) * up
            + s.morning * _bump(local_h, morning, s.morning_width_h)
            + s.lunch * _bump(local_h, s.lunch_hour, s.lunch_width_h)
            + s.evening * _bump(local_h, p.evening_peak_hour, s.evening_width_h))


def season_factor(d: date, amplitude: float, latitude: float) -> float:
    """1 + amplitude in mid-winter, 1 - amplitude in mid-summer (hemisphere from the latitude)."""
    peak_day = 15 if latitude >= 0 else 197  # mid-January north, mid-July south
    doy = d.timetuple().tm_yday
    return 1.0 + amplitude * math.cos(2 * math.pi * (doy - peak_day) / 365.25)


def weekday_factor(d: date, weekend_factor: float) -> float:
    """A weekday's or weekend day's share, normalised so a week averages to 1."""
    norm = 7.0 / (5.0 + 2.0 * weekend_factor)
    return norm * (weekend_factor if d.weekday() >= 5 else 1.0)


def smooth_noise(rng: np.random.Generator, n: int, minutes: float) -> np.ndarray:
    """Standard-normal noise correlated over about ``minutes`` (white noise through an exponential kernel)."""
    length = max(1, int(4 * minutes))
    kernel = np.exp(-np.arange(length) / minutes)
    kernel /= np.sqrt(np.sum(kernel ** 2))
    white = rng.standard_normal(n + length - 1)
    return np.convolve(white, kernel, mode="valid")


CUMULUS_CYCLE_MIN = 8.0
"""Mean minutes of one passing cloud plus the sunny gap after it, on a broken-cloud day."""


def cloud_cover(rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
    """Minute-by-minute cloud cover 0..1: a day's cover (beta around ``mean``), drifting clouds, and on a
    broken-cloud day passing cumulus.

    Why the cumulus: under broken clouds the sun is either out or hidden, switching every few minutes
    (irradiance ramps of most of its value within a minute), not a smooth average cover. A relay on solar
    surplus meets exactly that, so the sim must show it. The sun/shade sequence is a two-state Markov chain
    whose shaded share is the local cover; its weight is largest at half cover and vanishes on clear and
    overcast days, which keep their smooth cover."""
    day_cover = float(rng.beta(2.0 * mean, 2.0 * (1.0 - mean))) if 0.0 < mean < 1.0 else mean
    drift = smooth_noise(rng, n, 20)
    spread = 0.5 * math.sqrt(day_cover * (1.0 - day_cover))
    cover = np.clip(day_cover + spread * drift, 0.0, 1.0)
    draws = rng.random(n)
    into_shade = np.minimum(1.0, 1.0 / (CUMULUS_CYCLE_MIN * np.maximum(1.0 - cover, 1e-3)))
    into_sun = np.minimum(1.0, 1.0 / (CUMULUS_CYCLE_MIN * np.maximum(cover, 1e-3)))
    shaded = np.empty(n)
    state = draws[0] < day_cover
    for i, (u, a, b) in enumerate(zip(draws.tolist(), into_shade.tolist(), into_sun.tolist())):
        state = (u >= b) if state else (u < a)
        shaded[i] = state
    weight = 4.0 * cover * (1.0 - cover)
    return np.clip((1.0 - weight) * cover + weight * shaded, 0.0, 1.0)


def paint(minutes_w: np.ndarray, start_s: float, begin: float, end: float, power_w: float) -> None:
    """Add ``power_w`` over [begin, end) to minutes starting at ``start_s`` (partial minutes pro rata)."""
    n = len(minutes_w)
    lo = max(0, int((begin - start_s) // STEP_S))
    hi = min(n, int(math.ceil((end - start_s) / STEP_S)))
    if hi <= lo:
        return
    edges = start_s + STEP_S * np.arange(lo, hi + 1)
    overlap = np.clip(np.minimum(edges[1:], end) - np.maximum(edges[:-1], begin), 0.0, STEP_S)
    minutes_w[lo:hi] += power_w * overlap / STEP_S
