"""Energy from readings: what each reading adds to the 15-minute slots, in exact integers.

A device's readings, sorted by ``ts``, make a chain. Each reading contributes two things:

- **the reading itself**, to the slot holding ``ts`` (a reading ends its period, so a reading exactly on a
  boundary belongs to the slot before it): one more reading, a power sample for min/max, the last tariff
  register seen;
- **the span** from the previous reading ``(prev.ts, ts]``:
  * cumulative counters (import, export, per register, gas): the difference across the span, spread over the
    slots it crosses in proportion to time, whether or not the span is a gap. A counter that went down, or up
    by more than ``max_power_w`` could deliver in that time, was reset or swapped: that span gives no counter
    energy (never a negative, never a spike) and the next one counts from the new value;
  * the covered part: ``(ts - period_s, ts]`` for a reading with a period (clipped at the previous
    reading), else the whole span when it is no longer than ``gap``. Interval energies (``energy_wh``,
    ``sub*_energy_wh``) land there, else power integrated over it (the reading's power held over its span),
    and it counts as covered time. A longer span is a gap: not integrated, not covered: ``coverage`` < 1.

Import and export come from the counters when the meter has them, else from the interval energy, else from
power; ``pint`` (the integral of power over the covered time, for ``power_avg_w``) from power when the reading
has it, else from the energy.

Everything is an integer: energies in µWh (µm³ for gas), time in ms, costs in 1e-9 currency units. Sums of
integers do not depend on their order, so a bucket built reading by reading, in batches, after a restart or
with a late reading slotted into a gap is identical to one computed in one go. Spreading a span over slots
uses one rounding rule (cumulative, half up), so the parts always add up to the whole.
"""

from __future__ import annotations

from collections.abc import Callable

from bus.envelope import Reading

SLOT_MS = 900_000

# Additive fields of an accumulator (a bucket's integer sums), in one vector.
(R, COV, IMP, EXP, IT1, IT2, ET1, ET2, S1, S2, S3, GAS, PINT, LATE, COST, REV, GI, GE, SOL, BD, BC, SELF,
 CWS) = range(23)
NF = 23
COV_BIT, IMP_BIT, EXP_BIT, PINT_BIT, R_BIT = 1 << COV, 1 << IMP, 1 << EXP, 1 << PINT, 1 << R

# A point: one reading reduced to what energy needs.
TS, PER, USE, P, C0, E0, TAR, FLAGS = 0, 1, 2, 3, 4, 11, 15, 16
COUNTER_KEYS = ("energy_import_wh", "energy_export_wh", "energy_import_t1_wh", "energy_import_t2_wh",
                "energy_export_t1_wh", "energy_export_t2_wh", "gas_m3")
COUNTER_FIELDS = (IMP, EXP, IT1, IT2, ET1, ET2, GAS)
INTERVAL_KEYS = ("energy_wh", "sub1_energy_wh", "sub2_energy_wh", "sub3_energy_wh")
SUB_FIELDS = (S1, S2, S3)
MAX_VALUE = 1e12
"""Values beyond this (Wh, W, m³) are not meter readings: dropped from the reading and counted."""
MAX_PERIOD_MS = 31 * 86_400_000
Point = tuple
Items = list  # [(field, value), ...]


class Rules:
    """How readings become energy: the gap length, the largest plausible power, the longest span spread."""

    def __init__(self, gap_ms: int = 900_000, max_power_w: float = 100_000.0,
                 max_span_ms: int = 62 * 86_400_000, counter_slack_wh: float = 100.0):
        self.gap_ms = gap_ms
        self.max_power_w = max_power_w
        self.max_span_ms = max_span_ms
        self.slack_u = int(counter_slack_wh * 1e6)
        self.per_ms_u = max_power_w / 3.6  # µWh per ms at max power


_EMPTY_TAIL = (None,) * 12  # counters, interval energies, tariff


def _c6(v: float | None) -> int | None:
    """A counter in millionths; None when absent, negative or implausibly large (dropped, not guessed)."""
    if v is None:
        return None
    return round(v * 1e6) if 0 <= v < MAX_VALUE else None


