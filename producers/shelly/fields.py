"""Shelly Pro 3EM fields -> wattbus metric keys, as data.

Why tables: the two device profiles (``triphase``: one ``em:0`` + ``emdata:0``; ``monophase``: three
``em1:N`` + ``em1data:N``) and the two data paths (live status, per-minute EMData records) differ
only in *which* device field feeds *which* metric.  Each row says that once; the code in this module
just walks the rows.  Supporting another Shelly meter (Pro EM, 3EM Gen3) is a new ``MeterLayout``.

Direction: the device's signed active power is positive when energy flows the way the CT arrow
points (grid -> load) and its counters are ``total_act`` (that way) and ``total_act_ret`` (the
other way).  When a device is *inverted* (a solar inverter seen through CTs installed the normal
way, see README) signed fields are negated and each counter is published under its ``inverted``
name, so that for every role ``energy_import_*`` integrates positive ``power_w`` and
``energy_export_*`` integrates negative ``power_w``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

PHASES = ("a", "b", "c")


@dataclass(frozen=True)
class Field:
    """One metric fed by one or more device fields.

    ``sources`` are ``(component, field)`` pairs: ``("em:0", "a_voltage")`` for a status,
    ``("0", "a_avg_voltage")`` for a record column of data id 0.  ``reduce`` combines the present
    sources: ``first`` (aliases, first one present wins), ``sum``, ``freq`` (mean of the plausible
    mains frequencies; a phase without voltage reads garbage like 198 Hz).
    """

    metric: str
    sources: tuple[tuple[str, str], ...]
    reduce: str = "first"
    signed: bool = False  # negated when the device is inverted
    inverted: str | None = None  # published name when the device is inverted (import <-> export)
    optional: bool = False  # absent on some firmware/hardware: not counted as missing
    counter: bool = False  # a cumulative counter (live) / an interval energy (records)

    def name(self, invert: bool) -> str:
        return self.inverted if (invert and self.inverted) else self.metric


@dataclass(frozen=True)
class Derived:
    """A metric computed from other metrics when the device does not give it directly."""

    metric: str
    reduce: str  # sum_all | mean_any | pf | net_rate
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class MeterLayout:
    name: str
    status_components: tuple[str, ...]  # must all be present in a status snapshot
    counter_components: tuple[str, ...]  # the EMData / EM1Data ones
    data_namespace: str  # RPC namespace of the minute records: EMData | EM1Data
    data_ids: tuple[int, ...]
    live: tuple[Field, ...]
    live_derived: tuple[Derived, ...]
    records: tuple[Field, ...]  # counter=True rows are interval energies, reconstructed to counters
    record_derived: tuple[Derived, ...]

    @property
    def counter_metrics(self) -> frozenset[str]:
        return COUNTER_METRICS


# The cumulative counters this producer publishes (never decreasing, see producers/shelly/device.py).
COUNTER_METRICS = frozenset(
    [f"energy_{d}_wh" for d in ("import", "export")]
    + [f"energy_{d}_l{n}_wh" for d in ("import", "export") for n in (1, 2, 3)]
)


# --- triphase: one EM + one EMData ----------------------------------------------------------------

def _triphase_live() -> tuple[Field, ...]:
    rows: list[Field] = []
    for n, x in enumerate(PHASES, 1):
        power_src = (("em:0", f"{x}_act_power"),)
        if x == "c":  # the official docs example spells it c_active_power; devices send c_act_power
            power_src += (("em:0", "c_active_power"),)
        rows += [
            Field(f"power_l{n}_w", power_src, signed=True),
            Field(f"voltage_l{n}_v", (("em:0", f"{x}_voltage"),)),
            Field(f"current_l{n}_a", (("em:0", f"{x}_current"),)),
            Field(f"apparent_power_l{n}_va", (("em:0", f"{x}_aprt_power"),)),
            Field(f"power_factor_l{n}", (("em:0", f"{x}_pf"),)),
            Field(f"energy_import_l{n}_wh", (("emdata:0", f"{x}_total_act_energy"),),
                  inverted=f"energy_export_l{n}_wh", counter=True),
            Field(f"energy_export_l{n}_wh", (("emdata:0", f"{x}_total_act_ret_energy"),),
                  inverted=f"energy_import_l{n}_wh", counter=True),
        ]
    rows += [
        Field("power_w", (("em:0", "total_act_power"),), signed=True),
        Field("apparent_power_va", (("em:0", "total_aprt_power"),)),
        Field("current_a", (("em:0", "total_current"),)),
        Field("current_n_a", (("em:0", "n_current"),), optional=True),  # null without a neutral CT
        Field("frequency_hz", tuple(("em:0", f"{x}_freq") for x in PHASES), reduce="freq", optional=True),
        Field("energy_import_wh", (("emdata:0", "total_act"),), inverted="energy_export_wh", counter=True),
        Field("energy_export_wh", (("emdata:0", "total_act_ret"),), inverted="energy_import_wh", counter=True),
    ]
    return tuple(rows)


def _record_rows(ids_keys: Iterable[tuple[int, str, str]]) -> tuple[Field, ...]:
    """Record table for phases given as (phase number, data id, key prefix)."""
    rows: list[Field] = []
    imp, exp = [], []
    for n, data_id, p in ids_keys:
        c = str(data_id)
        imp.append((c, f"{p}total_act_energy"))
        exp.append((c, f"{p}total_act_ret_energy"))
        rows += [
            Field(f"energy_import_l{n}_wh", (imp[-1],), inverted=f"energy_export_l{n}_wh", counter=True),
            Field(f"energy_export_l{n}_wh", (exp[-1],), inverted=f"energy_import_l{n}_wh", counter=True),
            Field(f"voltage_l{n}_v", ((c, f"{p}avg_voltage"),)),
            Field(f"current_l{n}_a", ((c, f"{p}avg_current"),)),
        ]
    rows += [
        Field("energy_import_wh", tuple(imp), reduce="sum", inverted="energy_export_wh", counter=True),
        Field("energy_export_wh", tuple(exp), reduce="sum", inverted="energy_import_wh", counter=True),
    ]
    return tuple(rows)


_TOTALS_DERIVED = (
    Derived("power_w", "sum_all", ("power_l1_w", "power_l2_w", "power_l3_w")),
    Derived("apparent_power_va", "sum_all", ("apparent_power_l1_va", "apparent_power_l2_va",
                                             "apparent_power_l3_va")),
    Derived("current_a", "sum_all", ("current_l1_a", "current_l2_a", "current_l3_a")),
    Derived("voltage_v", "mean_any", ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")),
    Derived("power_factor", "pf", ("power_w", "apparent_power_va")),
    Derived("energy_import_wh", "sum_all", ("energy_import_l1_wh", "energy_import_l2_wh", "energy_import_l3_wh")),
    Derived("energy_export_wh", "sum_all", ("energy_export_l1_wh", "energy_export_l2_wh", "energy_export_l3_wh")),
)

# Records: counters hold the *interval* energies of the row when these run (before reconstruction).
_RECORD_DERIVED = (
    Derived("power_l1_w", "net_rate", ("energy_import_l1_wh", "energy_export_l1_wh")),
    Derived("power_l2_w", "net_rate", ("energy_import_l2_wh", "energy_export_l2_wh")),
    Derived("power_l3_w", "net_rate", ("energy_import_l3_wh", "energy_export_l3_wh")),
    Derived("power_w", "net_rate", ("energy_import_wh", "energy_export_wh")),
    Derived("energy_wh", "net", ("energy_import_wh", "energy_export_wh")),
    Derived("voltage_v", "mean_any", ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")),
    Derived("current_a", "sum_all", ("current_l1_a", "current_l2_a", "current_l3_a")),
)

TRIPHASE = MeterLayout(
    name="triphase",
    status_components=("em:0", "emdata:0"),
    counter_components=("emdata:0",),
    data_namespace="EMData",
    data_ids=(0,),
    live=_triphase_live(),
    live_derived=_TOTALS_DERIVED,
    records=_record_rows((n, 0, f"{x}_") for n, x in enumerate(PHASES, 1))
    + (Field("current_n_a", (("0", "n_avg_current"),), optional=True),),
    record_derived=_RECORD_DERIVED,
)


# --- monophase: three EM1 + three EM1Data, channel N -> L(N+1) -------------------------------------

def _monophase_live() -> tuple[Field, ...]:
    rows: list[Field] = []
    for i in range(3):
        n, em, data = i + 1, f"em1:{i}", f"em1data:{i}"
        rows += [
            Field(f"power_l{n}_w", ((em, "act_power"),), signed=True),
            Field(f"voltage_l{n}_v", ((em, "voltage"),)),
            Field(f"current_l{n}_a", ((em, "current"),)),
            Field(f"apparent_power_l{n}_va", ((em, "aprt_power"),)),
            Field(f"power_factor_l{n}", ((em, "pf"),)),
            Field(f"energy_import_l{n}_wh", ((data, "total_act_energy"),),
                  inverted=f"energy_export_l{n}_wh", counter=True),
            Field(f"energy_export_l{n}_wh", ((data, "total_act_ret_energy"),),
                  inverted=f"energy_import_l{n}_wh", counter=True),
        ]
    rows.append(Field("frequency_hz", tuple((f"em1:{i}", "freq") for i in range(3)), reduce="freq", optional=True))
    return tuple(rows)


MONOPHASE = MeterLayout(
    name="monophase",
    status_components=("em1:0", "em1:1", "em1:2", "em1data:0", "em1data:1", "em1data:2"),
    counter_components=("em1data:0", "em1data:1", "em1data:2"),
    data_namespace="EM1Data",
    data_ids=(0, 1, 2),
    live=_monophase_live(),
    live_derived=_TOTALS_DERIVED,
    records=_record_rows((i + 1, i, "") for i in range(3)),
    record_derived=_RECORD_DERIVED,
)

PROFILES = {p.name: p for p in (TRIPHASE, MONOPHASE)}


def metric_keys() -> set[str]:
    """Every metric key the tables above name, both directions (``inverted``) included."""
    keys = set(COUNTER_METRICS)
    for layout in PROFILES.values():
        for f in (*layout.live, *layout.records):
            keys.update(k for k in (f.metric, f.inverted) if k)
        keys.update(d.metric for d in (*layout.live_derived, *layout.record_derived))
    return keys


def profile_for(name: str | None, components: Iterable[str] = ()) -> MeterLayout:
    """The profile named by ``Shelly.GetDeviceInfo``, else guessed from the components seen."""
    if name in PROFILES:
        return PROFILES[name]  # type: ignore[index]
    return MONOPHASE if "em1:0" in set(components) else TRIPHASE


# --- device errors -> reading quality ------------------------------------------------------------

# What an error reported by the device means for the reading.  "missing": the values are not
# measurements (metrics dropped); "estimated": published but flagged; "ok": informative only.
ERROR_QUALITY: dict[str, str] = {
    "power_meter_failure": "missing",
    "ct_type_not_set": "missing",
    "out_of_range:active_power": "estimated",
    "out_of_range:apparent_power": "estimated",
    "out_of_range:voltage": "estimated",
    "out_of_range:current": "estimated",
    "phase_sequence": "ok",
    "no_load": "ok",
    "database_error": "ok",  # the minute records, not the live values
}
UNKNOWN_ERROR_QUALITY = "estimated"
_QUALITY_RANK = {"ok": 0, "estimated": 1, "missing": 2}


def worse(a: str, b: str) -> str:
    return a if _QUALITY_RANK[a] >= _QUALITY_RANK[b] else b


def device_errors(components: dict[str, Any]) -> list[str]:
    """Every error the components report: ``errors`` and the per-phase ``a_errors``, ``n_errors``..."""
    found: list[str] = []
    for comp in components.values():
        if not isinstance(comp, dict):
            continue
        for key, value in comp.items():
            if (key == "errors" or key.endswith("_errors")) and isinstance(value, list):
                found += [str(v) for v in value]
    return found


# --- walking the tables ---------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _reduce(kind: str, values: list[float]) -> float | None:
    if not values:
        return None
    if kind == "first":
        return values[0]
    if kind == "sum":
        return sum(values)
    if kind == "freq":
        plausible = [v for v in values if 40.0 <= v <= 70.0]
        return sum(plausible) / len(plausible) if plausible else None
    raise ValueError(f"unknown reduce {kind!r}")


def _derive(kind: str, inputs: list[float | None], period_s: float) -> float | None:
    present = [v for v in inputs if v is not None]
    if kind == "sum_all":
        return sum(present) if len(present) == len(inputs) else None
    if kind == "mean_any":
        return sum(present) / len(present) if present else None
    if kind == "pf":
        p, s = inputs
        if p is None or s is None:
            return None
        return round(min(1.0, abs(p) / s), 3) if s > 0 else 0.0
    if kind == "net":
        imp, exp = inputs
        return None if imp is None or exp is None else imp - exp
    if kind == "net_rate":
        imp, exp = inputs
        if imp is None or exp is None or period_s <= 0:
            return None
        return (imp - exp) * 3600.0 / period_s
    raise ValueError(f"unknown derived reduce {kind!r}")


@dataclass
class Mapped:
    metrics: dict[str, float]
    counters: dict[str, float]  # the counter metrics, also present in ``metrics``
    missing: list[str]  # device fields a non-optional row expected and did not get
    bad: list[str]  # device fields present with a value that is not a number
    errors: list[str]
    quality: str


def apply_fields(rows: Iterable[Field], get: Callable[[str, str], Any], invert: bool,
                 missing: list[str], bad: list[str]) -> dict[str, float]:
    """Walk ``rows``: ``get(component, field)`` returns the raw value or ``KeyError``."""
    out: dict[str, float] = {}
    for row in rows:
        values: list[float] = []
        absent: list[str] = []
        for comp, key in row.sources:
            try:
                raw = get(comp, key)
            except KeyError:
                absent.append(f"{comp}.{key}")
                continue
            if raw is None:  # explicit null: "not measured here" (e.g. no neutral CT)
                continue
            num = _number(raw)
            if num is None:
                bad.append(f"{comp}.{key}")
            else:
                values.append(num)
        if row.reduce == "first" and values:
            absent = []  # an alias was present
        if absent and not row.optional and not (row.reduce != "first" and values):
            # a "first" row with all aliases absent, or a sum/freq row with nothing at all
            missing.extend(absent[:1] if row.reduce == "first" else absent)
        value = _reduce(row.reduce, values)
        if value is None:
            continue
        if row.signed and invert:
            value = -value
        out[row.name(invert)] = value
    return out


def apply_derived(rows: Iterable[Derived], metrics: dict[str, float], period_s: float = 0.0) -> None:
    for d in rows:
        if d.metric in metrics:
            continue
        value = _derive(d.reduce, [metrics.get(k) for k in d.inputs], period_s)
        if value is not None:
            metrics[d.metric] = value


def map_status(profile: MeterLayout, components: dict[str, Any], invert: bool) -> Mapped:
    """Turn a status snapshot ``{"em:0": {...}, "emdata:0": {...}}`` into metrics and a quality."""

    def get(comp: str, key: str) -> Any:
        c = components.get(comp)
        if not isinstance(c, dict):
            raise KeyError(comp)
        return c[key]

    missing: list[str] = []
    bad: list[str] = []
    metrics = apply_fields(profile.live, get, invert, missing, bad)
    apply_derived(profile.live_derived, metrics)
    errors = device_errors(components)
    quality = "ok"
    for err in errors:
        quality = worse(quality, ERROR_QUALITY.get(err, UNKNOWN_ERROR_QUALITY))
    if quality == "missing":
        metrics = {}
    counters = {k: v for k, v in metrics.items() if k in profile.counter_metrics}
    return Mapped(metrics, counters, missing, bad, errors, quality)
