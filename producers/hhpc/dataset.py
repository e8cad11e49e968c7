"""Reading the household-power-consumption (hhpc) text format: the format as data, and a fast tolerant parser.

The format is the one of the UCI "Individual household electric power consumption" data set: one row
per minute, ``;``-separated, a header line, ``dd/mm/yyyy`` dates and ``hh:mm:ss`` times in local wall
clock time, seven value columns (see :data:`COLUMNS`). Three dialects exist (:data:`DIALECTS`); they
differ only in how a missing value is written, so one tolerant reader handles them all.

:func:`iter_rows` streams a file (replay mode): a year parses in a couple of seconds and memory stays flat
whatever the file size. The same :class:`Scanner` feeds ``yeartable.load_year`` (live mode); local times
become instants in ``localtime``.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from os import PathLike
from typing import IO, NamedTuple

import numpy as np

# --------------------------------------------------------------------------------------------------
# The format, as data
# --------------------------------------------------------------------------------------------------


class Column(NamedTuple):
    """How one dataset column becomes a metric: ``metric value = dataset value * scale``."""

    metric: str
    scale: float


#: Dataset column -> (metric key, scale), in the file's usual order. The dataset gives power in kW and
#: reactive power in "kW" (kvar); the metrics table wants W and var.
COLUMNS: dict[str, Column] = {
    "Global_active_power": Column("power_w", 1000.0),
    "Global_reactive_power": Column("reactive_power_var", 1000.0),
    "Voltage": Column("voltage_v", 1.0),
    "Global_intensity": Column("current_a", 1.0),
    "Sub_metering_1": Column("sub1_energy_wh", 1.0),
    "Sub_metering_2": Column("sub2_energy_wh", 1.0),
    "Sub_metering_3": Column("sub3_energy_wh", 1.0),
}


class Derived(NamedTuple):
    """A metric computed from another one: ``metric = source / divisor``."""

    source: str
    divisor: float


#: Metrics the file does not carry but a row implies: a minute at ``power_w`` W uses power_w/60 Wh.
DERIVED: dict[str, Derived] = {
    "energy_wh": Derived("power_w", 60.0),
}

DATE_COLUMN = "Date"
TIME_COLUMN = "Time"
HEADER = ";".join([DATE_COLUMN, TIME_COLUMN, *COLUMNS])
SEPARATOR = ";"

#: Values keep three decimals after scaling (the file has 3 decimals of kW, i.e. whole W); rounding
#: removes float noise such as 0.092 * 1000 = 92.00000000000001.
DECIMALS = 3

METRIC_KEYS: tuple[str, ...] = tuple(c.metric for c in COLUMNS.values())


class Dialect(NamedTuple):
    """A variant of the format. Only the missing-value marker differs between them."""

    name: str
    missing: str
    example: str
    notes: str


DIALECTS: tuple[Dialect, ...] = (
    Dialect(
        "wattbus",
        "",
        "01/01/2024;00:00:00;;;;;;;",
        "written by producers.hhpc.generate; identical to the seed's 2024 file",
    ),
    Dialect(
        "uci",
        "?",
        "28/4/2007;00:21:00;?;?;?;?;?;?;",
        "the original UCI file (2006-2010): day and month not zero-padded, '?' marks a missing value "
        "(the last column of a missing row is empty instead)",
    ),
    Dialect(
        "seed2024",
        "",
        "14/12/2024;17:58:00;;;;;;;",
        "the mission seed's 2024 file: nothing between two separators marks a missing value",
    ),
)

#: A field holding one of these is a missing value, not a bad one.
MISSING_MARKERS: frozenset[str] = frozenset(d.missing for d in DIALECTS)

MINUTES_PER_DAY = 1440

# --------------------------------------------------------------------------------------------------
# Public record types
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One minute of the dataset.

    ``local`` is naive local wall-clock time as written in the file. ``fold=1`` marks a wall-clock time
    the file has already passed (the second pass through a fall-back hour); it changes nothing outside
    an ambiguous hour. ``metrics`` is None when the row's values are missing; a row with only some
    values missing carries the present ones.
    """

    line: int
    local: datetime
    metrics: dict[str, float] | None


