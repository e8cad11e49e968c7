"""The site balance (``source = "site"``): one slot of the site from the same slot of its devices.

From the devices the config names (DESIGN sign convention: each device's import is its natural direction):

- grid import / export: the grid devices' import / export;
- solar: the solar devices' import (what they produced);
- battery discharge / charge: the battery devices' import / export;
- home consumption = grid import + solar + discharge - grid export - charge;
- self-consumption (solar used directly) = solar - grid export, per slot, between 0 and the solar production;
- self-sufficiency = share of the home's consumption not bought from the grid (derived at every level from the
  sums, never averaged).

A slot of the site is a pure function of the member slots, so it is recomputed whenever any of them changes
and comes out the same whatever order the devices' readings arrived in. Coverage is the lowest of the members'
(a missing solar meter makes the balance partial, not wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.tariff import Tariff
from consumers.aggregate.accum import DEMAND_DIV, Acc
from consumers.aggregate.energy import BC, BD, COST, COV, CWS, EXP, GE, GI, IMP, NF, REV, SELF, SOL, R
from consumers.aggregate.pricing import home_price

ROLES = ("grid", "solar", "battery", "load")


@dataclass(frozen=True)
class Site:
    """Which devices make up the site, as (source, device) pairs."""

    name: str
    grid: tuple[tuple[str, str], ...]
    solar: tuple[tuple[str, str], ...] = ()
    battery: tuple[tuple[str, str], ...] = ()
    loads: tuple[tuple[str, str], ...] = ()

    def roles(self) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for role, keys in (("load", self.loads), ("battery", self.battery), ("solar", self.solar),
                           ("grid", self.grid)):
            for k in keys:
                out[k] = role
        return out

    @property
    def members(self) -> tuple[tuple[str, str], ...]:
        """The devices the balance is made of (loads are priced, but not part of the balance)."""
        return self.grid + self.solar + self.battery


def site_slot(acc: Acc, grids: list[Acc | None], solars: list[Acc | None], batteries: list[Acc | None],
              tariff: Tariff | None) -> None:
    """Fill the site's slot ``acc`` from its members' slots (None where a member has no slot)."""
    v = [0] * NF
    known = 1 << R | 1 << COV
    members = [*grids, *solars, *batteries]
    cov = None
    last = None
    for m in members:
        if m is None:
            cov = 0
            continue
        v[R] += m.v[R]
        cov = m.v[COV] if cov is None else min(cov, m.v[COV])
        if m.last_ts is not None and (last is None or m.last_ts > last):
            last = m.last_ts
    v[COV] = cov or 0
    present = [g for g in grids if g is not None]
    for g in present:
        if g.has(IMP):
            v[GI] += g.v[IMP]
            known |= 1 << GI
        if g.has(EXP):
            v[GE] += g.v[EXP]
            known |= 1 << GE
        if g.has(COST):
            v[COST] += g.v[COST]
            known |= 1 << COST
        if g.has(REV):
            v[REV] += g.v[REV]
            known |= 1 << REV
    if solars:
        known |= 1 << SOL
        for s in solars:
            if s is not None and s.has(IMP):
                v[SOL] += s.v[IMP]
        known |= 1 << SELF
        v[SELF] = min(v[SOL], max(0, v[SOL] - v[GE]))
    if batteries:
        known |= 1 << BD | 1 << BC
        for b in batteries:
            if b is not None:
                v[BD] += b.v[IMP] if b.has(IMP) else 0
                v[BC] += b.v[EXP] if b.has(EXP) else 0
    if tariff is not None and known >> GI & 1:
        home = v[GI] + v[SOL] + v[BD] - v[GE] - v[BC]
        p = home_price(tariff, acc.start, present)
        if p is not None:
            v[CWS] = round(home * p)
            known |= 1 << CWS
        if known >> COST & 1 and not known >> REV & 1 and tariff.export.configured:
            known |= 1 << REV  # an export price but no export counted: nothing earned
    acc.v, acc.known, acc.last_ts = v, known, last
    acc.peak = v[GI] / DEMAND_DIV if known >> GI & 1 else None
    acc.pmin = acc.pmax = None
