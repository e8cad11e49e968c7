"""The dataset year (or some days of it) in memory for live mode: "the reading for now" is one index.

:func:`load_year` reads one year of a dataset file into numpy arrays looked up by day-of-year and minute of
the day, through the same :class:`~producers.hhpc.dataset.Scanner` as streaming: about 17 MB for a year,
46 kB a day with ``days``, which is what live mode keeps (it reads the next day when the date changes).
"""

from __future__ import annotations

from calendar import isleap
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from os import PathLike
from typing import IO

import numpy as np

from producers.hhpc.dataset import (
    COLUMNS,
    DECIMALS,
    DERIVED,
    METRIC_KEYS,
    MINUTES_PER_DAY,
    BadRow,
    OnBad,
    Row,
    Scanner,
    day_index,
    open_text,
)

@dataclass(slots=True)
class LoadStats:
    """What :func:`load_year` found, for the producer's log and health counters."""

    rows: int = 0  # rows of the chosen year kept in the table
    missing: int = 0  # of those, rows with no values
    bad: int = 0  # unreadable lines (reported through on_bad)
    duplicates: int = 0  # rows for a minute already seen (e.g. a repeated fall-back hour); last one wins
    other_years: int = 0  # rows outside the chosen year, ignored



@dataclass(slots=True)
class YearTable:
    """One dataset year indexed by (day-of-year, minute-of-day) in local time.

    ``values[slot, k]`` is metric ``METRIC_KEYS[k]`` (float32, NaN = missing) for slot
    ``(doy - first_day) * 1440 + minute``; ``lines[slot]`` is the file line it came from, 0 when the file
    has no row for that minute. About 17 MB for a year; a table of some days holds only those
    (``first_day`` .. ``last_day``).
    """

    year: int
    values: np.ndarray
    lines: np.ndarray
    stats: LoadStats = field(default_factory=LoadStats)
    first_day: int = 1

    @property
    def last_day(self) -> int:
        return self.first_day + len(self.lines) // MINUTES_PER_DAY - 1

    @property
    def days(self) -> int:
        return 366 if isleap(self.year) else 365

    def __len__(self) -> int:
        return self.stats.rows

    def get(self, doy: int, minute: int) -> Row | None:
        """The row for that day of the dataset year (1-based) and minute of the day (0-1439).

        None when the file has no row for that minute; ``Row.metrics`` is None when it has one whose
        values are missing.
        """
        if not (self.first_day <= doy <= self.last_day and 0 <= minute < MINUTES_PER_DAY):
            raise IndexError(f"day {doy} minute {minute} outside the table ({self.year}, days "
                             f"{self.first_day}-{self.last_day})")
        slot = (doy - self.first_day) * MINUTES_PER_DAY + minute
        line = int(self.lines[slot])
        if line == 0:
            return None
        local = datetime(self.year, 1, 1) + timedelta(days=doy - 1, minutes=minute)
        m = {k: round(float(v), DECIMALS) for k, v in zip(METRIC_KEYS, self.values[slot]) if v == v}
        if not m:
            return Row(line, local, None)
        for key, (source, divisor) in DERIVED.items():
            if source in m:
                m[key] = m[source] / divisor
        return Row(line, local, m)

    def for_local(self, local: datetime) -> Row | None:
        """The dataset's row for the same calendar date and minute as ``local`` (any year).

        Matching month and day rather than the raw day-of-year keeps the seasons and the calendar
        aligned (1 March reads 1 March in leap and common years alike). Consequences: a common
        current year never plays the dataset's 29 February; a leap current year reads 28 February
        again on 29 February when the dataset year has no such day. A current-year minute that
        happens twice (fall-back) reads the same row twice; one that never happens (spring-forward)
        is never asked for.
        """
        return self.get(dataset_day(self.year, local), local.hour * 60 + local.minute)

    def holds(self, local: datetime) -> bool:
        return self.first_day <= dataset_day(self.year, local) <= self.last_day


