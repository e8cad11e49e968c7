"""Generated P1 telegrams: a small household behind a DSMR 5 (NL) or Fluvius (BE) meter.

A telegram layout is data: the lines of a real meter of that kind (the Iskra MT382 and Fluvius eMUCS
fixtures) as format strings, filled from a dict of values. ``Household`` makes those values: a base
load with a cycling fridge, the odd kettle, an oven some evenings, PV following the sun and seasons, per-phase split, counters that only
ever increase (per tariff), a gas meter captured every 5 minutes, water, and the Belgian quarter-hour
demand with its monthly peak. The CRC is CRC-16/ARC over `/`..`!` (``decode.crc16``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

from producers.p1.decode import crc16

_COMMON_PHASES = [
    "1-0:21.7.0({p1_imp:06.3f}*kW)", "1-0:41.7.0({p2_imp:06.3f}*kW)", "1-0:61.7.0({p3_imp:06.3f}*kW)",
    "1-0:22.7.0({p1_exp:06.3f}*kW)", "1-0:42.7.0({p2_exp:06.3f}*kW)", "1-0:62.7.0({p3_exp:06.3f}*kW)",
]

LAYOUTS: dict[str, list[str]] = {
    # DSMR 5.0, NL: Iskra MT382 (fixture nl_dsmr50_iskra_mt382_v5.txt), gas on M-Bus channel 1.
    "5": [
        "/ISk5\\2MT382-1000", "",
        "1-3:0.2.8(50)",
        "0-0:1.0.0({ts})",
        "0-0:96.1.1(4B384547303034303436333935353037)",
        "1-0:1.8.1({imp1:010.3f}*kWh)", "1-0:1.8.2({imp2:010.3f}*kWh)",
        "1-0:2.8.1({exp1:010.3f}*kWh)", "1-0:2.8.2({exp2:010.3f}*kWh)",
        "0-0:96.14.0({tariff:04d})",
        "1-0:1.7.0({p_imp:06.3f}*kW)", "1-0:2.7.0({p_exp:06.3f}*kW)",
        "0-0:96.7.21({short_failures:05d})", "0-0:96.7.9({long_failures:05d})",
        "1-0:99.97.0(0)(0-0:96.7.19)",
        "1-0:32.32.0({sags1:05d})", "1-0:52.32.0({sags2:05d})", "1-0:72.32.0({sags3:05d})",
        "1-0:32.36.0({swells1:05d})", "1-0:52.36.0({swells2:05d})", "1-0:72.36.0({swells3:05d})",
        "0-0:96.13.0()",
        "1-0:32.7.0({u1:06.1f}*V)", "1-0:52.7.0({u2:06.1f}*V)", "1-0:72.7.0({u3:06.1f}*V)",
        "1-0:31.7.0({i1:03.0f}*A)", "1-0:51.7.0({i2:03.0f}*A)", "1-0:71.7.0({i3:03.0f}*A)",
        *_COMMON_PHASES,
        "0-1:24.1.0(003)",
        "0-1:96.1.0(4730303332353631323831363736363137)",
        "0-1:24.2.1({gas_ts})({gas:09.3f}*m3)",
        "!",
    ],
    # Belgium, Fluvius eMUCS 1.7.1 (fixture be_fluvius_emucs_v171.txt): capacity tariff, gas and water.
    "5B": [
        "/FLU5\\253769484_A", "",
        "0-0:96.1.4(50217)",
        "0-0:96.1.1(3153414733313031303231363035)",
        "0-0:1.0.0({ts})",
        "1-0:1.8.1({imp1:010.3f}*kWh)", "1-0:1.8.2({imp2:010.3f}*kWh)",
        "1-0:2.8.1({exp1:010.3f}*kWh)", "1-0:2.8.2({exp2:010.3f}*kWh)",
        "1-0:1.4.0({demand:06.3f}*kW)",
        "1-0:1.6.0({peak_ts})({peak:06.3f}*kW)",
        "0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0)({prev_month})({prev_peak_ts})({prev_peak:06.3f}*kW)",
        "0-0:96.14.0({tariff:04d})",
        "1-0:1.7.0({p_imp:06.3f}*kW)", "1-0:2.7.0({p_exp:06.3f}*kW)",
        *_COMMON_PHASES,
        "1-0:32.7.0({u1:05.1f}*V)", "1-0:52.7.0({u2:05.1f}*V)", "1-0:72.7.0({u3:05.1f}*V)",
        "1-0:31.7.0({i1:06.2f}*A)", "1-0:51.7.0({i2:06.2f}*A)", "1-0:71.7.0({i3:06.2f}*A)",
        "0-0:96.3.10(1)",
        "0-0:17.0.0(999.9*kW)",
        "1-0:31.4.0(999*A)",
        "0-0:96.13.0()",
        "0-1:24.1.0(003)",
        "0-1:96.1.1(37464C4F32313139303333373333)",
        "0-1:24.4.0(1)",
        "0-1:24.2.3({gas_ts})({gas:09.3f}*m3)",
        "0-2:24.1.0(007)",
        "0-2:96.1.1(3853414731323334353637383930)",
        "0-2:24.2.1({water_ts})({water:09.3f}*m3)",
        "!",
    ],
}

SUB_METER_PERIOD_S = 300
"""M-Bus sub-meters report a value captured every 5 minutes (DSMR 5)."""


def frame(lines: list[str]) -> bytes:
    """Join lines with CRLF and close with `!` + the 4-digit upper-case CRC, as a meter sends it."""
    assert lines[-1] == "!", "a layout ends with the `!` line"
    body = ("\r\n".join(lines)).encode("latin-1")
    return body + f"{crc16(body):04X}\r\n".encode("ascii")


def dsmr_stamp(t: datetime, tz: ZoneInfo) -> str:
    """`YYMMDDhhmmssX` in ``tz``: X = S while summer time is on, W otherwise."""
    local = t.astimezone(tz)
    jan = datetime(local.year, 1, 15, 12, tzinfo=tz).utcoffset()
    jul = datetime(local.year, 7, 15, 12, tzinfo=tz).utcoffset()
    summer = jan != jul and local.utcoffset() == max(jan, jul)  # type: ignore[type-var]
    return local.strftime("%y%m%d%H%M%S") + ("S" if summer else "W")


EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
"""The simulated meters' registers hold the BASE values at this instant and grow from there."""
BASE = {"imp1": 10234.561, "imp2": 8123.004, "exp1": 1520.113, "exp2": 3811.790,   # kWh
        "gas": 4321.987, "water": 512.345}                                           # m3
