"""Cost and revenue of a 15-minute slot, and the charges that belong to a day or a month.

A slot is the pricing unit: every kind of price in ``bus.tariff`` is constant within a quarter hour, so the
slot's cost is its energy times the price at its start. Energy counted per meter register is priced per
register. Money is kept in integers of 1e-9 of the currency (``round(µWh * price per kWh)``), so months add
up to the year exactly.

Who pays what:
- a ``grid`` device: ``cost`` = import x import price, ``revenue`` = export x export price;
- a ``load`` device: ``cost`` = its consumption x import price (what running it costs);
- the site: the grid's cost and revenue, plus the fixed charge on each day that has data and the capacity
  charge on each month; ``cost_without_solar`` prices the home's whole consumption at the import price and
  carries the same fixed and capacity charges, so solar profit = cost without solar - (cost - revenue) is what
  the panels saved and earned.
"""

from __future__ import annotations

from bus.tariff import Price, Tariff
from consumers.aggregate.accum import Acc
from consumers.aggregate.energy import COST, ET1, ET2, EXP, IMP, IT1, IT2, REV

NANO = 1_000_000_000


def _priced(price: Price, t: int, acc: Acc, total: int, reg1: int, reg2: int) -> int | None:
    """Cost of the slot's energy on one side: per register when the meter counted per register."""
    if acc.has(reg1) or acc.has(reg2):
        p1, p2 = price.at(t, 1), price.at(t, 2)
        if p1 is None or p2 is None:
            return None
        return round(acc.v[reg1] * p1) + round(acc.v[reg2] * p2)
    if not acc.has(total):
        return None
    p = price.at(t, acc.tar)
    return None if p is None else round(acc.v[total] * p)


def price_device_slot(acc: Acc, tariff: Tariff | None, role: str | None) -> None:
    """Set the slot's ``cost`` (grid, load) and ``revenue`` (grid) from its energy and the tariff."""
    v = acc.v
    v[COST] = v[REV] = 0
    acc.known &= ~(1 << COST | 1 << REV)
    if tariff is None or role not in ("grid", "load"):
        return
    cost = _priced(tariff.import_, acc.start, acc, IMP, IT1, IT2)
    if cost is not None:
        v[COST] = cost
        acc.known |= 1 << COST
    if role == "grid":
        rev = _priced(tariff.export, acc.start, acc, EXP, ET1, ET2)
        if rev is not None:
            v[REV] = rev
            acc.known |= 1 << REV


def home_price(tariff: Tariff, t: int, grids: list[Acc]) -> float | None:
    """Import price for the home's consumption in a slot: the registers weighted by what the grid meters
    counted on each (import and export), else the register the meter showed, else the clock's register."""
    w1 = w2 = 0
    reg = None
    for g in grids:
        w1 += g.v[IT1] + g.v[ET1]
        w2 += g.v[IT2] + g.v[ET2]
        reg = reg or g.tar
    price = tariff.import_
    if w1 + w2 > 0 and price.cfg.t1 is not None:
        p1, p2 = price.at(t, 1), price.at(t, 2)
        if p1 is None or p2 is None:
            return None
        return (w1 * p1 + w2 * p2) / (w1 + w2)
    return price.at(t, reg)


def fixed_charge(tariff: Tariff | None) -> int:
    return round(tariff.cfg.fixed_per_day * NANO) if tariff is not None else 0


def capacity_charge(tariff: Tariff | None, peak_w: float | None) -> int:
    if tariff is None or not tariff.cfg.capacity_per_kw:
        return 0
    return round(tariff.capacity_charge(peak_w or 0.0) * NANO)
