"""The two weather services as data and parsers: what to ask, and the answer -> observations.

- **Open-Meteo** (``/v1/forecast``, no key): ``current`` and ``hourly`` temperature_2m, cloud_cover and
  shortwave_radiation (global horizontal irradiance; hourly values are the mean of the *preceding* hour,
  current ones of the preceding 15 minutes), times as UNIX seconds (``timeformat=unixtime``, GMT).
- **OpenWeatherMap** One Call API 3.0 (``/data/3.0/onecall``, key ``appid``, ``units=metric``): ``current``
  and 48 ``hourly`` entries with ``temp`` and ``clouds`` (%); no irradiance, so the PV estimate comes from the
  clear-sky model under the cloud cover (``bus/solar.py``: Haurwitz, Kasten-Czeplak).

An observation is (time, period, metrics); each value is checked (a number, finite, in range, in the unit the
service says it sends) and a bad one left out and named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bus import solar

LIMITS = {"temperature_c": (-90.0, 70.0), "cloud_cover_pct": (0.0, 100.0), "irradiance_w_m2": (0.0, 1500.0)}
MAX_POINTS = 400
"""An hourly forecast longer than this (16 days is 384 hours) is not one."""


def metric_keys() -> list[str]:
    return [*LIMITS, "pv_estimate_w"]


@dataclass
class Observation:
    ts: int                        # epoch ms: the end of the period the values describe
    period_s: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Parsed:
    current: Observation | None
    hourly: list[Observation]
    bad: list[str] = field(default_factory=list)


class Refused(ValueError):
    """The answer is JSON but not this service's document (its shape): the reason."""


