"""Generated P1 telegrams: a small household behind a DSMR 5 (NL) or Fluvius (BE) meter.

A telegram layout is data: the lines of a real meter of that kind (the Iskra MT382 and Fluvius eMUCS
fixtures) as format strings, filled from a dict of values. ``Household`` makes those values: a base
load with a cycling fridge and the odd kettle, PV on a sunny-ish day, per-phase split, counters that only
ever increase (per tariff), a gas meter captured every 5 minutes, water, and the Belgian quarter-hour
demand with its monthly peak. The CRC is CRC-16/ARC over `/`..`!` (``decode.crc16``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

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


@dataclass
class Household:
    """Deterministic (seeded) household + PV behind one meter; ``step(t)`` advances it to time ``t``."""

    tz: ZoneInfo
    seed: int = 1
    pv_peak_w: float = 3500.0
    imp: list[float] = field(default_factory=lambda: [10234.561, 8123.004])   # kWh per tariff
    exp: list[float] = field(default_factory=lambda: [1520.113, 3811.790])
    gas: float = 4321.987
    water: float = 512.345
    short_failures: int = 7
    long_failures: int = 2

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.t: datetime | None = None
        self.kettle_until: datetime | None = None
        self.power = [0.0, 0.0, 0.0]
        self.gas_capture = (None, self.gas)
        self.water_capture = (None, self.water)
        self.quarter_start: datetime | None = None
        self.quarter_wh = 0.0
        self.peak: tuple[datetime | None, float] = (None, 2.5)   # kW; Fluvius bills at least 2.5 kW
        self.peak_month: int | None = None
        self.prev_peak = 3.695

    # -- the model -----------------------------------------------------------------------------------
    def _load_w(self, t: datetime) -> list[float]:
        local = t.astimezone(self.tz)
        h = local.hour + local.minute / 60
        base = 150 + 90 * (1 if (t.timestamp() // 600) % 3 == 0 else 0)          # fridge cycles
        evening = 600 * math.exp(-((h - 19.5) ** 2) / 2)                        # cooking, TV, lights
        morning = 300 * math.exp(-((h - 7.5) ** 2) / 0.5)
        if self.kettle_until is None and self.rng.random() < 0.002:
            self.kettle_until = t + timedelta(seconds=150)
        kettle = 2000.0 if self.kettle_until and t < self.kettle_until else 0.0
        if self.kettle_until and t >= self.kettle_until:
            self.kettle_until = None
        jitter = self.rng.uniform(-15, 15)
        return [base * 0.5 + evening * 0.4 + kettle + jitter, base * 0.3 + evening * 0.3 + morning,
                base * 0.2 + evening * 0.3]

    def _pv_w(self, t: datetime) -> float:
        local = t.astimezone(self.tz)
        h = local.hour + local.minute / 60 + local.second / 3600
        if not 6 <= h <= 20:
            return 0.0
        clouds = 0.75 + 0.25 * math.sin(t.timestamp() / 97.0)
        return self.pv_peak_w * math.sin(math.pi * (h - 6) / 14) * clouds

    def tariff(self, t: datetime, profile: str) -> int:
        """NL: 1 = low (nights 23-07, weekends), 2 = normal. BE: 1 = day (07-22 weekdays), 2 = night."""
        local = t.astimezone(self.tz)
        day = local.weekday() < 5 and (7 <= local.hour < (22 if profile == "5B" else 23))
        if profile == "5B":
            return 1 if day else 2
        return 2 if day else 1

    def step(self, t: datetime, profile: str) -> None:
        dt = 0.0 if self.t is None else max(0.0, (t - self.t).total_seconds())
        self.t = t
        load = self._load_w(t)
        pv = self._pv_w(t) / 3
        self.power = [load[i] - pv for i in range(3)]
        net = sum(self.power)
        tariff = self.tariff(t, profile)
        self.imp[tariff - 1] += max(net, 0.0) * dt / 3.6e6
        self.exp[tariff - 1] += max(-net, 0.0) * dt / 3.6e6
        local = t.astimezone(self.tz)
        self.gas += dt / 3600 * (0.35 if local.hour < 8 or local.hour >= 17 else 0.08)
        self.water += dt / 3600 * (0.02 if 7 <= local.hour < 22 else 0.001)
        capture = t - timedelta(seconds=t.timestamp() % SUB_METER_PERIOD_S)
        if self.gas_capture[0] != capture:
            self.gas_capture = (capture, self.gas)
            self.water_capture = (capture, self.water)
        # Fluvius: running average of the import power over the current quarter hour, monthly peak.
        quarter = t - timedelta(seconds=t.timestamp() % 900)
        if self.quarter_start != quarter:
            if self.quarter_start is not None:
                avg_kw = self.quarter_wh / 250.0          # Wh in 15 min -> kW
                month = self.quarter_start.astimezone(self.tz).month
                if self.peak_month is not None and self.peak_month != month:
                    self.prev_peak, self.peak = self.peak[1], (None, 2.5)
                self.peak_month = month
                if avg_kw > self.peak[1]:
                    self.peak = (quarter, avg_kw)
            self.quarter_start, self.quarter_wh = quarter, 0.0
        self.quarter_wh += max(net, 0.0) * dt / 3600

    def values(self, t: datetime, profile: str) -> dict[str, object]:
        p = self.power
        net = sum(p)
        u = [230.0 + self.rng.uniform(-2, 2) - p[i] / 1000 for i in range(3)]
        elapsed = max(1.0, (t - (self.quarter_start or t)).total_seconds())
        month_start = t.astimezone(self.tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        prev_month = (month_start - timedelta(days=1)).replace(day=1)
        return {
            "ts": dsmr_stamp(t, self.tz),
            "imp1": self.imp[0], "imp2": self.imp[1], "exp1": self.exp[0], "exp2": self.exp[1],
            "tariff": self.tariff(t, profile),
            "p_imp": max(net, 0) / 1000, "p_exp": max(-net, 0) / 1000,
            **{f"p{i + 1}_imp": max(p[i], 0) / 1000 for i in range(3)},
            **{f"p{i + 1}_exp": max(-p[i], 0) / 1000 for i in range(3)},
            **{f"u{i + 1}": u[i] for i in range(3)},
            **{f"i{i + 1}": abs(p[i]) / u[i] for i in range(3)},
            "short_failures": self.short_failures, "long_failures": self.long_failures,
            **{f"sags{i}": 0 for i in (1, 2, 3)}, **{f"swells{i}": 0 for i in (1, 2, 3)},
            "gas_ts": dsmr_stamp(self.gas_capture[0] or t, self.tz), "gas": self.gas_capture[1],
            "water_ts": dsmr_stamp(self.water_capture[0] or t, self.tz), "water": self.water_capture[1],
            "demand": self.quarter_wh * 3.6 / elapsed,
            "peak_ts": dsmr_stamp(self.peak[0] or month_start, self.tz), "peak": self.peak[1],
            "prev_month": dsmr_stamp(prev_month, self.tz),
            "prev_peak_ts": dsmr_stamp(prev_month + timedelta(days=9, hours=18, minutes=15), self.tz),
            "prev_peak": self.prev_peak,
        }


class TelegramGenerator:
    """Telegrams of ``profile`` ("5" or "5B") for successive times, counters increasing."""

    def __init__(self, profile: str = "5", tz: ZoneInfo | str = "Europe/Brussels", seed: int = 1):
        if profile not in LAYOUTS:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(LAYOUTS)}")
        self.profile = profile
        self.tz = ZoneInfo(tz) if isinstance(tz, str) else tz
        self.house = Household(self.tz, seed=seed)

    def telegram(self, t: datetime | None = None) -> bytes:
        """The telegram the meter sends at ``t`` (default: now, whole seconds as a meter shows them)."""
        t = (t or datetime.now(timezone.utc)).replace(microsecond=0)
        self.house.step(t, self.profile)
        values = self.house.values(t, self.profile)
        return frame([line.format_map(values) for line in LAYOUTS[self.profile]])