def point(r: Reading) -> Point:
    """The reading as a point: (ts, period ms, usable, power W, 7 counters µ, 4 interval µWh, tariff, flags).

    ``flags``: 1 = has a counter, 2 = has a sub-meter energy (lets the common readings skip whole loops).
    """
    m = r.metrics
    per = r.period_s
    per_ms = int(per * 1000) if 0 < per * 1000 <= MAX_PERIOD_MS else 0
    if not m:
        return (r.ts, per_ms, False, None, *_EMPTY_TAIL, 0)
    g = m.get
    p = g("power_w")
    if p is not None and not (-1e9 < p < 1e9):
        p = None
    ci, ce, cg = g("energy_import_wh"), g("energy_export_wh"), g("gas_m3")
    c1, c2 = g("energy_import_t1_wh"), g("energy_import_t2_wh")
    c3, c4 = g("energy_export_t1_wh"), g("energy_export_t2_wh")
    e, s1, s2, s3 = g("energy_wh"), g("sub1_energy_wh"), g("sub2_energy_wh"), g("sub3_energy_wh")
    flags = 0
    if ci is not None or ce is not None or c1 is not None or c2 is not None or c3 is not None \
            or c4 is not None or cg is not None:
        ci, ce, c1, c2, c3, c4, cg = _c6(ci), _c6(ce), _c6(c1), _c6(c2), _c6(c3), _c6(c4), _c6(cg)
        if ci is not None or ce is not None or c1 is not None or c2 is not None or c3 is not None \
                or c4 is not None or cg is not None:
            flags = 1
    if e is not None:
        e = round(e * 1e6) if -MAX_VALUE < e < MAX_VALUE else None
    if s1 is not None or s2 is not None or s3 is not None:
        if s1 is not None:
            s1 = round(s1 * 1e6) if -MAX_VALUE < s1 < MAX_VALUE else None
        if s2 is not None:
            s2 = round(s2 * 1e6) if -MAX_VALUE < s2 < MAX_VALUE else None
        if s3 is not None:
            s3 = round(s3 * 1e6) if -MAX_VALUE < s3 < MAX_VALUE else None
        if s1 is not None or s2 is not None or s3 is not None:
            flags |= 2
    t = g("tariff")
    tar = int(t) if t is not None and t in (1.0, 2.0) else None
    usable = p is not None or e is not None or flags != 0
    return (r.ts, per_ms, usable, p, ci, ce, c1, c2, c3, c4, cg, e, s1, s2, s3, tar, flags)


def virtual(a: Point, b: Point, at: int) -> Point:
    """A point at ``at`` inside the span (a, b]: counters where the spread of the span puts them, no data.

    Used to cut a span where buckets are already closed, so the closed part keeps exactly what it got."""
    L = b[TS] - a[TS]
    cs = []
    for k in range(7):
        x, y = a[C0 + k], b[C0 + k]
        cs.append(None if x is None or y is None else x + _cum(y - x, at - a[TS], L))
    return (at, 0, False, None, *cs, None, None, None, None, None, 1 if any(c is not None for c in cs) else 0)


def _cum(value: int, x: int, length: int) -> int:
    """The part of ``value`` (spread evenly over ``length`` ms) in the first ``x`` ms, rounded half up."""
    return (2 * value * x + length) // (2 * length)