def _number(value: Any, key: str, bad: list[str], where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        bad.append(f"{where}: {str(value)[:30]!r}")
        return None
    lo, hi = LIMITS[key]
    if not lo <= float(value) <= hi:
        bad.append(f"{where}: {value} out of range")
        return None
    return float(value)


def _time(value: Any) -> int | None:
    """UNIX seconds -> epoch ms (whole seconds, 2000..2100)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 946_684_800 <= value <= 4_102_444_800:
        return None
    return int(value) * 1000


# -- Open-Meteo ---------------------------------------------------------------------------------------------

OPEN_METEO_VARS = {"temperature_2m": "temperature_c", "cloud_cover": "cloud_cover_pct",
                   "shortwave_radiation": "irradiance_w_m2"}
OPEN_METEO_UNITS = {"temperature_2m": ("°C",), "cloud_cover": ("%",), "shortwave_radiation": ("W/m²", "W/m2")}


def open_meteo_request(lat: float, lon: float, hours: int) -> tuple[str, dict[str, str]]:
    """Hourly values from the start of the current hour (the one just ended) on: ``hours + 1`` of them."""
    names = ",".join(OPEN_METEO_VARS)
    return "/v1/forecast", {"latitude": f"{lat:.4f}", "longitude": f"{lon:.4f}", "current": names,
                            "hourly": names, "forecast_hours": str(hours + 1), "timeformat": "unixtime",
                            "timezone": "GMT"}


def parse_open_meteo(doc: Any) -> Parsed:
    if not isinstance(doc, dict):
        raise Refused(f"a JSON {type(doc).__name__}, not an object")
    bad: list[str] = []
    for block in ("current_units", "hourly_units"):
        units = doc.get(block)
        if isinstance(units, dict):
            for var, ok in OPEN_METEO_UNITS.items():
                if var in units and units[var] not in ok:
                    raise Refused(f"{block}.{var} is {str(units[var])[:12]!r}, expected {ok[0]}")
    current = None
    cur = doc.get("current")
    if isinstance(cur, dict):
        ts = _time(cur.get("time"))
        interval = cur.get("interval")
        period = float(interval) if isinstance(interval, int) and not isinstance(interval, bool) and \
            0 < interval <= 3600 else 0.0
        if ts is None:
            bad.append(f"current.time: {str(cur.get('time'))[:30]!r}")
        else:
            current = Observation(ts, period)
            for var, key in OPEN_METEO_VARS.items():
                v = _number(cur.get(var), key, bad, f"current.{var}")
                if v is not None:
                    current.metrics[key] = v
    hourly: list[Observation] = []
    h = doc.get("hourly")
    if isinstance(h, dict):
        times = h.get("time")
        if not isinstance(times, list) or len(times) > MAX_POINTS:
            raise Refused("hourly.time is not a list of at most 400 times")
        columns = {var: h.get(var) for var in OPEN_METEO_VARS}
        for var, col in columns.items():
            if col is not None and (not isinstance(col, list) or len(col) != len(times)):
                bad.append(f"hourly.{var}: not a list as long as hourly.time")
                columns[var] = None
        for i, t in enumerate(times):
            ts = _time(t)
            if ts is None:
                bad.append(f"hourly.time[{i}]: {str(t)[:30]!r}")
                continue
            point = Observation(ts, 3600.0)
            for var, key in OPEN_METEO_VARS.items():
                col = columns[var]
                v = _number(col[i], key, bad, f"hourly.{var}[{i}]") if col is not None else None
                if v is not None:
                    point.metrics[key] = v
            hourly.append(point)
    if current is None and not hourly:
        raise Refused("neither `current` nor `hourly` data")
    return Parsed(current, hourly, bad)


def open_meteo_error(doc: Any) -> str | None:
    """``{"error": true, "reason": "..."}``: the reason."""
    if isinstance(doc, dict) and doc.get("error") is True:
        return str(doc.get("reason", ""))[:200] or "error without a reason"
    return None


# -- OpenWeatherMap One Call 3.0 ----------------------------------------------------------------------------

def owm_request(lat: float, lon: float, key: str) -> tuple[str, dict[str, str]]:
    return "/data/3.0/onecall", {"lat": f"{lat:.4f}", "lon": f"{lon:.4f}", "appid": key, "units": "metric",
                                 "exclude": "minutely,daily,alerts"}


def _owm_entry(entry: Any, where: str, bad: list[str], period: float) -> Observation | None:
    if not isinstance(entry, dict):
        bad.append(f"{where}: not an object")
        return None
    ts = _time(entry.get("dt"))
    if ts is None:
        bad.append(f"{where}.dt: {str(entry.get('dt'))[:30]!r}")
        return None
    obs = Observation(ts, period)
    for var, key in (("temp", "temperature_c"), ("clouds", "cloud_cover_pct")):
        v = _number(entry.get(var), key, bad, f"{where}.{var}")
        if v is not None:
            obs.metrics[key] = v
    return obs


def parse_owm(doc: Any) -> Parsed:
    if not isinstance(doc, dict):
        raise Refused(f"a JSON {type(doc).__name__}, not an object")
    bad: list[str] = []
    current = _owm_entry(doc["current"], "current", bad, 0.0) if "current" in doc else None
    hourly_raw = doc.get("hourly", [])
    if not isinstance(hourly_raw, list) or len(hourly_raw) > MAX_POINTS:
        raise Refused("hourly is not a list of at most 400 entries")
    hourly = [o for i, e in enumerate(hourly_raw) if (o := _owm_entry(e, f"hourly[{i}]", bad, 3600.0))]
    if current is None and not hourly:
        raise Refused("neither `current` nor `hourly` data")
    return Parsed(current, hourly, bad)


def owm_error(doc: Any) -> str | None:
    """``{"cod": 401, "message": "Invalid API key..."}``: the message."""
    if isinstance(doc, dict) and "cod" in doc and "message" in doc and "current" not in doc:
        return f"{str(doc.get('cod'))[:5]}: {str(doc.get('message'))[:200]}"
    return None


# -- the PV estimate ----------------------------------------------------------------------------------------

def add_pv_estimate(observations: list[Observation], peak_w: float, lat: float, lon: float) -> None:
    """``pv_estimate_w``: what panels of ``peak_w`` (AC at 1000 W/m², the inverter's rating) make under the
    irradiance the service gives, else under the clear-sky irradiance behind its cloud cover. Horizontal
    irradiance for tilted panels: a planning figure for "which hours will be sunny", not a yield forecast."""
    need = [o for o in observations if "irradiance_w_m2" not in o.metrics and "cloud_cover_pct" in o.metrics]
    if need:
        # the middle of each observation's period: the mean sun over it
        mid = np.array([o.ts / 1000 - o.period_s / 2 for o in need])
        ghi = solar.clear_sky_ghi(solar.cos_zenith(mid, lat, lon))
        cover = np.array([o.metrics["cloud_cover_pct"] / 100 for o in need])
        for o, g in zip(need, ghi * solar.cloud_factor(cover)):
            o.metrics["_ghi"] = float(g)
    for o in observations:
        g = o.metrics.pop("_ghi", o.metrics.get("irradiance_w_m2"))
        if g is not None:
            o.metrics["pv_estimate_w"] = round(min(peak_w, peak_w * g / 1000.0), 1)
