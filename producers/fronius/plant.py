"""The emulated PV plant behind the Fronius emulator: sun, panels, house, battery, meter, counters.

Deterministic for a seed and a clock, cheap enough to integrate a day in milliseconds. Production is
``bus.solar``'s clear-sky model for the site under a slowly drifting cloud cover; the inverter feeds in above
``MIN_FEED_W``, waits in standby through twilight (sun above -6 degrees) and sleeps at night. The house draws
a base load with morning and evening peaks; a battery, if there is one, takes the surplus and covers the
deficit within its power limit; the meter sees the rest. Lifetime, year and day energies are integrated in 10
s steps (``E_Day`` restarts at local midnight, ``E_Year`` on New Year's day).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from bus import solar

STEP_S = 10.0
MIN_FEED_W = 20.0
"""Below this the inverter does not feed in (startup, dusk)."""
TWILIGHT_DEG = -6.0
"""Sun elevation below which the inverter, its panels dark, goes to sleep."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the plant shows at one instant."""

    t: float
    state: str            # "running", "standby" (up, not feeding), "asleep" (night)
    pv_w: float           # AC production (0 when not running)
    load_w: float         # the house's consumption, positive
    akku_w: float         # battery, + discharging
    soc: float | None     # battery state of charge, %
    e_day: float
    e_year: float
    e_total: float
    uac: tuple[float, ...]  # per phase (one value on a single-phase inverter)
    fac: float
    udc: float

    @property
    def grid_w(self) -> float:
        """+ import: what the house draws that neither the panels nor the battery give."""
        return self.load_w - self.pv_w - self.akku_w

    @property
    def iac(self) -> tuple[float, ...]:
        return tuple(self.pv_w / len(self.uac) / u for u in self.uac)


class Plant:
    def __init__(self, *, peak_w: float = 6000.0, phases: int = 3, battery_wh: float = 0.0,
                 battery_w: float = 3000.0, latitude: float = 50.85, longitude: float = 4.35,
                 tz: str = "Europe/Brussels", seed: int = 1, total_wh: float = 12_345_678.0) -> None:
        self.peak_w, self.phases, self.battery_wh, self.battery_w = peak_w, phases, battery_wh, battery_w
        self.latitude, self.longitude = latitude, longitude
        self.tz = ZoneInfo(tz)
        rng = random.Random(seed)
        self._clouds = [(rng.uniform(0.2, 1.5), rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.15))
                        for _ in range(4)]  # (cycles per hour, phase, weight)
        self._load = [(rng.uniform(0.5, 3.0), rng.uniform(0, 2 * math.pi)) for _ in range(3)]
        self.t: float | None = None
        self.e_total, self.e_day, self.e_year = total_wh, 0.0, 0.0
        self.soc = 50.0 if battery_wh else None
        self._day: int | None = None  # local day number (days since 1970-01-01 in the site's time)
        self._akku = 0.0

    # -- the sky and the house (vectorised over times) -------------------------------------------------
    def cloud_cover(self, t: np.ndarray | float) -> np.ndarray:
        """Cloud cover 0..1, drifting over hours (the weather emulator of a demo reports the same sky)."""
        h = np.asarray(t, dtype=np.float64) / 3600
        c = sum(w * np.sin(2 * np.pi * f * h + p) for f, p, w in self._clouds)
        return np.clip(0.45 + 2.0 * c, 0.0, 1.0)

    def elevation(self, t: np.ndarray | float) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return solar.elevation_deg(t, self.latitude, self.longitude)

    def pv(self, t: np.ndarray | float) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        kwp = self.peak_w / 1000 / solar.PERFORMANCE_RATIO  # peak_w is the AC power at 1000 W/m², no clouds
        p = solar.pv_power_w(t, kwp, self.latitude, self.longitude, self.cloud_cover(t))
        return np.where(p >= MIN_FEED_W, p, 0.0)

    def _local(self, t: np.ndarray) -> np.ndarray:
        """Local clock time of epoch seconds ``t``, as epoch-like seconds (one offset unless DST changes)."""
        ends = [datetime.fromtimestamp(float(x), self.tz).utcoffset().total_seconds() for x in (t[0], t[-1])]
        if ends[0] == ends[1]:
            return t + ends[0]
        return t + np.array([datetime.fromtimestamp(float(x), self.tz).utcoffset().total_seconds()
                             for x in t])

    def house(self, t: np.ndarray | float) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        h = np.mod(self._local(t), 86400) / 3600

        def bump(at: float, width: float) -> np.ndarray:
            return np.exp(-((h - at) / width) ** 2)

        wobble = sum(np.sin(2 * np.pi * f * t / 3600 + p) for f, p in self._load) * 60
        return 280.0 + 900 * bump(7.5, 0.8) + 400 * bump(12.5, 1.0) + 1600 * bump(19.0, 1.5) + wobble

    # -- state -------------------------------------------------------------------------------------------
    def _advance(self, t: float) -> None:
        """Integrate the counters and the battery up to ``t`` in ``STEP_S`` steps."""
        if self.t is None or t <= self.t:
            self.t = t if self.t is None else self.t
            return
        edges = np.append(np.arange(self.t, t, STEP_S), t)
        dts, mids = np.diff(edges), (edges[:-1] + edges[1:]) / 2
        pv, load = self.pv(mids), self.house(mids)
        days = np.floor(self._local(mids) / 86400).astype(np.int64)
        for k in range(mids.size):
            day = int(days[k])
            if day != self._day:
                if self._day is not None:
                    self.e_day = 0.0
                    if _year(day) != _year(self._day):
                        self.e_year = 0.0
                self._day = day
            self._akku = self._battery(float(pv[k]), float(load[k]), float(dts[k]))
            wh = float(pv[k]) * float(dts[k]) / 3600
            self.e_total += wh
            self.e_day += wh
            self.e_year += wh
        self.t = t

    def _battery(self, pv: float, load: float, dt: float) -> float:
        """Battery power (+ discharging) for a step of ``dt`` s, its state of charge moved."""
        if not self.battery_wh or self.soc is None:
            return 0.0
        power = max(-self.battery_w, min(self.battery_w, load - pv))  # > 0: covering a deficit
        if power < 0:
            power = -min(-power, (100.0 - self.soc) / 100 * self.battery_wh * 3600 / dt)
        else:
            power = min(power, self.soc / 100 * self.battery_wh * 3600 / dt)
        self.soc = max(0.0, min(100.0, self.soc - power * dt / 3600 / self.battery_wh * 100))
        return power

    def at(self, t: float) -> Snapshot:
        """The plant at epoch ``t`` (never before the last instant asked: its time only moves forward)."""
        t = max(t, self.t if self.t is not None else t)
        if self._day is None:
            self._day = int(self._local(np.array([t]))[0] // 86400)
        self._advance(t)
        akku = self._akku
        pv = float(self.pv(t)[0])
        elevation = float(self.elevation(t)[0])
        state = "running" if pv > 0 else "standby" if elevation > TWILIGHT_DEG else "asleep"
        uac = tuple(230.0 + 2.5 * math.sin(t / 60.0 + k) + math.sin(t / 7.0) for k in range(self.phases))
        return Snapshot(t, state, pv, float(self.house(t)[0]), akku, self.soc, self.e_day, self.e_year,
                        self.e_total, uac, 50.0 + 0.02 * math.sin(t / 13.0),
                        620.0 if self.phases == 3 else 360.0)


def _year(day: int) -> int:
    return (date(1970, 1, 1) + timedelta(days=day)).year