class BadRow(NamedTuple):
    """A line that could not be read: its 1-based line number in the file and why."""

    line: int
    reason: str


OnBad = Callable[[BadRow], None]



# --------------------------------------------------------------------------------------------------
# The scanner shared by iter_rows and yeartable.load_year
# --------------------------------------------------------------------------------------------------
#
# Speed matters (a year is 527,040 rows) and a str plus a float object per field is what makes a
# Python reader slow. So lines are read in chunks of CHUNK_LINES and a regular chunk is parsed as
# bytes with numpy (:func:`_parse_bytes`): every field, the date's and time's parts included, is a
# token of digits that is summed positionally, with the format's structure checked token by token.
# A chunk that does not fit (a bad or blank line, an exponent, spaces) falls back to the line-by-line
# path, which reports each bad line and reads the rest with float().

CHUNK_LINES = 4096


class _Layout(NamedTuple):
    nfields: int
    date_at: int
    time_at: int
    value_at: tuple[int, ...]  # field positions of the COLUMNS present, in COLUMNS order
    names: tuple[str, ...]  # the COLUMNS names present, in COLUMNS order
    scales: np.ndarray  # their scales


def _layout(names: list[str]) -> _Layout:
    """Map a header to field positions, so a file with reordered or extra columns still reads."""
    where = {n.strip().lower(): i for i, n in enumerate(names)}
    if DATE_COLUMN.lower() not in where or TIME_COLUMN.lower() not in where:
        raise ValueError(f"header lacks {DATE_COLUMN!r} or {TIME_COLUMN!r}")
    present = tuple(n for n in COLUMNS if n.lower() in where)
    if not present:
        raise ValueError("header names none of the value columns")
    return _Layout(len(names), where[DATE_COLUMN.lower()], where[TIME_COLUMN.lower()],
                   tuple(where[n.lower()] for n in present), present,
                   np.array([COLUMNS[n].scale for n in present]))


_DEFAULT_LAYOUT = _layout(HEADER.split(SEPARATOR))


class _Chunk(NamedTuple):
    lines: np.ndarray  # int32: 1-based line numbers
    ymd: np.ndarray  # int32: year * 10000 + month * 100 + day
    sod: np.ndarray  # int32: second of the day
    values: np.ndarray  # float64 (rows, len(layout.names)): metric units, NaN = missing


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_DAYS_BEFORE_MONTH = np.array([0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334])


def _leap(year: np.ndarray) -> np.ndarray:
    return (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))


