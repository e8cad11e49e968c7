"""The emulated Shelly Pro 3EM's physics and memory: powers, counters, minute records.

Why a model apart from the HTTP server: everything here is a pure function of the clock, so a test
can jump the clock two hours ahead and the device "has been running" meanwhile: counters integrated
the powers, the EMData database holds one record per minute, exactly as a real device that only
lost its network would.

Power is piecewise constant over ``SLOT_S``-second slots and derived deterministically from
``(seed, slot)``, so two emulators with the same seed agree: the ``grid`` one sees the house load
minus the production the ``solar`` one reports.  Counters and records integrate the same slots, so
Σ(minute records) equals the counter delta up to rounding.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

SLOT_S = 5  # seconds per constant-power slot
PHASES = ("a", "b", "c")
RETENTION_S = 60 * 86400  # the Pro 3EM keeps roughly 60 days of minute records

# Column order of /emdata/0/data.csv (minus "timestamp"); GetData returns ``keys`` in this order
# unless the emulator is asked to shuffle them (clients must index by ``keys``).
EMDATA_KEYS = tuple(
    f"{x}_{k}"
    for x in PHASES
    for k in ("total_act_energy", "fund_act_energy", "total_act_ret_energy", "fund_act_ret_energy",
              "lag_react_energy", "lead_react_energy", "max_act_power", "min_act_power",
              "max_aprt_power", "min_aprt_power", "max_voltage", "min_voltage", "avg_voltage",
              "max_current", "min_current", "avg_current")
) + ("n_max_current", "n_min_current", "n_avg_current")

EM1DATA_KEYS = ("total_act_energy", "total_act_ret_energy", "lag_react_energy", "lead_react_energy",
                "max_act_power", "min_act_power", "max_aprt_power", "min_aprt_power", "max_voltage",
                "min_voltage", "avg_voltage", "max_current", "min_current", "avg_current")


_M64 = (1 << 64) - 1
_TAGS: dict[str, int] = {}


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _unit(seed: int, tag: str, a: int, b: int = 0) -> float:
    """Deterministic pseudo-random number in [0, 1) for (seed, tag, a, b)."""
    t = _TAGS.get(tag)
    if t is None:
        t = _TAGS[tag] = int.from_bytes(hashlib.blake2b(tag.encode(), digest_size=8).digest(), "little")
    return _mix(_mix(_mix(seed ^ t) + a) + b) / 18446744073709551616.0


class Slot:
    """The state of the three phases during one slot, with what is derived from it precomputed."""

    __slots__ = ("p", "q", "v", "f", "sa", "ia", "n")

    def __init__(self, p: tuple[float, float, float], q: tuple[float, float, float],
                 v: tuple[float, float, float], f: float) -> None:
        self.p, self.q, self.v, self.f = p, q, v, f
        self.sa = tuple(math.hypot(p[k], q[k]) for k in range(3))  # apparent power, VA
        self.ia = tuple(self.sa[k] / v[k] if v[k] > 0 else 0.0 for k in range(3))
        # |Ia + Ib + Ic| as phasors 120 deg apart, each lagging its voltage by its power angle
        re = im = 0.0
        for k in range(3):
            angle = -2 * math.pi * k / 3 - (math.atan2(q[k], p[k]) if self.sa[k] > 0 else 0.0)
            re += self.ia[k] * math.cos(angle)
            im += self.ia[k] * math.sin(angle)
        self.n = math.hypot(re, im)

    def s(self, k: int) -> float:
        return self.sa[k]

    def i(self, k: int) -> float:
        return self.ia[k]

    def neutral(self) -> float:
        return self.n


class HouseModel:
    """A household's load per phase and a three-phase PV system's production."""

    def __init__(self, seed: int = 1, tz: str = "Europe/Brussels", lat: float = 50.85, lon: float = 4.35,
                 pv_peak_w: float = 6000.0) -> None:
        self.seed, self.tz, self.lat, self.lon, self.pv_peak_w = seed, ZoneInfo(tz), lat, lon, pv_peak_w
        self._blocks: dict[tuple[str, int, int], float] = {}

    def _block(self, tag: str, a: int, b: int = 0) -> float:
        """``_unit`` for values that hold over several slots (clouds, appliances), computed once."""
        key = (tag, a, b)
        value = self._blocks.get(key)
        if value is None:
            if len(self._blocks) > 4096:
                self._blocks.clear()
            value = self._blocks[key] = _unit(self.seed, tag, a, b)
        return value

    def sun_elevation(self, t: float) -> float:
        """Solar elevation (radians), textbook declination/hour-angle formula; good to a degree."""
        doy = time.gmtime(t).tm_yday
        decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365)
        solar_hours = (t % 86400) / 3600 + self.lon / 15
        hour_angle = math.radians((solar_hours - 12) * 15)
        lat = math.radians(self.lat)
        s = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
        return math.asin(max(-1.0, min(1.0, s)))

    def pv_w(self, t: float) -> float:
        elev = self.sun_elevation(t)
        if elev <= 0:
            return 0.0
        block = int(t // 600)  # clouds change over ten minutes, interpolated to stay smooth
        frac = (t % 600) / 600
        c0, c1 = (0.3 + 0.7 * self._block("cloud", b) ** 0.5 for b in (block, block + 1))
        cloud = c0 + (c1 - c0) * frac
        flicker = 0.97 + 0.03 * _unit(self.seed, "pv", int(t // SLOT_S))
        return self.pv_peak_w * math.sin(elev) ** 1.2 * cloud * flicker

    def local_hour(self, t: float) -> float:
        local = datetime.fromtimestamp(t, self.tz)
        return local.hour + local.minute / 60 + local.second / 3600

    def load_w(self, t: float, phase: int, h: float | None = None) -> tuple[float, float]:
        """(active W, reactive var) drawn by the house on one phase; ``h`` = local hour of ``t``."""
        h = self.local_hour(t) if h is None else h
        shape = (1 + 1.6 * math.exp(-((h - 7.5) / 1.0) ** 2) + 2.4 * math.exp(-((h - 19.5) / 1.8) ** 2)
                 + 0.6 * math.exp(-((h - 12.5) / 1.5) ** 2))
        base = (110.0, 80.0, 140.0)[phase]
        p = base * shape
        if phase == 1 and (t // 60) % 40 < 15:  # the fridge's compressor cycle
            p += 95.0
        busy = 0.03 if h < 6.5 or h > 23 else 0.10
        block = int(t // 300)
        if self._block("appliance", block, phase) < busy:  # kettle, oven, washing machine...
            p += 700 + 2300 * self._block("appliance-w", block, phase)
        p *= 0.95 + 0.1 * _unit(self.seed, "jitter", int(t // SLOT_S), phase)
        pf = 0.86 + 0.12 * self._block("pf", int(t // 600), phase)
        return p, p * math.tan(math.acos(pf))


@dataclass
class Minute:
    """Accumulates one minute record while the clock runs through it."""

    ts: int
    complete: bool = True  # False when the device was off or its data deleted during the minute
    imp: list[float] = field(default_factory=lambda: [0.0] * 3)
    exp: list[float] = field(default_factory=lambda: [0.0] * 3)
    lag: list[float] = field(default_factory=lambda: [0.0] * 3)
    lead: list[float] = field(default_factory=lambda: [0.0] * 3)
    p: list[list[float]] = field(default_factory=lambda: [[], [], []])
    s: list[list[float]] = field(default_factory=lambda: [[], [], []])
    v: list[list[float]] = field(default_factory=lambda: [[], [], []])
    i: list[list[float]] = field(default_factory=lambda: [[], [], []])
    vsum: list[float] = field(default_factory=lambda: [0.0] * 3)
    isum: list[float] = field(default_factory=lambda: [0.0] * 3)
    n: list[float] = field(default_factory=list)
    nsum: float = 0.0
    seconds: float = 0.0


@dataclass
class Block:
    ts: int
    period: int
    rows: list[dict[str, float]]  # per channel-independent record values, keyed like EMDATA_KEYS

    @property
    def end(self) -> int:
        return self.ts + self.period * len(self.rows)


class Meter:
    """Counters and the minute database of one emulated Pro 3EM, integrated lazily up to ``now``."""

    def __init__(self, house: HouseModel, role: str, start: float, *, period: int = 60,
                 counters: tuple[list[float], list[float]] | None = None, neutral: bool = True) -> None:
        if role not in ("grid", "solar"):
            raise ValueError("role must be grid or solar")
        self.house, self.role, self.period, self.neutral = house, role, period, neutral
        self.t = float(start)
        seed = house.seed + (0 if role == "grid" else 7919)
        if counters is None:  # a device that has been installed for a while
            scale = 1.5e6 if role == "grid" else 2e4
            counters = ([scale * (0.8 + 0.4 * _unit(seed, "ctr-i", k)) for k in range(3)],
                        [scale * (0.3 + 0.4 * _unit(seed, "ctr-e", k)) * (30 if role == "solar" else 1)
                         for k in range(3)])
        self.imp, self.exp = list(counters[0]), list(counters[1])
        self.blocks: list[Block] = []
        # exact per-phase counters at each minute boundary of the last days: the truth tests compare to
        self.truth: dict[int, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        self.powered = True
        self.minute = Minute(ts=int(self.t // period) * period, complete=(self.t % period == 0))
        self._slot_cache: tuple[int, Slot] | None = None

    # -- physics ---------------------------------------------------------------------------------
    def slot(self, t: float) -> Slot:
        k = int(t // SLOT_S)
        if self._slot_cache and self._slot_cache[0] == k:
            return self._slot_cache[1]
        t0 = k * SLOT_S
        seed = self.house.seed
        pv = self.house.pv_w(t0) / 3
        h = self.house.local_hour(t0) if self.role == "grid" else 0.0
        p, q, v = [], [], []
        for ph in range(3):
            if self.role == "solar":
                # CTs installed the normal way on the inverter's feed: production reads negative;
                # at night the inverter's standby draws a few watts.
                pp = -pv if pv > 0 else 2.0 + 0.5 * _unit(seed, "standby", k, ph)
                qq = 0.02 * abs(pp) + 1.0
            else:
                lp, lq = self.house.load_w(t0, ph, h)
                pp, qq = lp - pv, lq
            p.append(pp)
            q.append(qq)
            v.append(230.5 + 2.0 * math.sin(2 * math.pi * t0 / 43200 + ph) + 0.8 * (_unit(seed, "v", k, ph) - 0.5)
                     - 0.0012 * pp)
        f = 50.0 + 0.04 * (_unit(seed, "f", k) - 0.5)
        s = Slot((p[0], p[1], p[2]), (q[0], q[1], q[2]), (v[0], v[1], v[2]), f)
        self._slot_cache = (k, s)
        return s

    # -- time ------------------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Integrate counters and close minute records up to ``now``."""
        period = self.period
        while self.t < now:
            slot_end = (math.floor(self.t / SLOT_S) + 1) * SLOT_S
            minute_end = self.minute.ts + period
            b = min(now, slot_end, minute_end)
            dt = b - self.t
            if self.powered and dt > 0:
                self._integrate(self.slot(self.t), dt)
            self.t = b
            if self.t >= minute_end:
                self.truth[minute_end] = (tuple(self.imp), tuple(self.exp))
                if len(self.truth) > 4 * 1440:  # keys arrive in time order: the first is the oldest
                    del self.truth[next(iter(self.truth))]
                self._close_minute()
                self.minute = Minute(ts=minute_end, complete=self.powered)

    def _integrate(self, s: Slot, dt: float) -> None:
        m = self.minute
        sa, ia = s.sa, s.ia
        for k in range(3):
            e = s.p[k] * dt / 3600
            if e >= 0:
                self.imp[k] += e
                m.imp[k] += e
            else:
                self.exp[k] -= e
                m.exp[k] -= e
            r = s.q[k] * dt / 3600
            if r >= 0:
                m.lag[k] += r
            else:
                m.lead[k] -= r
            m.p[k].append(s.p[k])
            m.s[k].append(sa[k])
            m.v[k].append(s.v[k])
            m.i[k].append(ia[k])
            m.vsum[k] += s.v[k] * dt
            m.isum[k] += ia[k] * dt
        n = s.n
        m.n.append(n)
        m.nsum += n * dt
        m.seconds += dt

    def _close_minute(self) -> None:
        m = self.minute
        if not (m.complete and self.powered and m.seconds > 0):
            return
        row: dict[str, float] = {}
        for k, x in enumerate(PHASES):
            row.update({
                f"{x}_total_act_energy": round(m.imp[k], 3), f"{x}_fund_act_energy": round(m.imp[k] * 0.998, 3),
                f"{x}_total_act_ret_energy": round(m.exp[k], 3),
                f"{x}_fund_act_ret_energy": round(m.exp[k] * 0.998, 3),
                f"{x}_lag_react_energy": round(m.lag[k], 3), f"{x}_lead_react_energy": round(m.lead[k], 3),
                f"{x}_max_act_power": round(max(m.p[k]), 1), f"{x}_min_act_power": round(min(m.p[k]), 1),
                f"{x}_max_aprt_power": round(max(m.s[k]), 1), f"{x}_min_aprt_power": round(min(m.s[k]), 1),
                f"{x}_max_voltage": round(max(m.v[k]), 1), f"{x}_min_voltage": round(min(m.v[k]), 1),
                f"{x}_avg_voltage": round(m.vsum[k] / m.seconds, 1),
                f"{x}_max_current": round(max(m.i[k]), 3), f"{x}_min_current": round(min(m.i[k]), 3),
                f"{x}_avg_current": round(m.isum[k] / m.seconds, 3),
            })
        if self.neutral:
            row.update({"n_max_current": round(max(m.n), 3), "n_min_current": round(min(m.n), 3),
                        "n_avg_current": round(m.nsum / m.seconds, 3)})
        else:
            row.update({"n_max_current": 0.0, "n_min_current": 0.0, "n_avg_current": 0.0})
        last = self.blocks[-1] if self.blocks else None
        if last is not None and last.end == m.ts and last.period == self.period:
            last.rows.append(row)
        else:
            self.blocks.append(Block(ts=m.ts, period=self.period, rows=[row]))
        self._expire(m.ts)

    def _expire(self, now: int) -> None:
        horizon = now - RETENTION_S
        while self.blocks and self.blocks[0].end <= horizon:
            self.blocks.pop(0)
        if self.blocks and self.blocks[0].ts < horizon:
            b = self.blocks[0]
            drop = (horizon - b.ts + b.period - 1) // b.period
            self.blocks[0] = Block(b.ts + drop * b.period, b.period, b.rows[drop:])

    # -- events ----------------------------------------------------------------------------------
    def set_powered(self, on: bool) -> None:
        if on == self.powered:
            return
        self.powered = on
        self.minute.complete = False  # a minute the device was off during is not recorded

    def reset_counters(self) -> None:
        self.imp, self.exp = [0.0] * 3, [0.0] * 3
        self.minute.complete = False

    def delete_all_data(self) -> None:
        """``EMData.DeleteAllData``: records gone, perpetual counters nullified."""
        self.reset_counters()
        self.blocks = []

    # -- views -----------------------------------------------------------------------------------
    def records(self, start: int, end: int | None) -> list[tuple[int, int, dict[str, float]]]:
        """(ts, period, row) of the records whose ts is in [start, end]."""
        out = []
        for b in self.blocks:
            if b.end <= start or (end is not None and b.ts > end):
                continue
            first = max(0, -(-(start - b.ts) // b.period))
            for idx in range(first, len(b.rows)):
                ts = b.ts + idx * b.period
                if end is not None and ts > end:
                    break
                out.append((ts, b.period, b.rows[idx]))
        return out
