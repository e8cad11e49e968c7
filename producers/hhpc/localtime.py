"""Local wall-clock times of the dataset -> instants, with the two daylight-saving transitions made explicit.

The dataset writes local time; a reading carries epoch milliseconds UTC. Ordinary days convert with one cached
offset (a replay converts half a million times); the spring-forward gap and the repeated autumn hour are
decided here instead of shifting silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

from producers.hhpc.dataset import Row

class NonexistentLocalTime(ValueError):
    """The local time falls in a spring-forward gap: no instant has that wall-clock time."""


_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


_SAFE_DAYS: dict[tuple[ZoneInfo, int], datetime | None] = {}


def _day_base(tz: ZoneInfo, ordinal: int) -> datetime | None:
    """``_EPOCH + offset`` when the day keeps one UTC offset from midnight to midnight, else None.

    Cached per zone and day: a replay converts half a million times, almost all on ordinary days.
    """
    key = (tz, ordinal)
    try:
        return _SAFE_DAYS[key]
    except KeyError:
        pass
    start = datetime.fromordinal(ordinal)
    end = start + timedelta(days=1, microseconds=-1)
    offsets = {t.replace(tzinfo=tz, fold=f).utcoffset() for t in (start, end) for f in (0, 1)}
    base = _EPOCH + offsets.pop() if len(offsets) == 1 else None  # type: ignore[operator]
    if len(_SAFE_DAYS) > 100_000:
        _SAFE_DAYS.clear()
    _SAFE_DAYS[key] = base
    return base


def local_to_epoch_ms(local: datetime, tz: ZoneInfo) -> int:
    """Epoch milliseconds (UTC) of a naive local wall-clock time in ``tz``.

    * Fall-back hour (a wall time that happens twice): ``local.fold`` picks the pass, 0 = the first
      (summer time), 1 = the second; ``dataset.iter_rows`` sets fold=1 on a repeated hour, so the two passes
      map to distinct, increasing instants.
    * Spring-forward gap (a wall time that never happens): raises :class:`NonexistentLocalTime`.
      Guessing an instant would make the gap's rows collide with the following hour's; the caller
      skips such rows and counts them (:func:`iter_epochs` does).

    An aware datetime is converted with its own offset.
    """
    if local.tzinfo is not None:
        return (local - _EPOCH_UTC) // _MS
    base = _day_base(tz, local.toordinal())
    if base is not None:  # an ordinary day: one offset all day long
        return (local - base) // _MS
    before = local.replace(tzinfo=tz, fold=0).utcoffset()
    after = local.replace(tzinfo=tz, fold=1).utcoffset()
    if before == after:
        offset = before
    elif before < after:  # the clock jumps forward over this time
        raise NonexistentLocalTime(f"{local:%Y-%m-%d %H:%M:%S} does not exist in {tz.key}")
    else:
        offset = after if local.fold else before
    return (local.replace(fold=0) - offset - _EPOCH) // _MS  # type: ignore[operator]


def iter_epochs(
    rows: Iterable[Row], tz: ZoneInfo, *, on_gap: Callable[[Row], None] | None = None
) -> Iterator[tuple[int, Row]]:
    """Pair each row with its epoch ms; rows in a spring-forward gap go to ``on_gap`` and are skipped."""
    for row in rows:
        try:
            ts = local_to_epoch_ms(row.local, tz)
        except NonexistentLocalTime:
            if on_gap is not None:
                on_gap(row)
            continue
        yield ts, row


_DAY_S = 86_400
_ORDINAL_1970 = 719_163  # date(1970, 1, 1).toordinal()


def chunk_epochs_ms(seconds: np.ndarray, repeat: np.ndarray, tz: ZoneInfo) -> list[int | None]:
    """Epoch ms of naive local ``seconds`` (a chunk of :func:`dataset.iter_chunks`), None in a spring-forward
    gap. Ordinary days take one offset for the whole array; only the two transition days go row by row
    through :func:`local_to_epoch_ms` (``repeat`` marks the second pass of the fall-back hour)."""
    days = seconds // _DAY_S
    out = np.empty(len(seconds), np.int64)
    slow: list[int] = []
    for day in np.unique(days).tolist():
        sel = days == day
        base = _day_base(tz, day + _ORDINAL_1970)
        if base is None:
            slow += np.flatnonzero(sel).tolist()
        else:
            offset_s = int((base - _EPOCH).total_seconds())
            out[sel] = (seconds[sel] - offset_s) * 1000
    result: list[int | None] = out.tolist()
    for i in slow:
        local = datetime(1970, 1, 1) + timedelta(seconds=int(seconds[i]))
        try:
            result[i] = local_to_epoch_ms(local.replace(fold=int(repeat[i])), tz)
        except NonexistentLocalTime:
            result[i] = None
    return result