def _valid_dates(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    mm = np.clip(m, 0, 12)
    return ((y >= 1) & (y <= 9999) & (m >= 1) & (m <= 12) & (d >= 1)
            & (d <= _DAYS_IN_MONTH[mm] + (_leap(y) & (m == 2))))


def day_index(ymd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(year, day of the year - 1) of valid yyyymmdd integers."""
    y, md = np.divmod(ymd, 10000)
    m, d = np.divmod(md, 100)
    return y, _DAYS_BEFORE_MONTH[m] + (_leap(y) & (m > 2)) + d - 1


def _parse_ymd(text: str) -> int:
    d, m, y = (int(p) for p in text.split("/"))  # ValueError unless three integers
    datetime(y, m, d)  # ValueError unless a real date
    return y * 10000 + m * 100 + d


def _parse_sod(text: str) -> int:
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 2:
        parts.append(0)
    if len(parts) != 3:
        raise ValueError(text)
    h, m, s = parts
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60):
        raise ValueError(text)
    return h * 3600 + m * 60 + s


# Byte classes for _parse_bytes.
_NL, _SEMI, _SLASH, _COLON, _DOT, _MINUS, _QUERY = b"\n;/:.-?"
_OK_BYTE = np.zeros(256, bool)
_OK_BYTE[list(b"0123456789\n;/:.-?")] = True
_POW10 = 10.0 ** np.arange(23)
_MAX_DIGITS = 15  # a double holds 15 decimal digits exactly


def _parse_bytes(data: bytes, n: int, layout: _Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Parse ``n`` well-formed lines at once; None if anything is irregular.

    Returns (yyyymmdd, second of the day, values in the file's units with NaN for missing). Each value
    is the same double float() would give for its text.
    """
    buf = np.frombuffer(data, np.uint8)
    if not _OK_BYTE[buf].all():
        return None
    is_sep = (buf == _SEMI) | (buf == _NL) | (buf == _SLASH) | (buf == _COLON)
    ends = np.flatnonzero(is_sep)
    # Structure: each line is its fields separated by ';', the date's parts by '/', the time's by ':'.
    nf, date_at, time_at = layout.nfields, layout.date_at, layout.time_at
    pattern = bytearray()
    token_of_field = []
    for i in range(nf):
        token_of_field.append(len(pattern))
        parts = 3 if i in (date_at, time_at) else 1
        inner = _SLASH if i == date_at else _COLON
        pattern += bytes([inner]) * (parts - 1) + bytes([_NL if i == nf - 1 else _SEMI])
    width = len(pattern)
    if len(ends) != n * width or not np.array_equal(buf[ends], np.tile(np.frombuffer(pattern, np.uint8), n)):
        return None
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    length = ends - starts
    # Digits summed by position: a digit's weight is 10 ** (digits after it in its token).
    is_digit = (buf - 48) < 10  # uint8 arithmetic wraps below '0'
    digits_through = np.cumsum(is_digit, dtype=np.int32)
    token = np.cumsum(is_sep, dtype=np.int32) - is_sep  # token index of each byte
    at = np.flatnonzero(is_digit)
    tok = token[at]
    after = digits_through[ends][tok] - digits_through[at]
    ndigits = digits_through[ends] - digits_through[starts] + is_digit[starts]
    if ndigits.max(initial=0) > _MAX_DIGITS:
        return None
    mantissa = np.bincount(tok, weights=(buf[at] - 48) * _POW10[after], minlength=len(ends))
    dots = np.flatnonzero(buf == _DOT)
    decimals = np.zeros(len(ends), np.int64)
    dot_tok = token[dots]
    if len(dots) and (np.bincount(dot_tok).max() > 1):
        return None
    decimals[dot_tok] = digits_through[ends][dot_tok] - digits_through[dots]
    minus = np.flatnonzero(buf == _MINUS)
    if len(minus) and not np.array_equal(minus, starts[token[minus]]):
        return None  # a minus sign anywhere but first
    sign = np.ones(len(ends))
    sign[token[minus]] = -1.0
    query = np.flatnonzero(buf == _QUERY)
    if len(query) and not (length[token[query]] == 1).all():
        return None
    missing = length == 0
    missing[token[query]] = True
    if ((ndigits == 0) & ~missing).any():
        return None  # "-", "." or "-." alone
    grid = lambda a: a.reshape(n, width)  # noqa: E731
    mant, dec, sgn, miss = grid(mantissa), grid(decimals), grid(sign), grid(missing)
    d0, t0 = token_of_field[date_at], token_of_field[time_at]
    when = np.r_[d0:d0 + 3, t0:t0 + 3]
    if miss[:, when].any() or dec[:, when].any() or (sgn[:, when] < 0).any() or ((
            grid(length)[:, when] > 9).any()):
        return None
    d, m, y = (mant[:, d0 + k].astype(np.int64) for k in range(3))
    hh, mi, ss = (mant[:, t0 + k].astype(np.int64) for k in range(3))
    if not (_valid_dates(y, m, d).all() and (hh < 24).all() and (mi < 60).all() and (ss < 60).all()):
        return None
    cols = [token_of_field[i] for i in layout.value_at]
    # An exact integer mantissa and one correctly rounded division: the same double as float(text).
    values = sgn[:, cols] * mant[:, cols] / _POW10[dec[:, cols]]
    values[miss[:, cols]] = np.nan
    return ((y * 10000 + m * 100 + d).astype(np.int32), (hh * 3600 + mi * 60 + ss).astype(np.int32),
            values)


def _to_metric(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Dataset units to metric units; rounding removes float noise (0.092 * 1000 = 92.00000000000001)."""
    return np.round(values * scales, DECIMALS)


@contextmanager
def open_text(source: str | PathLike[str] | IO) -> Iterator[IO[str]]:
    if isinstance(source, (str, PathLike)):
        # errors="replace": a corrupt byte makes one bad row, not an exception that ends the read.
        with open(source, encoding="utf-8", errors="replace") as f:
            yield f
    elif isinstance(source, (io.RawIOBase, io.BufferedIOBase)):
        wrapper = io.TextIOWrapper(source, encoding="utf-8", errors="replace")
        try:
            yield wrapper
        finally:
            wrapper.detach()
    else:
        yield source


class Scanner:
    """Turns a dataset file into chunks of parsed rows, reporting bad lines through ``on_bad``."""

    def __init__(self, f: IO[str], on_bad: OnBad | None) -> None:
        self.f = f
        self.on_bad = on_bad
        self.layout = _DEFAULT_LAYOUT
        self.lineno = 1  # line number of the next line to read
        self.pending: list[str] = []
        self._ymd: dict[str, int] = {}
        self._sod: dict[str, int] = {}
        self._header()

    def _bad(self, line: int, reason: str) -> None:
        if self.on_bad is not None:
            self.on_bad(BadRow(line, reason))

    def _header(self) -> None:
        for line in self.f:
            text = line.lstrip("\ufeff").strip()
            if not text:
                self.lineno += 1
                continue
            if DATE_COLUMN.lower() in (name.strip().lower() for name in text.split(SEPARATOR)):
                try:
                    self.layout = _layout(text.split(SEPARATOR))
                except ValueError as exc:
                    self._bad(self.lineno, f"bad header: {exc}; assuming {HEADER}")
                self.lineno += 1
            else:
                self.pending = [line]  # headerless file: that was data
            return

    def __iter__(self) -> Iterator[_Chunk]:
        while True:
            block = self.pending + list(itertools.islice(self.f, CHUNK_LINES - len(self.pending)))
            self.pending = []
            if not block:
                return
            first = self.lineno
            self.lineno += len(block)
            chunk = self._fast(block, first) or self._slow(block, first)
            if len(chunk.lines):
                yield chunk

    def _fast(self, block: list[str], first: int) -> _Chunk | None:
        text = "".join(block)
        if not text.endswith("\n"):
            text += "\n"
        try:
            data = text.encode("ascii")
        except UnicodeEncodeError:
            return None
        parsed = _parse_bytes(data, len(block), self.layout)
        if parsed is None:
            return None
        ymd, sod, values = parsed
        return _Chunk(np.arange(first, first + len(block), dtype=np.int32), ymd, sod,
                      _to_metric(values, self.layout.scales))

    def _slow(self, block: list[str], first: int) -> _Chunk:
        """Line by line: report each bad line, keep the others."""
        nf, date_at, time_at, value_at, names, scales = self.layout
        lines: list[int] = []
        ymds: list[int] = []
        sods: list[int] = []
        rows: list[list[float]] = []
        for lineno, line in enumerate(block, first):
            fields = line.rstrip("\r\n").split(SEPARATOR)
            if len(fields) != nf:
                if len(fields) == 1 and not fields[0].strip():
                    continue  # a blank line carries no minute
                self._bad(lineno, f"expected {nf} fields, found {len(fields)}")
                continue
            text = fields[date_at].strip()
            ymd = self._ymd.get(text)
            if ymd is None:
                try:
                    ymd = self._ymd[text] = _parse_ymd(text)
                except ValueError:
                    self._bad(lineno, f"bad date {text!r} (expected dd/mm/yyyy)")
                    continue
            text = fields[time_at].strip()
            sod = self._sod.get(text)
            if sod is None:
                try:
                    sod = self._sod[text] = _parse_sod(text)
                except ValueError:
                    self._bad(lineno, f"bad time {text!r} (expected hh:mm:ss)")
                    continue
            row: list[float] = []
            for name, at in zip(names, value_at):
                text = fields[at].strip()
                if text in MISSING_MARKERS:
                    row.append(math.nan)
                    continue
                try:
                    v = float(text)
                except ValueError:
                    v = math.nan
                if math.isnan(v) or math.isinf(v):
                    self._bad(lineno, f"bad {name} {text!r}")
                    break
                row.append(v)
            else:
                lines.append(lineno)
                ymds.append(ymd)
                sods.append(sod)
                rows.append(row)
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(value_at))
        return _Chunk(np.array(lines, np.int32), np.array(ymds, np.int32), np.array(sods, np.int32),
                      _to_metric(values, scales))


# --------------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------------


def _local_seconds(chunk: _Chunk) -> np.ndarray:
    """Naive local wall-clock times as seconds since 1970-01-01 00:00 (int64)."""
    y, md = np.divmod(chunk.ymd.astype(np.int64), 10000)
    m, d = np.divmod(md, 100)
    months = (y - 1970) * 12 + (m - 1)
    days = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + (d - 1)
    return days * 86400 + chunk.sod


class LocalChunk(NamedTuple):
    """Parsed rows of one chunk with their naive local times, for callers that work a chunk at a time."""

    lines: list[int]
    seconds: np.ndarray
    """Naive local wall-clock seconds since 1970-01-01 00:00 (int64)."""
    repeat: np.ndarray
    """True where the wall time is not after an earlier row's: the second pass of a fall-back hour."""
    keys: tuple[str, ...]
    values: list[list[float]]
    """Metric values per row, derived columns included, NaN where missing."""
    nans: list[int]
    """Missing values per row (0: all present; len(keys) - derived: none present)."""
    ncols: int


def iter_chunks(path_or_file: str | PathLike[str] | IO, *, on_bad: OnBad | None = None) -> Iterator[LocalChunk]:
    """Stream a dataset file chunk by chunk (see :func:`iter_rows`, which walks these row by row)."""
    with open_text(path_or_file) as f:
        scanner = Scanner(f, on_bad)
        keys = tuple(COLUMNS[n].metric for n in scanner.layout.names)
        derived = [(key, keys.index(src), div) for key, (src, div) in DERIVED.items() if src in keys]
        all_keys = keys + tuple(key for key, _, _ in derived)
        high = np.iinfo(np.int64).min  # latest wall-clock time seen: anything not after it is a repeat
        for chunk in scanner:
            seconds = _local_seconds(chunk)
            running = np.maximum.accumulate(np.concatenate([[high], seconds]))
            high = int(running[-1])
            values = chunk.values
            if derived:
                values = np.column_stack([values] + [values[:, src] / div for _, src, div in derived])
            yield LocalChunk(chunk.lines.tolist(), seconds, seconds <= running[:-1], all_keys, values.tolist(),
                             np.isnan(chunk.values).sum(axis=1).tolist(), len(keys))


def row_metrics(keys: tuple[str, ...], vals: list[float], nan_count: int, ncols: int) -> dict[str, float] | None:
    """One row's metrics: all of them, None when every column is missing, else the ones present."""
    if nan_count == 0:
        return dict(zip(keys, vals))
    if nan_count == ncols:
        return None
    return {k: v for k, v in zip(keys, vals) if v == v}


def iter_rows(path_or_file: str | PathLike[str] | IO, *, on_bad: OnBad | None = None) -> Iterator[Row]:
    """Stream the rows of a dataset file, in file order.

    A bad line (wrong field count, non-numeric, NaN or infinite value, bad date or time) is reported
    through ``on_bad`` with its line number and skipped; reading goes on. Memory stays at one chunk
    of lines whatever the file size.
    """
    for c in iter_chunks(path_or_file, on_bad=on_bad):
        local = c.seconds.astype("datetime64[s]").tolist()
        for i in np.flatnonzero(c.repeat).tolist():
            local[i] = local[i].replace(fold=1)
        for lineno, when, vals, nan_count in zip(c.lines, local, c.values, c.nans):
            yield Row(lineno, when, row_metrics(c.keys, vals, nan_count, c.ncols))
