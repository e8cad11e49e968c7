"""Calendar buckets in local time: where each period's buckets start and end, as epoch ms UTC.

Everything is anchored on the 15-minute slot: every UTC offset in use today is a multiple of 15 minutes,
so local quarter hours are UTC quarter hours and a slot is always exactly 15 minutes of real time. Coarser
buckets are unions of slots whose edges are local calendar boundaries in ``site.timezone``:

- ``1h``: from one local ``HH:00`` to the next that exists. A spring-forward day has 23 of them; on an
  autumn-back day the repeated hour is two buckets, told apart by the offset in their ``label``
  (``2024-10-27T02:00+02:00`` and ``2024-10-27T02:00+01:00``).
- ``1d``: local midnight to local midnight (23, 24 or 25 hours); ``1w``: ISO weeks, Monday to Monday;
  ``1mo`` and ``1y``: from the first local midnight of the month or year.

A zone whose offset is not a multiple of 15 minutes on some day (historic local mean times) is refused with
a clear error rather than producing buckets that do not nest.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from bus.rollup import PERIODS, label_of

SLOT_MS = 900_000
PARENTS = ("1h", "1d", "1w", "1mo", "1y")
CHILD = {"1h": "15m", "1d": "1h", "1w": "1d", "1mo": "1d", "1y": "1mo"}
"""What each coarser period is the sum of (a week and a month both sum days; a year sums months)."""


class CalendarError(ValueError):
    """The time zone cannot be bucketed (an offset that is not a multiple of 15 minutes)."""


@dataclass(slots=True)
class Day:
    """One local date: its bounds and the starts of its hours, all epoch ms UTC."""

    date: date
    start: int
    end: int
    hours: list[int]
    parents: dict[str, int] = field(default_factory=dict)  # "1d"/"1w"/"1mo"/"1y" -> start


def _instant(tz: ZoneInfo, d: date, hour: int = 0, fold: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, hour, tzinfo=tz, fold=fold).timestamp() * 1000)


class Calendar:
    def __init__(self, tz: ZoneInfo):
        self.tz = tz
        self._days: dict[date, Day] = {}
        self._slot_parents: dict[int, tuple[int, int, int, int, int]] = {}

    # -- days ----------------------------------------------------------------------------------
    def local_date(self, ts_ms: int) -> date:
        return datetime.fromtimestamp(ts_ms / 1000, self.tz).date()

    def day(self, d: date) -> Day:
        got = self._days.get(d)
        if got is not None:
            return got
        start, end = _instant(self.tz, d), _instant(self.tz, d + timedelta(days=1))
        if start % SLOT_MS or end % SLOT_MS:
            raise CalendarError(f"time zone {self.tz.key}: the offset on {d} is not a multiple of 15 "
                                "minutes; wattbus cannot bucket that day")
        hours = []
        for h in range(24):
            for fold in (0, 1):
                t = _instant(self.tz, d, h, fold)
                local = datetime.fromtimestamp(t / 1000, self.tz)
                if local.hour == h and local.minute == 0 and local.date() == d and start <= t < end:
                    hours.append(t)  # exists (in a spring-forward gap it would come back as another hour)
        hours = sorted(set(hours) | {start})
        if len(self._days) > 800:
            self._days.clear()
            self._slot_parents.clear()
        got = self._days[d] = Day(d, start, end, hours)
        return got

    def day_of(self, ts_ms: int) -> Day:
        """The local day containing the instant (``start <= ts < end``)."""
        return self.day(self.local_date(ts_ms))

    def _period_start(self, day: Day, period: str) -> int:
        got = day.parents.get(period)
        if got is None:
            d = day.date
            if period == "1d":
                got = day.start
            elif period == "1w":
                got = self.day(d - timedelta(days=d.weekday())).start
            elif period == "1mo":
                got = self.day(d.replace(day=1)).start
            else:
                got = self.day(date(d.year, 1, 1)).start
            day.parents[period] = got
        return got

    # -- buckets -------------------------------------------------------------------------------
    def parents_of_slot(self, slot_start: int) -> tuple[int, int, int, int, int]:
        """Starts of the ``1h``, ``1d``, ``1w``, ``1mo`` and ``1y`` buckets a slot belongs to."""
        got = self._slot_parents.get(slot_start)
        if got is None:
            day = self.day_of(slot_start)
            hour = day.hours[bisect.bisect_right(day.hours, slot_start) - 1]
            got = (hour, day.start, self._period_start(day, "1w"), self._period_start(day, "1mo"),
                   self._period_start(day, "1y"))
            if len(self._slot_parents) > 20_000:
                self._slot_parents.clear()
            self._slot_parents[slot_start] = got
        return got

    def parent(self, period: str, child_start: int) -> tuple[str, int] | None:
        """(period, start) of the bucket one level up that sums ``child_start``; ``1y`` has none."""
        if period == "15m":
            return "1h", self.parents_of_slot(child_start)[0]
        day = self.day_of(child_start)
        if period == "1h":
            return "1d", day.start
        if period == "1mo":
            return "1y", self._period_start(day, "1y")
        return None

    def ancestors(self, period: str, start: int) -> list[tuple[str, int]]:
        """Every coarser bucket containing this one, finest first (a day is in a week, a month, a year)."""
        if period == "15m":
            h, d, w, mo, y = self.parents_of_slot(start)
            return [("1h", h), ("1d", d), ("1w", w), ("1mo", mo), ("1y", y)]
        day = self.day_of(start)
        out = []
        if period == "1h":
            out.append(("1d", day.start))
        if period in ("1h", "1d"):
            out += [("1w", self._period_start(day, "1w")), ("1mo", self._period_start(day, "1mo"))]
        if period in ("1h", "1d", "1mo"):
            out.append(("1y", self._period_start(day, "1y")))
        return out

    def children(self, period: str, start: int) -> list[int]:
        """Starts of the buckets one level down (``CHILD[period]``) that this bucket is the sum of."""
        end = self.end(period, start)
        if period == "1h":
            return list(range(start, end, SLOT_MS))
        day = self.day_of(start)
        if period == "1d":
            return list(day.hours)
        d = day.date
        if period == "1w":
            return [self.day(d + timedelta(days=i)).start for i in range(7)]
        if period == "1mo":
            out = []
            while True:
                s = self.day(d).start
                if s >= end:
                    return out
                out.append(s)
                d += timedelta(days=1)
        if period == "1y":
            return [self.day(date(d.year, m, 1)).start for m in range(1, 13)]
        raise ValueError(f"{period!r} has no children")

    def bucket_start(self, period: str, ts: int) -> int:
        """Start of the ``period`` bucket containing the instant ``ts`` (``start <= ts < end``)."""
        slot = ts // SLOT_MS * SLOT_MS
        if period == "15m":
            return slot
        h, d, w, mo, y = self.parents_of_slot(slot)
        return {"1h": h, "1d": d, "1w": w, "1mo": mo, "1y": y}[period]

    def end(self, period: str, start: int) -> int:
        if period == "15m":
            return start + SLOT_MS
        day = self.day_of(start)
        if period == "1h":
            i = bisect.bisect_right(day.hours, start)
            return day.hours[i] if i < len(day.hours) else day.end
        d = day.date
        if period == "1d":
            return day.end
        if period == "1w":
            return self.day(d + timedelta(days=7 - d.weekday())).start
        if period == "1mo":
            return self.day((d.replace(day=28) + timedelta(days=4)).replace(day=1)).start
        if period == "1y":
            return self.day(date(d.year + 1, 1, 1)).start
        raise ValueError(f"unknown period {period!r} (expected one of {', '.join(PERIODS)})")

    def label(self, period: str, start: int) -> str:
        return label_of(period, datetime.fromtimestamp(start / 1000, self.tz))

    def starts(self, period: str, lo: int, hi: int) -> list[int]:
        """Starts of the ``period`` buckets that begin in ``[lo, hi)`` (tests, exports, rebuilds)."""
        out: list[int] = []
        if period == "15m":
            t = -(-lo // SLOT_MS) * SLOT_MS
            return list(range(t, hi, SLOT_MS))
        d = self.local_date(lo) - timedelta(days=1)
        while True:
            day = self.day(d)
            if day.start >= hi:
                return out
            if period == "1h":
                out += [h for h in day.hours if lo <= h < hi]
            else:
                s = day.start if period == "1d" else self._period_start(day, period)
                if lo <= s < hi and (not out or out[-1] != s):
                    out.append(s)
            d += timedelta(days=1)


def utc(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc)
