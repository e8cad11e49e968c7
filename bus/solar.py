"""Where the sun is and how much a PV array makes of it, vectorised over time with numpy (the sim meters, the
weather producer's PV estimate and the Fronius emulator's plant share it).

The sun's elevation comes from the NOAA "general solar position" approximation (fractional year ->
equation of time and declination -> hour angle), accurate to a fraction of a degree, which is far more
than a simulated meter needs but keeps solar noon, day length and the seasons right for any latitude.
Irradiance is the Haurwitz clear-sky model (global horizontal, needs only the zenith angle); clouds
scale it with the Kasten-Czeplak relation. No weather data, no network: everything is a pure function
of time and place so the simulation stays deterministic.
"""

from __future__ import annotations

import numpy as np

PERFORMANCE_RATIO = 0.85
"""Inverter, wiring, temperature and soiling losses of a typical residential system."""


def cos_zenith(epoch_s: np.ndarray, latitude: float, longitude: float) -> np.ndarray:
    """Cosine of the solar zenith angle (= sine of the elevation) at UTC epoch seconds ``epoch_s``."""
    t = np.asarray(epoch_s, dtype=np.float64)
    stamps = t.astype("datetime64[s]")
    year_start = stamps.astype("datetime64[Y]").astype("datetime64[s]")
    day_of_year = (stamps - year_start).astype(np.float64) / 86400.0  # 0 at Jan 1 00:00 UTC
    utc_minutes = np.mod(t, 86400.0) / 60.0
    gamma = 2.0 * np.pi / 365.0 * (day_of_year - 0.5)  # fractional year, radians (hour folded in)
    eqtime = 229.18 * (0.000075 + 0.001868 * np.cos(gamma) - 0.032077 * np.sin(gamma)
                       - 0.014615 * np.cos(2 * gamma) - 0.040849 * np.sin(2 * gamma))
    decl = (0.006918 - 0.399912 * np.cos(gamma) + 0.070257 * np.sin(gamma)
            - 0.006758 * np.cos(2 * gamma) + 0.000907 * np.sin(2 * gamma)
            - 0.002697 * np.cos(3 * gamma) + 0.00148 * np.sin(3 * gamma))
    true_solar_minutes = utc_minutes + eqtime + 4.0 * longitude
    hour_angle = np.radians(true_solar_minutes / 4.0 - 180.0)
    lat = np.radians(latitude)
    return np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)


def elevation_deg(epoch_s: np.ndarray, latitude: float, longitude: float) -> np.ndarray:
    """Solar elevation above the horizon in degrees (negative at night)."""
    return np.degrees(np.arcsin(np.clip(cos_zenith(epoch_s, latitude, longitude), -1.0, 1.0)))


def clear_sky_ghi(cos_z: np.ndarray) -> np.ndarray:
    """Haurwitz clear-sky global horizontal irradiance in W/m², zero with the sun below the horizon."""
    cz = np.asarray(cos_z, dtype=np.float64)
    out = np.zeros_like(cz)
    up = cz > 0.01
    out[up] = 1098.0 * cz[up] * np.exp(-0.057 / cz[up])
    return out


def cloud_factor(cover: np.ndarray) -> np.ndarray:
    """Share of clear-sky irradiance that gets through a cloud cover of 0..1 (Kasten-Czeplak)."""
    return 1.0 - 0.75 * np.power(np.clip(cover, 0.0, 1.0), 3.4)


def pv_power_w(epoch_s: np.ndarray, kwp: float, latitude: float, longitude: float,
               cover: np.ndarray | float = 0.0) -> np.ndarray:
    """AC power of a ``kwp`` array (rated at 1000 W/m²) under the given cloud cover, in W."""
    ghi = clear_sky_ghi(cos_zenith(epoch_s, latitude, longitude))
    return kwp * PERFORMANCE_RATIO * ghi * cloud_factor(np.asarray(cover, dtype=np.float64))