_COUNTERS = ("imp1", "imp2", "exp1", "exp2", "gas", "water")
_DAY = 86400


def _hash(x: np.ndarray, seed: int) -> np.ndarray:
    """A cheap deterministic integer hash (splitmix-style) for per-slot random events."""
    salt = np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFF)
    z = (x.astype(np.uint64) + salt) & np.uint64(0xFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(17))) * np.uint64(0xED5AD4BB) & np.uint64(0xFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(11))) * np.uint64(0xAC4C1B51) & np.uint64(0xFFFFFFFFFFFF)
    return z ^ (z >> np.uint64(15))


class Household:
    """A household with PV behind one meter, as a pure function of time.

    Power is constant within each minute (plus a little display jitter), so every register is the exact
    integral of the power shown: counters never go back, not even when the emulator restarts, and a
    restart continues where the last run would have been. The household lives on standard (winter) time
    of ``tz``; the seasons move the PV output and the heating.
    """

    def __init__(self, tz: ZoneInfo, profile: str = "5", seed: int = 1, pv_peak_w: float = 3500.0):
        self.tz, self.profile, self.seed, self.pv_peak_w = tz, profile, seed, pv_peak_w
        jan = datetime(2024, 1, 15, 12, tzinfo=tz).utcoffset() or timedelta(0)
        jul = datetime(2024, 7, 15, 12, tzinfo=tz).utcoffset() or timedelta(0)
        self.std_offset = int(min(jan, jul).total_seconds())
        self.epoch = int(EPOCH.timestamp())
        self._prefix: np.ndarray | None = None     # registers at the start of each day since the epoch
        self._day_index = -1
        self._day_cum: np.ndarray | None = None    # registers at each minute of the current day
        self._peaks: dict[tuple[int, int], tuple[int, float]] = {}

    # -- the model, vectorised over minute starts ------------------------------------------------------
    def tariffs(self, t: np.ndarray) -> np.ndarray:
        """NL: 1 = low (nights 23-07, weekends), 2 = normal. BE: 1 = day (07-22 on weekdays), 2 = night."""
        local = t + self.std_offset
        hour = (local % _DAY) // 3600
        weekday = (local // _DAY + 3) % 7          # 1970-01-01 was a Thursday
        if self.profile == "5B":
            return np.where((weekday < 5) & (hour >= 7) & (hour < 22), 1, 2)
        return np.where((weekday < 5) & (hour >= 7) & (hour < 23), 2, 1)

    def phases_w(self, t: np.ndarray) -> np.ndarray:
        """Net power per phase (3, n), import positive, for minute starts ``t`` (epoch seconds)."""
        local = t + self.std_offset
        h = (local % _DAY) / 3600.0
        fridge = np.where((t // 600) % 3 == 0, 90.0, 0.0)
        base = 150.0 + fridge
        evening = 600.0 * np.exp(-((h - 19.5) ** 2) / 2.0)
        morning = 300.0 * np.exp(-((h - 7.5) ** 2) / 0.5)
        quarter = t // 900
        event = _hash(quarter, self.seed)
        begins = (event >> np.uint64(8)) % np.uint64(12)
        minute = ((t % 900) // 60).astype(np.uint64)
        awake = (h > 6.5) & (h < 23)
        kettle = np.where(awake & (event % np.uint64(100) < 15) & (minute >= begins) & (minute < begins + 3),
                          2000.0, 0.0)
        # The oven on one day in three, 17:45-18:30: the quarter hours that set the monthly peak.
        oven = np.where((_hash(local // _DAY, self.seed + 7) % np.uint64(3) == 0) & (h >= 17.75) & (h < 18.5),
                        2400.0, 0.0)
        doy = ((t - self.epoch) // _DAY) % 365
        season = 0.55 + 0.45 * np.cos(2 * np.pi * (doy - 172) / 365.0)         # June strong, December weak
        daylight = np.clip(np.sin(np.pi * (h - 6.0) / 14.0), 0.0, None) * ((h > 6) & (h < 20))
        clouds = 0.75 + 0.25 * np.sin(t / 5820.0) * np.sin(t / 1370.0)
        pv = self.pv_peak_w * season * daylight * clouds / 3
        return np.stack([0.5 * base + 0.4 * evening + kettle - pv,
                         0.3 * base + 0.3 * evening + morning + oven - pv,
                         0.2 * base + 0.3 * evening - pv])

    def _rates(self, t: np.ndarray) -> np.ndarray:
        """Register increments per minute (n, 6): kWh for imp1, imp2, exp1, exp2; m3 for gas, water."""
        net = self.phases_w(t).sum(axis=0)
        tariff = self.tariffs(t)
        imp = np.clip(net, 0, None) / 60_000.0
        exp = np.clip(-net, 0, None) / 60_000.0
        h = ((t + self.std_offset) % _DAY) / 3600.0
        doy = ((t - self.epoch) // _DAY) % 365
        heating = 0.15 + 0.85 * (0.5 + 0.5 * np.cos(2 * np.pi * (doy - 15) / 365.0))
        gas = np.where((h < 8) | (h >= 17), 0.45, 0.1) * heating / 60.0
        water = np.where((h >= 7) & (h < 22), 0.02, 0.001) / 60.0
        one = tariff == 1
        return np.stack([np.where(one, imp, 0), np.where(one, 0, imp), np.where(one, exp, 0),
                         np.where(one, 0, exp), gas, water], axis=1)

    # -- registers -------------------------------------------------------------------------------------------
    def _day_rates(self, first_day: int, days: int) -> np.ndarray:
        starts = self.epoch + first_day * _DAY + np.arange(days * 1440, dtype=np.int64) * 60
        return self._rates(starts).reshape(days, 1440, len(_COUNTERS))

    def _ensure(self, day: int) -> None:
        """Registers at the start of every day up to ``day`` (computed a few days of minutes at a time)."""
        if self._prefix is None:
            self._prefix = np.zeros((1, len(_COUNTERS)))
        have = len(self._prefix) - 1
        if have < day:
            totals = np.concatenate([self._day_rates(first, min(64, day - first)).sum(axis=1)
                                     for first in range(have, day, 64)])
            self._prefix = np.concatenate([self._prefix, self._prefix[-1] + np.cumsum(totals, axis=0)])
        if self._day_index != day:
            cum = np.cumsum(self._day_rates(day, 1)[0], axis=0)
            self._day_cum = np.concatenate([np.zeros((1, len(_COUNTERS))), cum])
            self._day_index = day

    def registers(self, t: int) -> dict[str, float]:
        """Every register at epoch second ``t`` (exact integral of the power since EPOCH, plus BASE)."""
        if t < self.epoch:
            raise ValueError(f"the simulated meter starts at {EPOCH.isoformat()}")
        day, rest = divmod(t - self.epoch, _DAY)
        self._ensure(day)
        assert self._prefix is not None and self._day_cum is not None
        minute, sec = divmod(rest, 60)
        inside = self._day_cum[minute] + (self._day_cum[minute + 1] - self._day_cum[minute]) * (sec / 60)
        vals = self._prefix[day] + inside
        return {k: BASE[k] + float(v) for k, v in zip(_COUNTERS, vals)}

    def _import_kwh(self, t: int) -> float:
        r = self.registers(t)
        return r["imp1"] + r["imp2"]

    def peak_between(self, start: int, end: int) -> tuple[int, float]:
        """(end of that quarter hour, kW) of the highest quarter-hour average import in [start, end)."""
        key = (start, end)
        if key not in self._peaks:
            best = (start, 2.5)                                           # Fluvius bills at least 2.5 kW
            if end > start:
                minutes = np.arange((end - start) // 60, dtype=np.int64) * 60 + start
                r = self._rates(minutes)
                per_q = (r[:, 0] + r[:, 1]).reshape(-1, 15).sum(axis=1) * 4  # kWh in 15 min -> kW
                i = int(np.argmax(per_q))
                if per_q[i] > best[1]:
                    best = (start + (i + 1) * 900, float(per_q[i]))
            if len(self._peaks) > 8:
                self._peaks.clear()
            self._peaks[key] = best
        return self._peaks[key]

    def values(self, t: int) -> dict[str, object]:
        """The numbers a telegram at epoch second ``t`` shows."""
        arr = np.array([t - t % 60], dtype=np.int64)
        p = self.phases_w(arr)[:, 0]
        jitter = float(_hash(np.array([t]), self.seed + 1)[0] % np.uint64(31)) - 15.0
        p = [p[0] + jitter, p[1], p[2]]
        net = sum(p)
        regs = self.registers(t)
        u = [230.0 + float(_hash(np.array([t * 3 + i]), self.seed)[0] % np.uint64(40)) / 10 - 2 - p[i] / 1000
             for i in range(3)]
        capture = t - t % SUB_METER_PERIOD_S
        sub = self.registers(capture)
        quarter = t - t % 900
        demand = (self._import_kwh(t) - self._import_kwh(quarter)) * 3600 / max(1, t - quarter)
        local = datetime.fromtimestamp(t, self.tz)
        month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        prev_month = (month_start - timedelta(days=1)).replace(day=1)
        peak_at, peak = self.peak_between(int(month_start.timestamp()), quarter)
        prev_at, prev_peak = self.peak_between(int(prev_month.timestamp()), int(month_start.timestamp()))
        stamp = lambda s: dsmr_stamp(datetime.fromtimestamp(s, timezone.utc), self.tz)  # noqa: E731
        return {
            "ts": stamp(t),
            "imp1": regs["imp1"], "imp2": regs["imp2"], "exp1": regs["exp1"], "exp2": regs["exp2"],
            "tariff": int(self.tariffs(arr)[0]),
            "p_imp": max(net, 0) / 1000, "p_exp": max(-net, 0) / 1000,
            **{f"p{i + 1}_imp": max(p[i], 0) / 1000 for i in range(3)},
            **{f"p{i + 1}_exp": max(-p[i], 0) / 1000 for i in range(3)},
            **{f"u{i + 1}": u[i] for i in range(3)},
            **{f"i{i + 1}": abs(p[i]) / u[i] for i in range(3)},
            "short_failures": 7, "long_failures": 2,
            **{f"sags{i}": 0 for i in (1, 2, 3)}, **{f"swells{i}": 0 for i in (1, 2, 3)},
            "gas_ts": stamp(capture), "gas": sub["gas"],
            "water_ts": stamp(capture), "water": sub["water"],
            "demand": demand, "peak_ts": stamp(peak_at), "peak": peak,
            "prev_month": dsmr_stamp(prev_month, self.tz), "prev_peak_ts": stamp(prev_at), "prev_peak": prev_peak,
        }


class TelegramGenerator:
    """Telegrams of ``profile`` ("5" or "5B") for successive times, counters increasing."""

    def __init__(self, profile: str = "5", tz: ZoneInfo | str = "Europe/Brussels", seed: int = 1):
        if profile not in LAYOUTS:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(LAYOUTS)}")
        self.profile = profile
        self.tz = ZoneInfo(tz) if isinstance(tz, str) else tz
        self.house = Household(self.tz, profile, seed=seed)

    def telegram(self, t: datetime | None = None) -> bytes:
        """The telegram the meter sends at ``t`` (default: now, whole seconds as a meter shows them)."""
        t = (t or datetime.now(timezone.utc)).replace(microsecond=0)
        values = self.house.values(int(t.timestamp()))
        return frame([line.format_map(values) for line in LAYOUTS[self.profile]])
