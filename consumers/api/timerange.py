"""Query parameters people type: local dates and times in ``site.timezone``, epoch ms, steps, range limits.

Every bad value raises :class:`BadParameter` naming the parameter and what it expects; the app turns it into
a 400 problem document. Limits keep one request from reading a year of raw readings into memory.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from bus.rollup import PERIODS

MAX_MS = 32503680000000
"""The envelope's last valid instant (year 3000)."""
DAY_MS = 86_400_000
PERIOD_MS = {"15m": 900_000, "1h": 3_600_000, "1d": DAY_MS, "1w": 7 * DAY_MS, "1mo": 31 * DAY_MS,
             "1y": 366 * DAY_MS}
"""Upper bound of one bucket's length (for limits and defaults)."""
MAX_BUCKETS = 5000
"""At most this many buckets in one answer: 52 days of 15m, 208 days of 1h, 13 years of 1d."""
MAX_RAW_SPAN_MS = 7 * DAY_MS
"""Raw readings (no ``step``): at most a week per request (10,080 one-minute readings)."""
MAX_POINTS = 20_000
"""Downsampled readings: at most this many slots per request."""
DEFAULT_SPAN_MS = {p: PERIOD_MS[p] * n for p, n in
                   {"15m": 96, "1h": 48, "1d": 31, "1w": 53, "1mo": 24, "1y": 10}.items()}
"""Without ``from``: this much before ``to`` (two days of hours, a month of days...)."""

_STEP = re.compile(r"^(\d{1,9})(s|m|h|d)?$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, None: 1000}


class BadParameter(ValueError):
    """A query or path parameter that cannot be used; ``str()`` is the reason for the user."""

    def __init__(self, name: str, reason: str, status: int = 400):
        super().__init__(f"{name}: {reason}")
        self.name, self.status = name, status


def parse_instant(name: str, value: str, tz: ZoneInfo) -> int:
    """``2024-12-14`` (local midnight), ``2024-12-14T17:58[:00][+01:00]`` or epoch ms -> epoch ms UTC."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        if len(text) > 16:
            raise BadParameter(name, f"epoch milliseconds must be at most {MAX_MS} (year 3000); got {value!r}")
        ms = int(text)
        if ms > MAX_MS:
            raise BadParameter(name, f"epoch milliseconds must be at most {MAX_MS} (year 3000); got {value!r}")
        return ms
    if len(text) > 40:
        raise BadParameter(name, "too long to be a date or time")
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            dt = datetime(d.year, d.month, d.day, tzinfo=tz)
        else:
            dt = datetime.fromisoformat(text.replace(" ", "T", 1))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=tz)
        ms = int(dt.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise BadParameter(name, "expected a local date like 2024-12-14, a local time like 2024-12-14T17:58 "
                                 f"(site time zone {tz.key}) or epoch milliseconds; got {value!r}") from None
    if not 0 <= ms <= MAX_MS:
        raise BadParameter(name, f"must be between 1970 and 3000; got {value!r}")
    return ms


def parse_day(name: str, value: str | None, tz: ZoneInfo, now_ms: int) -> tuple[date, int, int]:
    """A local calendar day (default today) -> (day, start ms, end ms); 23 or 25 h long on DST days."""
    try:
        d = date.fromisoformat(value.strip()) if value else datetime.fromtimestamp(now_ms / 1000, tz).date()
    except ValueError:
        raise BadParameter(name, f"expected a local date like 2024-12-14; got {value!r}") from None
    if not 1970 <= d.year < 3000:
        raise BadParameter(name, f"must be between 1970 and 2999; got {value!r}")
    start = datetime(d.year, d.month, d.day, tzinfo=tz)
    nxt = d + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return d, int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def parse_step(value: str | None) -> int | None:
    """``30s``, ``5m``, ``1h``, ``1d`` or plain seconds -> milliseconds (None: raw readings)."""
    if value is None or value == "":
        return None
    m = _STEP.match(value.strip())
    if not m:
        raise BadParameter("step", f"expected a duration like 60s, 5m, 1h or 1d; got {value!r}")
    ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    if not 1000 <= ms <= 366 * DAY_MS:
        raise BadParameter("step", f"must be between 1s and 366d; got {value!r}")
    return ms


def resolve_range(start: str | None, end: str | None, tz: ZoneInfo, now_ms: int,
                  default_span_ms: int) -> tuple[int, int]:
    """``from``/``to`` -> (start ms, end ms), ``to`` exclusive; defaults: ``to`` = now, ``from`` = to - span."""
    end_ms = parse_instant("to", end, tz) if end else now_ms
    start_ms = parse_instant("from", start, tz) if start else max(0, end_ms - default_span_ms)
    if start_ms >= end_ms:
        raise BadParameter("from", f"must be before `to` (to is exclusive); got from={start!r}, to={end!r}")
    return start_ms, end_ms


def check_readings_span(start_ms: int, end_ms: int, step_ms: int | None) -> None:
    if step_ms is None:
        if end_ms - start_ms > MAX_RAW_SPAN_MS:
            raise BadParameter("to", "raw readings are served for at most 7 days per request; "
                                     "ask a shorter range or a `step` (e.g. step=15m)")
    elif (end_ms - start_ms) // step_ms > MAX_POINTS:
        raise BadParameter("step", f"the range holds more than {MAX_POINTS} steps of this size; "
                                   "ask a larger step or a shorter range")


def check_period(period: str) -> str:
    if period not in PERIODS:
        raise BadParameter("period", f"expected one of {', '.join(PERIODS)}; got {period!r}", status=404)
    return period


def check_buckets_span(period: str, start_ms: int, end_ms: int) -> None:
    # a month or year bucket has a variable length: count the shortest one so a 100-year range stays allowed
    shortest = {"1mo": 28 * DAY_MS, "1y": 365 * DAY_MS}.get(period, PERIOD_MS[period])
    if (end_ms - start_ms) // shortest > MAX_BUCKETS:
        raise BadParameter("from", f"a range of more than {MAX_BUCKETS} buckets of {period} per request; "
                                   "ask a shorter range or a longer period")


def local_iso(ms: int, tz: ZoneInfo) -> str:
    """Epoch ms -> local ISO time with its offset (``2024-12-14T17:58:00+01:00``)."""
    return datetime.fromtimestamp(ms / 1000, tz).isoformat()