def dataset_day(year: int, local: datetime) -> int:
    """The day of dataset ``year`` (1-based) that plays on ``local``'s calendar date (see ``for_local``)."""
    month, day = local.month, local.day
    if month == 2 and day == 29 and not isleap(year):
        day = 28
    return date(year, month, day).toordinal() - date(year, 1, 1).toordinal() + 1


def load_year(
    path: str | PathLike[str] | IO, year: int | None = None, *, on_bad: OnBad | None = None,
    days: tuple[int, int] | None = None,
) -> YearTable:
    """Read one year of a dataset file into a :class:`YearTable`.

    ``year=None`` takes the year with the most rows (the UCI file spans 2006-2010; its best-covered
    year wins). Rows are written straight into a table per year met, so a one-year file costs one
    table (~17 MB) and nothing more; a multi-year file costs a table per year until the best one is
    chosen, unless ``year`` says which one to keep. ``days`` (first, last day of the year, 1-based) keeps
    only those days: the whole file is still read (to choose the year and count bad lines), the table is
    46 kB a day. Stats other than ``bad`` and ``other_years`` count the kept days.
    """
    first = days[0] if days else 1
    stats = LoadStats()

    def count_bad(b: BadRow) -> None:
        stats.bad += 1
        if on_bad is not None:
            on_bad(b)

    tables: dict[int, YearTable] = {}
    seen: dict[int, int] = {}  # rows read per year
    ncols = len(COLUMNS)
    with open_text(path) as f:
        scanner = Scanner(f, count_bad)
        order = [list(COLUMNS).index(n) for n in scanner.layout.names]
        for chunk in scanner:
            years, doy0 = day_index(chunk.ymd)
            slots = (doy0 - (first - 1)) * MINUTES_PER_DAY + chunk.sod // 60
            kinds, counts = np.unique(years, return_counts=True)
            for y, count in zip(kinds.tolist(), counts.tolist()):
                seen[y] = seen.get(y, 0) + count
                if year is not None and y != year:
                    continue
                table = tables.get(y)
                if table is None:
                    table = tables[y] = _empty(y, first, days, ncols)
                mine = np.flatnonzero(years == y)
                if days:
                    mine = mine[(doy0[mine] >= days[0] - 1) & (doy0[mine] <= days[1] - 1)]
                # The last row for a minute wins: unique over the reversed order finds last occurrences.
                where, first_rev = np.unique(slots[mine][::-1], return_index=True)
                last = mine[len(mine) - 1 - first_rev]
                table.stats.duplicates += int(len(mine) - len(last) + np.count_nonzero(table.lines[where]))
                table.lines[where] = chunk.lines[last]
                block = np.full((len(last), ncols), np.nan, np.float32)
                block[:, order] = chunk.values[last]
                table.values[where] = block
    if year is None:
        if not seen:
            raise ValueError(f"{path}: no readable rows")
        year = max(seen, key=lambda y: (seen[y], -y))
    stats.other_years = sum(seen.values()) - seen.get(year, 0)
    table = tables.pop(year, None)
    tables.clear()
    if table is None:
        table = _empty(year, first, days, ncols)
    present = table.lines != 0
    stats.rows = int(np.count_nonzero(present))
    stats.duplicates = table.stats.duplicates
    stats.missing = int(np.count_nonzero(np.isnan(table.values).all(axis=1) & present))
    table.stats = stats
    return table


def _empty(year: int, first: int, days: tuple[int, int] | None, ncols: int) -> YearTable:
    last = min(days[1], 366 if isleap(year) else 365) if days else (366 if isleap(year) else 365)
    size = max(0, last - first + 1) * MINUTES_PER_DAY
    return YearTable(year, np.full((size, ncols), np.nan, np.float32), np.zeros(size, np.int32), LoadStats(),
                     first)
