"""The in-memory dataset year for live mode: "the reading for now" is one index operation.

:func:`load_year` reads one year of a dataset file into numpy arrays looked up by day-of-year and minute of
the day (about 17 MB), through the same :class:`~producers.hhpc.dataset.Scanner` as streaming.
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
    ``(doy - 1) * 1440 + minute``; ``lines[slot]`` is the file line it came from, 0 when the file has
    no row for that minute. About 17 MB for a year.
    """

    year: int
    values: np.ndarray
    lines: np.ndarray
    stats: LoadStats = field(default_factory=LoadStats)

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
        if not (1 <= doy <= self.days and 0 <= minute < MINUTES_PER_DAY):
            raise IndexError(f"day {doy} minute {minute} outside {self.year}")
        slot = (doy - 1) * MINUTES_PER_DAY + minute
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
        month, day = local.month, local.day
        if month == 2 and day == 29 and not isleap(self.year):
            day = 28
        doy = date(self.year, month, day).toordinal() - date(self.year, 1, 1).toordinal() + 1
        return self.get(doy, local.hour * 60 + local.minute)


def load_year(
    path: str | PathLike[str] | IO, year: int | None = None, *, on_bad: OnBad | None = None
) -> YearTable:
    """Read one year of a dataset file into a :class:`YearTable`.

    ``year=None`` takes the year with the most rows (the UCI file spans 2006-2010; its best-covered
    year wins). Rows are written straight into a table per year met, so a one-year file costs one
    table (~17 MB) and nothing more; a multi-year file costs a table per year until the best one is
    chosen, unless ``year`` says which one to keep.
    """
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
            slots = doy0 * MINUTES_PER_DAY + chunk.sod // 60
            kinds, counts = np.unique(years, return_counts=True)
            for y, count in zip(kinds.tolist(), counts.tolist()):
                seen[y] = seen.get(y, 0) + count
                if year is not None and y != year:
                    continue
                table = tables.get(y)
                if table is None:
                    size = (366 if isleap(y) else 365) * MINUTES_PER_DAY
                    table = tables[y] = YearTable(y, np.full((size, ncols), np.nan, np.float32),
                                                  np.zeros(size, np.int32), LoadStats())
                mine = np.flatnonzero(years == y)
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
        size = (366 if isleap(year) else 365) * MINUTES_PER_DAY
        table = YearTable(year, np.full((size, ncols), np.nan, np.float32), np.zeros(size, np.int32))
    present = table.lines != 0
    stats.rows = int(np.count_nonzero(present))
    stats.duplicates = table.stats.duplicates
    stats.missing = int(np.count_nonzero(np.isnan(table.values).all(axis=1) & present))
    table.stats = stats
    return table
