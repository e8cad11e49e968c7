"""Solar API answers -> wattbus metrics, as tables: which field, which metric, which sign, what null means.

Sign conventions. The Solar API's ``Site`` block counts power flows from the site's point of view: ``P_Grid``
positive while importing, ``P_Load`` *negative* while the house consumes, ``P_Akku`` positive while the
battery discharges, ``P_PV`` positive while producing (and null while the inverter is not running: no
production). wattbus counts each device in its natural direction (DESIGN: import for grid, production for
solar, consumption for load), so only ``P_Load`` is negated; a battery counts discharging as positive.

Every value is checked: a number (not a bool, not a string, not an object), finite, within the range a real
plant can show, in the unit expected (``{"Value": 1.5, "Unit": "kWh"}`` is scaled, an unknown unit is
refused). A field that fails is left out and named in ``bad``; one that is absent is named in ``missing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ROLES = ("solar", "grid", "load", "battery")

SITE: dict[str, tuple[str, float]] = {
    "solar": ("P_PV", 1.0),
    "grid": ("P_Grid", 1.0),
    "load": ("P_Load", -1.0),
    "battery": ("P_Akku", 1.0),
}
"""Role -> (``Site`` field with its power, sign that makes it the device's natural direction)."""

COMMON = (("UAC", "voltage_v"), ("IAC", "current_a"), ("FAC", "frequency_hz"))
"""CommonInverterData fields published on the solar device."""
THREE_PHASE = tuple((f"{q}AC_L{n}", f"{m}_l{n}_{u}") for n in (1, 2, 3)
                    for q, m, u in (("U", "voltage", "v"), ("I", "current", "a")))
"""3PInverterData fields published on the solar device."""

UNITS: dict[str, dict[str, float]] = {
    "voltage": {"V": 1.0},
    "current": {"A": 1.0},
    "frequency": {"Hz": 1.0},
    "energy": {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6},
    "power": {"W": 1.0, "kW": 1e3},
    "percent": {"%": 1.0},
}
LIMITS: dict[str, tuple[float, float]] = {
    "voltage": (0.0, 2_000.0),
    "current": (0.0, 10_000.0),
    "frequency": (0.0, 100.0),
    "energy": (0.0, 1e13),        # 10 TWh: no house reaches it
    "power": (-1e8, 1e8),         # 100 MW
    "percent": (0.0, 100.0),
}
QUANTITY = {"voltage_v": "voltage", "current_a": "current", "frequency_hz": "frequency"}
QUANTITY.update({m: ("voltage" if m.startswith("voltage") else "current") for _, m in THREE_PHASE})


def metric_keys() -> list[str]:
    """Every metric this plugin publishes (the plugin contract's test checks them against metrics.toml)."""
    return ["power_w", "energy_import_wh", "battery_soc_pct", *(m for _, m in COMMON),
            *(m for _, m in THREE_PHASE)]


@dataclass
class Mapped:
    metrics: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    def take(self, metric: str, value: float | None, problem: str | None, name: str) -> None:
        if problem == "missing":
            self.missing.append(name)
        elif problem:
            self.bad.append(f"{name} ({problem})")
        elif value is not None:
            self.metrics[metric] = value


def check(value: Any, quantity: str, unit: str | None = None) -> tuple[float | None, str | None]:
    """(value in the base unit, None) or (None, why not); ``unit`` None: the field has no unit of its own."""
    if unit is not None:
        scale = UNITS[quantity].get(unit) if isinstance(unit, str) else None
        if scale is None:
            return None, f"unit {str(unit)[:20]!r}"
    else:
        scale = 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"not a number: {str(value)[:30]!r}"
    v = float(value) * scale
    lo, hi = LIMITS[quantity]
    if not math.isfinite(v) or not lo <= v <= hi:
        return None, f"out of range: {str(value)[:30]}"
    return v, None


def site_value(site: Any, key: str, quantity: str = "power") -> tuple[float | None, str | None]:
    """A plain ``Site`` number; (None, None) when it is null (the API's "not there now")."""
    if not isinstance(site, dict) or key not in site:
        return None, "missing"
    if site[key] is None:
        return None, None
    return check(site[key], quantity)


def unit_value(data: Any, key: str, quantity: str) -> tuple[float | None, str | None]:
    """An inverter data field ``{"Value": x, "Unit": "W"}``; absent is "missing"."""
    item = data.get(key) if isinstance(data, dict) else None
    if item is None:
        return None, "missing"
    if not isinstance(item, dict):
        return None, f"not a {{Value, Unit}} object: {str(item)[:30]!r}"
    if item.get("Value") is None:
        return None, None
    return check(item.get("Value"), quantity, item.get("Unit"))


def map_flow(data: dict[str, Any], role: str, inverter_id: int) -> tuple[Mapped, bool]:
    """The device of ``role`` from GetPowerFlowRealtimeData's ``Body.Data``; and whether the API says the
    device is there now (False: ``P_Grid`` null = no meter, ``P_Akku`` null = no battery; for solar, null
    ``P_PV`` means the inverter does not run: 0 W)."""
    out = Mapped()
    site = data.get("Site")
    key, sign = SITE[role]
    value, problem = site_value(site, key)
    present = problem is None and (value is not None or role == "solar")
    if role == "solar" and problem is None and value is None:
        value = 0.0
    out.take("power_w", None if value is None else sign * value + 0.0, problem, f"Site.{key}")
    if role == "solar":
        total, problem = site_value(site, "E_Total", "energy")
        out.take("energy_import_wh", total, None if problem == "missing" else problem, "Site.E_Total")
    if role == "battery":
        inverters = data.get("Inverters")
        inv = inverters.get(str(inverter_id)) if isinstance(inverters, dict) else None
        if isinstance(inv, dict) and inv.get("SOC") is not None:
            soc, problem = check(inv.get("SOC"), "percent")
            out.take("battery_soc_pct", soc, problem, f"Inverters.{inverter_id}.SOC")
    return out, present


def map_inverter(data: dict[str, Any], fields: tuple[tuple[str, str], ...], out: Mapped) -> None:
    """Inverter realtime data (CommonInverterData, 3PInverterData) into ``out``: the fields given."""
    for key, metric in fields:
        value, problem = unit_value(data, key, QUANTITY[metric])
        out.take(metric, value, problem, key)


def inverter_total(data: dict[str, Any]) -> float | None:
    """CommonInverterData's TOTAL_ENERGY (Wh), when ``Site.E_Total`` is null (GEN24 firmwares)."""
    value, problem = unit_value(data, "TOTAL_ENERGY", "energy")
    return value if problem is None else None


def device_status(data: dict[str, Any]) -> tuple[int | None, int | None]:
    """(StatusCode, ErrorCode) of CommonInverterData's DeviceStatus: 7 is running, 8 standby."""
    st = data.get("DeviceStatus")
    if not isinstance(st, dict):
        return None, None
    code, error = st.get("StatusCode"), st.get("ErrorCode")
    ok = [v if isinstance(v, int) and not isinstance(v, bool) and -1 <= v < 100_000 else None
          for v in (code, error)]
    return ok[0], ok[1]