def span(prev: Point | None, cur: Point, rules: Rules) -> tuple[int, Items, int, Items, int, int]:
    """What the span ``(prev.ts, cur.ts]`` adds: (counter lo, counter items, cover lo, cover items,
    field bits, resets).

    Counter items spread over ``(counter lo, cur.ts]``, cover items over ``(cover lo, cur.ts]``; ``bits``
    has the bit of every field that got a value.
    """
    b = cur[TS]
    per = cur[PER]
    a = prev[TS] if prev is not None else None
    if per and not cur[FLAGS] & 1 and cur[USE] and (a is None or b - per >= a):
        # the common interval reading (a dataset row, a backfilled minute): its own period, whole, no counters
        e, p = cur[E0], cur[P]
        cover = [(COV, per)]
        bits = COV_BIT | IMP_BIT | EXP_BIT | PINT_BIT
        ee = e if e is not None else (round(p * per / 3.6) if p is not None else None)
        if ee is None:
            bits = COV_BIT
        else:
            cover += ((IMP, ee), (EXP, 0)) if ee >= 0 else ((IMP, 0), (EXP, -ee))
            cover.append((PINT, round(p * per / 3.6) if p is not None else ee))
        if cur[FLAGS] & 2:
            for i in range(3):
                s = cur[E0 + 1 + i]
                if s is not None:
                    cover.append((SUB_FIELDS[i], s))
                    bits |= 1 << SUB_FIELDS[i]
        return (a if a is not None else b), [], b - per, cover, bits, 0
    counter: Items = []
    cover = []
    resets = bits = 0
    if per:
        c0 = b - per if a is None or b - per >= a else a
        covered = cur[USE]
    else:
        c0 = a
        covered = a is not None and b - a <= rules.gap_ms and cur[USE] and prev[USE]  # type: ignore[index]
    imp_c = exp_c = False
    d_imp = d_exp = 0
    if a is not None and cur[FLAGS] & 1 and prev[FLAGS] & 1 \
            and b - a <= rules.max_span_ms:  # type: ignore[index]
        dt = b - a
        limit = rules.per_ms_u * dt + rules.slack_u
        for k in range(7):
            x = cur[C0 + k]
            if x is None:
                continue
            y = prev[C0 + k]  # type: ignore[index]
            if y is None:
                continue
            d = x - y
            if d < 0 or d > limit:
                resets += 1
                continue
            f = COUNTER_FIELDS[k]
            counter.append((f, d))
            bits |= 1 << f
            if k == 0:
                imp_c, d_imp = True, d
            elif k == 1:
                exp_c, d_exp = True, d
    if not covered:
        return (a if a is not None else b), counter, b, cover, bits, resets
    covlen = b - c0  # type: ignore[operator]
    cover.append((COV, covlen))
    bits |= COV_BIT
    p = cur[P]
    e = cur[E0]
    ee = None
    if per and e is not None:
        ee = e if covlen == per else _cum(e, covlen, per)
    elif p is not None:
        ee = round(p * covlen / 3.6)
    if ee is not None:
        if not imp_c:
            cover.append((IMP, ee if ee > 0 else 0))
            bits |= IMP_BIT
        if not exp_c:
            cover.append((EXP, -ee if ee < 0 else 0))
            bits |= EXP_BIT
    if per and cur[FLAGS] & 2:
        for i in range(3):
            s = cur[E0 + 1 + i]
            if s is not None:
                cover.append((SUB_FIELDS[i], s if covlen == per else _cum(s, covlen, per)))
                bits |= 1 << SUB_FIELDS[i]
    if p is not None:
        cover.append((PINT, round(p * covlen / 3.6)))
        bits |= PINT_BIT
    elif ee is not None:
        cover.append((PINT, ee))
        bits |= PINT_BIT
    elif imp_c and c0 == a:
        cover.append((PINT, d_imp - d_exp))
        bits |= PINT_BIT
    return (a if a is not None else b), counter, c0, cover, bits, resets  # type: ignore[return-value]


Get = Callable[[int], object]
"""get(slot start) -> the slot's accumulator (an ``accum.Acc``), made or loaded on demand."""


def spread(lo: int, hi: int, items: Items, sign: int, get: Get, min_slot: int | None = None) -> None:
    """Add (sign 1) or take away (sign -1) ``items``, each a total over ``(lo, hi]``, in the slots that
    interval crosses, in proportion to time; slots starting before ``min_slot`` (closed ones) are left
    alone."""
    if not items or hi <= lo:
        return
    first = lo // SLOT_MS * SLOT_MS
    if hi - first <= SLOT_MS:  # the whole span in one slot: the common case
        if min_slot is not None and first < min_slot:
            return
        acc = get(first)
        v = acc.v  # type: ignore[attr-defined]
        bits = 0
        if sign == 1:
            for f, x in items:
                v[f] += x
                bits |= 1 << f
        else:
            for f, x in items:
                v[f] -= x
        acc.known |= bits  # type: ignore[attr-defined]
        return
    length = hi - lo
    t = first
    while t < hi:
        if min_slot is None or t >= min_slot:
            x0, x1 = max(lo, t) - lo, min(hi, t + SLOT_MS) - lo
            acc = get(t)
            v = acc.v  # type: ignore[attr-defined]
            bits = 0
            for f, x in items:
                v[f] += sign * (_cum(x, x1, length) - _cum(x, x0, length))
                bits |= 1 << f
            if sign == 1:
                acc.known |= bits  # type: ignore[attr-defined]
        t += SLOT_MS


def slot_of(ts: int) -> int:
    """Start of the slot a reading at ``ts`` belongs to (it ends its period: ``start < ts <= end``)."""
    return (ts - 1) // SLOT_MS * SLOT_MS
