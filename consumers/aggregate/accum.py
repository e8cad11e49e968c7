"""A bucket while it is being built (integer sums) and its conversion to and from ``bus.rollup.Bucket``.

The published record carries floats (Wh, currency); the accumulator keeps exact integers (µWh, ms, 1e-9 of
the currency). Converting a stored bucket back gives the same integers (the floats hold them exactly: a year
of a house is ~1e13 µWh, far below 2**53), which is what lets a restart continue from the rollups table.
"""

from __future__ import annotations

from bus.rollup import SITE_SOURCE, Bucket
from consumers.aggregate.energy import (
    BC,
    BD,
    COST,
    COV,
    CWS,
    ET1,
    ET2,
    EXP,
    GAS,
    GE,
    GI,
    IMP,
    IT1,
    IT2,
    LATE,
    NF,
    PINT,
    REV,
    S1,
    S2,
    S3,
    SELF,
    SOL,
    R,
)

U = 1e6  # µ per unit (Wh, m³)
NANO = 1e9  # currency units per currency
DEMAND_DIV = 250_000  # µWh in 15 minutes -> average W

DEVICE_ENERGY = ((IMP, "energy_import_wh"), (EXP, "energy_export_wh"), (IT1, "energy_import_t1_wh"),
                 (IT2, "energy_import_t2_wh"), (ET1, "energy_export_t1_wh"), (ET2, "energy_export_t2_wh"),
                 (S1, "sub1_energy_wh"), (S2, "sub2_energy_wh"), (S3, "sub3_energy_wh"), (GAS, "gas_m3"))
SITE_ENERGY = ((GI, "grid_import_wh"), (GE, "grid_export_wh"), (SOL, "solar_wh"),
               (BD, "battery_discharge_wh"), (BC, "battery_charge_wh"), (SELF, "self_consumption_wh"))
MONEY = ((COST, "cost"), (REV, "revenue"), (CWS, "cost_without_solar"))


class Acc:
    """One bucket's sums. ``known`` has bit ``f`` set once field ``f`` got a value (None vs 0 in the
    record)."""

    __slots__ = ("period", "start", "end", "v", "known", "pmin", "pmax", "peak", "last_ts", "tar", "tar_ts",
                 "rev", "status", "dirty", "label")

    def __init__(self, period: str, start: int, end: int):
        self.period, self.start, self.end = period, start, end
        self.v = [0] * NF
        self.known = 0
        self.pmin: float | None = None
        self.pmax: float | None = None
        self.peak: float | None = None
        self.last_ts: int | None = None
        self.tar: int | None = None  # the meter's tariff register at the newest reading (slots only)
        self.tar_ts = -1
        self.rev = 0
        self.status: str | None = None  # as last written
        self.dirty = False
        self.label: str | None = None

    def content(self) -> tuple:
        return (*self.v, self.known, self.pmin, self.pmax, self.peak, self.last_ts)

    def has(self, f: int) -> bool:
        return bool(self.known >> f & 1)

    def coverage(self) -> float:
        return self.v[COV] / (self.end - self.start)

    def set_sum(self, children: list[Acc]) -> None:
        """This bucket as the sum of ``children`` (min/max/peak/last over them)."""
        v = [0] * NF
        known = 0
        pmin = pmax = peak = last = None
        for c in children:
            v = [x + y for x, y in zip(v, c.v)]
            known |= c.known
            if c.pmin is not None and (pmin is None or c.pmin < pmin):
                pmin = c.pmin
            if c.pmax is not None and (pmax is None or c.pmax > pmax):
                pmax = c.pmax
            if c.peak is not None and (peak is None or c.peak > peak):
                peak = c.peak
            if c.last_ts is not None and (last is None or c.last_ts > last):
                last = c.last_ts
        self.v, self.known, self.pmin, self.pmax, self.peak, self.last_ts = v, known, pmin, pmax, peak, last


def to_bucket(acc: Acc, source: str, device: str, label: str, status: str, currency: str | None) -> Bucket:
    v, known = acc.v, acc.known
    b = Bucket(source=source, device=device, period=acc.period,  # type: ignore[arg-type]
               start=acc.start, end=acc.end, label=label, status=status,  # type: ignore[arg-type]
               coverage=v[COV] / (acc.end - acc.start), readings=v[R], late=v[LATE], last_ts=acc.last_ts,
               rev=acc.rev, demand_peak_w=acc.peak)
    if source == SITE_SOURCE:
        for f, name in SITE_ENERGY:
            if known >> f & 1:
                setattr(b, name, v[f] / U)
        if known >> GI & 1:
            home = v[GI] + v[SOL] + v[BD] - v[GE] - v[BC]
            b.home_wh = home / U
            if home > 0:
                b.self_sufficiency_pct = min(100.0, max(0.0, 100.0 * (home - v[GI]) / home))
    else:
        for f, name in DEVICE_ENERGY:
            if known >> f & 1:
                setattr(b, name, v[f] / U)
        if known >> PINT & 1 and v[COV] > 0:
            b.power_avg_w = v[PINT] * 3.6 / v[COV]
        b.power_min_w, b.power_max_w = acc.pmin, acc.pmax
    money = False
    for f, name in MONEY:
        if known >> f & 1:
            setattr(b, name, v[f] / NANO)
            money = True
    if known >> COST & 1 and known >> REV & 1 and known >> CWS & 1:
        b.solar_profit = (v[CWS] - (v[COST] - v[REV])) / NANO
    if money:
        b.currency = currency
    return b


def from_bucket(b: Bucket) -> Acc:
    """The integer sums a stored bucket stands for (exactly: see the module docstring)."""
    acc = Acc(b.period, b.start, b.end)
    v = acc.v
    known = 0

    def put(f: int, value: float | None, scale: float) -> None:
        nonlocal known
        if value is not None:
            v[f] = round(value * scale)
            known |= 1 << f

    v[R] = int(b.readings)
    known |= 1 << R
    v[COV] = round(b.coverage * (b.end - b.start))
    known |= 1 << COV
    v[LATE] = int(b.late)
    for f, name in (DEVICE_ENERGY if b.source != SITE_SOURCE else SITE_ENERGY):
        put(f, getattr(b, name), U)
    for f, name in MONEY:
        put(f, getattr(b, name), NANO)
    if b.power_avg_w is not None and v[COV] > 0:
        v[PINT] = round(b.power_avg_w * v[COV] / 3.6)
        known |= 1 << PINT
    acc.known = known
    acc.pmin, acc.pmax, acc.peak = b.power_min_w, b.power_max_w, b.demand_peak_w
    acc.last_ts = int(b.last_ts) if b.last_ts is not None else None
    acc.rev = int(b.rev)
    acc.status = b.status
    return acc
