"""The meter's clock: `YYMMDDhhmmssX` local time -> UTC, honouring the meter's summer/winter flag.

dsmr_parser reads these stamps in a hard-coded Europe/Amsterdam and uses the flag only to pick between
the two occurrences of the autumn hour. Here the zone is the site's (or `timezone` in the producer's
config) and the flag decides the UTC offset outright: `S` = that zone's summer offset, `W` = its winter
offset. That is what the flag means in DSMR, it gives the right instant in the repeated autumn hour,
and it stays right for meters that never switch to summer time (Swedish HAN meters send `W` all year).
A stamp without a flag (DSMR 2.2 gas) is read as plain local time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

EPOCH_FLOOR = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""Stamps before this are placeholders (an empty M-Bus channel reads `700101010000W`)."""


@lru_cache(maxsize=64)
def _offsets(tz: ZoneInfo, year: int) -> tuple[timedelta, timedelta]:
    """(winter, summer) UTC offsets of ``tz`` in ``year`` (min/max, so Irish negative DST works too)."""
    jan = datetime(year, 1, 15, 12, tzinfo=tz).utcoffset() or timedelta(0)
    jul = datetime(year, 7, 15, 12, tzinfo=tz).utcoffset() or timedelta(0)
    return min(jan, jul), max(jan, jul)


def meter_time(value: str, tz: ZoneInfo) -> datetime | None:
    """A DSMR timestamp (`170102192002W`) as an aware UTC datetime, or None when it is not a valid one."""
    if not isinstance(value, str) or len(value) not in (12, 13):
        return None
    try:
        naive = datetime.strptime(value[:12], "%y%m%d%H%M%S")
    except ValueError:
        return None
    if len(value) == 12:
        return naive.replace(tzinfo=tz).astimezone(timezone.utc)
    flag = value[12]
    if flag not in ("S", "W"):
        return None
    winter, summer = _offsets(tz, naive.year)
    offset = summer if flag == "S" else winter
    return (naive - offset).replace(tzinfo=timezone.utc)


def parser_for(tz: ZoneInfo) -> Callable[[str], datetime | None]:
    """A drop-in for ``dsmr_parser.value_types.timestamp`` that reads stamps in ``tz``."""

    def timestamp(value: str) -> datetime | None:
        return meter_time(value, tz)

    return timestamp


def to_ms(dt: datetime | None) -> int | None:
    """Epoch milliseconds of a parsed stamp, None for a missing or placeholder one."""
    if dt is None or dt < EPOCH_FLOOR:
        return None
    return int(dt.timestamp() * 1000)
