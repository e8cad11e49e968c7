"""Prices (DESIGN.md "Prices"): the ``[tariff]`` table and the price of energy at an instant.

In ``bus/`` because more than one process reads prices: the aggregate consumer turns energy into cost and
revenue, and the relay consumer switches on cheap hours. Both build a :class:`Tariff` from the config and
ask :meth:`Tariff.import_price` / :meth:`Tariff.export_price` for an instant.

An import or export price is one of, or a combination of (the first that applies wins):

1. **dynamic**: a day-ahead price list per 15 minutes or per hour, from a CSV file (``dynamic_csv``) and/or
   an MQTT topic (``dynamic_topic``), scaled by ``dynamic_factor`` and raised by ``dynamic_markup`` (the
   supplier's formula, e.g. 1.0 x Belpex + 0.02);
2. **time-of-use windows**: by weekday and local time, each with its price;
3. **register prices** ``t1`` / ``t2``: the register the meter counts on (DSMR ``tariff``: 1 or 2), or, for
   energy that no register counted (a load, the home's consumption), the register that ``t2_windows`` gives
   by local time, else register 1;
4. the flat ``price``.

Windows start and end on quarter hours: costs are computed per 15-minute slot, so a price must not change
inside one. Besides energy prices: a fixed charge per day and a capacity charge per month on the month's
highest 15-minute average import (Belgium's "capaciteitstarief"), with a minimum.
"""

from __future__ import annotations

import bisect
import csv
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec
import orjson

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
QUARTER_MIN = 15
MAX_ENTRY_MS = 3_600_000
"""A dynamic price lasts until the next one starts, but never longer than an hour (a missing day stays
unpriced instead of inheriting yesterday's last price)."""


class TariffError(ValueError):
    """A price list that cannot be read; the message says where and why."""


def parse_hhmm(text: str, *, allow_24: bool = False) -> int:
    """'07:30' -> minutes after midnight (450); '24:00' only where ``allow_24``."""
    try:
        hh, mm = text.split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day HH:MM") from None
    if not (0 <= m < 60 and (0 <= h < 24 or (allow_24 and h == 24 and m == 0))):
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00..{'24:00' if allow_24 else '23:59'})")
    return h * 60 + m


def parse_days(spec: str | list[str]) -> frozenset[int]:
    """'mon-fri', 'sat,sun', 'all', ['mon', 'wed'] -> weekday numbers (Monday = 0)."""
    parts = spec if isinstance(spec, list) else [p for p in spec.replace(" ", "").split(",") if p]
    out: set[int] = set()
    for part in parts:
        part = part.strip().lower()
        if part in ("all", "*", "daily"):
            out.update(range(7))
        elif part in ("weekdays", "workdays"):
            out.update(range(5))
        elif part in ("weekend", "weekends"):
            out.update((5, 6))
        elif "-" in part:
            a, b = part.split("-", 1)
            if a not in DAYS or b not in DAYS:
                raise ValueError(f"{part!r}: expected a day range like 'mon-fri'")
            i, j = DAYS.index(a), DAYS.index(b)
            out.update(DAYS.index(d) % 7 for d in (DAYS * 2)[i:(j if j >= i else j + 7) + 1])
        elif part in DAYS:
            out.add(DAYS.index(part))
        else:
            raise ValueError(f"{part!r}: expected mon..sun, a range 'mon-fri', 'weekdays', 'weekend' or "
                             "'all'")
    if not out:
        raise ValueError("no days given")
    return frozenset(out)


class Window(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, dict=True):
    """A time-of-use window: on ``days``, from ``from`` to ``to`` local time (``to`` < ``from``: the hours
    outside ``to``..``from`` on those days)."""

    days: str | list[str] = "all"
    from_: str = msgspec.field(name="from", default="00:00")
    to: str = "24:00"
    price: float | None = None
    """Price in this window (currency per kWh). None in ``t2_windows``, which only name register 2's hours."""

    def __post_init__(self) -> None:
        try:
            self._days = parse_days(self.days)
        except ValueError as exc:
            raise ValueError(f"`days`: {exc}") from None
        try:
            self._from = parse_hhmm(self.from_)
        except ValueError as exc:
            raise ValueError(f"`from`: {exc}") from None
        try:
            self._to = parse_hhmm(self.to, allow_24=True)
        except ValueError as exc:
            raise ValueError(f"`to`: {exc}") from None
        for key, minute in (("from", self._from), ("to", self._to)):
            if minute % QUARTER_MIN:
                raise ValueError(f"`{key}`: {minute // 60:02d}:{minute % 60:02d} is not on a quarter hour; "
                                 "costs are computed per 15 minutes, so windows start and end on "
                                 ":00/:15/:30/:45")
        if self._from == self._to:
            raise ValueError("`to`: the window is empty (from == to); use from = \"00:00\", to = \"24:00\"")
        if self.price is not None and not (-10 <= self.price <= 100):
            raise ValueError("`price`: expected a price per kWh between -10 and 100")

    def matches(self, weekday: int, minute: int) -> bool:
        """Local weekday (Monday = 0) and minute of the day. ``to`` before ``from`` wraps midnight on the same
        days: "mon-fri 22:00-07:00" is, on Monday to Friday, before 07:00 and from 22:00."""
        if weekday not in self._days:
            return False
        if self._from < self._to:
            return self._from <= minute < self._to
        return minute >= self._from or minute < self._to


class PriceConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An import or export price (currency per kWh); see the module docstring for how the kinds combine."""

    price: float | None = None
    t1: float | None = None
    t2: float | None = None
    t2_windows: list[Window] = msgspec.field(default_factory=list)
    windows: list[Window] = msgspec.field(default_factory=list)
    dynamic_csv: str | None = None
    dynamic_topic: str | None = None
    dynamic_unit: Literal["kWh", "MWh"] = "kWh"
    dynamic_factor: float = 1.0
    dynamic_markup: float = 0.0

    def __post_init__(self) -> None:
        for key in ("price", "t1", "t2"):
            value = getattr(self, key)
            if value is not None and not (-10 <= value <= 100):
                raise ValueError(f"`{key}`: expected a price per kWh between -10 and 100 (got {value})")
        for i, w in enumerate(self.windows):
            if w.price is None:
                raise ValueError(f"`windows`: window {i + 1} has no `price`")
        if (self.t1 is None) != (self.t2 is None):
            raise ValueError("`t2`: give both register prices t1 and t2, or neither")
        if self.dynamic_topic is not None and any(c in self.dynamic_topic for c in "#+"):
            raise ValueError("`dynamic_topic`: a topic, not a filter (no # or +)")

    @property
    def configured(self) -> bool:
        return (self.price is not None or self.t1 is not None or bool(self.windows)
                or self.dynamic_csv is not None or self.dynamic_topic is not None)


class TariffConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[tariff]``: what energy costs, what it earns, and the fixed parts of a bill."""

    currency: str = "EUR"
    import_: PriceConfig = msgspec.field(name="import", default_factory=PriceConfig)
    export: PriceConfig = msgspec.field(default_factory=PriceConfig)
    fixed_per_day: float = 0.0
    """Standing charge per local day, added to each day (and so to weeks, months, years) of the site."""
    capacity_per_kw: float = 0.0
    """Capacity charge per kW per month on the month's highest 15-minute average import (the peak)."""
    capacity_min_kw: float = 0.0
    """The peak charged is at least this (Flanders: 2.5 kW)."""

    def __post_init__(self) -> None:
        if not (1 <= len(self.currency) <= 8 and self.currency.isalpha()):
            raise ValueError("`currency`: expected a currency code such as \"EUR\"")
        for key in ("fixed_per_day", "capacity_per_kw", "capacity_min_kw"):
            if not (0 <= getattr(self, key) <= 1e6):
                raise ValueError(f"`{key}`: expected a number >= 0")


class PriceList:
    """Dynamic prices: sorted, non-overlapping ``[start, end)`` intervals in epoch ms, thread-safe to update.

    Each entry lasts until the next entry starts, at most an hour, so hourly and quarter-hourly lists both
    work without saying which they are; the last entry lasts as long as the one before it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._prices: list[float] = []

    def __len__(self) -> int:
        return len(self._starts)

    def at(self, ts_ms: int) -> float | None:
        starts, ends, prices = self._starts, self._ends, self._prices  # one consistent snapshot
        i = bisect.bisect_right(starts, ts_ms) - 1
        if i >= 0 and ts_ms < ends[i]:
            return prices[i]
        return None

    def merge(self, entries: list[tuple[int, float]]) -> tuple[int, int] | None:
        """Add ``(start_ms, price)`` entries; newer prices replace older ones where they overlap.

        Returns the span ``(first start, last end)`` that changed, or None for an empty list.
        """
        if not entries:
            return None
        entries = sorted(dict(entries).items())
        new: list[tuple[int, int, float]] = []
        for i, (start, price) in enumerate(entries):
            if i + 1 < len(entries):
                end = min(entries[i + 1][0], start + MAX_ENTRY_MS)
            elif i > 0:
                end = start + (new[-1][1] - new[-1][0])
            else:
                end = start + MAX_ENTRY_MS
            new.append((start, end, price))
        lo, hi = new[0][0], new[-1][1]
        with self._lock:
            old = [(s, e, p) for s, e, p in zip(self._starts, self._ends, self._prices) if e <= lo or s >= hi]
            merged = sorted(old + new)
            self._starts = [s for s, _, _ in merged]
            self._ends = [e for _, e, _ in merged]
            self._prices = [p for _, _, p in merged]
        return lo, hi


def parse_instant(text: str, tz: ZoneInfo) -> int:
    """Epoch ms from epoch-ms digits, or ISO 8601 (with an offset, or local time in ``tz``)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return int(t.astimezone(timezone.utc).timestamp() * 1000)


def read_price_csv(path: str | Path, tz: ZoneInfo) -> list[tuple[int, float]]:
    """A day-ahead list as users export it: ``start,price`` per line, an optional header line.

    ``start`` is ISO 8601 (local time in ``tz`` unless it carries an offset) or epoch ms; ``;`` separators and
    decimal commas (``0,123``) are accepted, as spreadsheets in Belgium and the Netherlands write them.
    """
    try:
        text = Path(path).read_text("utf-8-sig")
    except OSError as exc:
        raise TariffError(f"{path}: cannot read price list: {exc.strerror or exc}") from None
    delimiter = ";" if text.count(";") > text.count(",") / 2 and ";" in text else ","
    out: list[tuple[int, float]] = []
    for lineno, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise TariffError(f"{path}:{lineno}: expected `start{delimiter}price`, "
                              f"got {delimiter.join(row)!r}")
        try:
            start = parse_instant(row[0], tz)
        except ValueError:
            if lineno == 1 or not out:  # a header line
                continue
            raise TariffError(f"{path}:{lineno}: {row[0]!r} is not a time (ISO 8601 or epoch ms)") from None
        try:
            price = float(row[1].strip().replace(",", "."))
        except ValueError:
            raise TariffError(f"{path}:{lineno}: {row[1]!r} is not a price") from None
        out.append((start, price))
    return out


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    start: str | int
    price: float


_entries = msgspec.json.Decoder(list[_Entry] | dict[str, list[_Entry]])


def parse_price_message(payload: bytes, tz: ZoneInfo) -> list[tuple[int, float]]:
    """A price list on MQTT: ``[{"start": ISO or epoch ms, "price": x}, ...]`` or ``{"prices": [...]}``."""
    try:
        doc = _entries.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TariffError(f"price list: {exc}") from None
    items = doc if isinstance(doc, list) else doc.get("prices")
    if items is None:
        raise TariffError("price list: expected a list of {start, price} or {\"prices\": [...]}")
    out = []
    for e in items:
        try:
            start = e.start if isinstance(e.start, int) else parse_instant(e.start, tz)
        except ValueError:
            raise TariffError(f"price list: {e.start!r} is not a time (ISO 8601 or epoch ms)") from None
        if not (0 <= start < 32503680000000) or e.price != e.price or abs(e.price) > 1e6:
            entry = orjson.dumps(msgspec.to_builtins(e)).decode()
            raise TariffError(f"price list: entry {entry} is out of range")
        out.append((start, e.price))
    return out


class Price:
    """One side (import or export) of a tariff, ready to answer 'what does a kWh cost at this instant'."""

    def __init__(self, cfg: PriceConfig, tz: ZoneInfo):
        self.cfg, self.tz = cfg, tz
        self.dynamic = PriceList() if (cfg.dynamic_csv or cfg.dynamic_topic) else None
        self._scale = cfg.dynamic_factor / (1000.0 if cfg.dynamic_unit == "MWh" else 1.0)
        if cfg.dynamic_csv:
            self.dynamic.merge(read_price_csv(cfg.dynamic_csv, tz))  # type: ignore[union-attr]

    @property
    def configured(self) -> bool:
        return self.cfg.configured

    def _local(self, ts_ms: int) -> tuple[int, int]:
        t = datetime.fromtimestamp(ts_ms / 1000, self.tz)
        return t.weekday(), t.hour * 60 + t.minute

    def register_at(self, ts_ms: int) -> int:
        """The register in force by the clock: 2 inside ``t2_windows``, else 1."""
        if self.cfg.t2_windows:
            wd, minute = self._local(ts_ms)
            if any(w.matches(wd, minute) for w in self.cfg.t2_windows):
                return 2
        return 1

    def at(self, ts_ms: int, register: int | None = None) -> float | None:
        """Currency per kWh at ``ts_ms``; ``register`` is the meter's (1 or 2) when known. None: no price."""
        cfg = self.cfg
        if self.dynamic is not None:
            p = self.dynamic.at(ts_ms)
            if p is not None:
                return p * self._scale + cfg.dynamic_markup
        if cfg.windows:
            wd, minute = self._local(ts_ms)
            for w in cfg.windows:
                if w.matches(wd, minute):
                    return w.price
        if cfg.t1 is not None:
            reg = register if register in (1, 2) else self.register_at(ts_ms)
            return cfg.t1 if reg == 1 else cfg.t2
        return cfg.price


class Tariff:
    """The whole ``[tariff]`` in one object: energy prices both ways, the fixed and the capacity charge."""

    def __init__(self, cfg: TariffConfig, tz: ZoneInfo):
        self.cfg = cfg
        self.currency = cfg.currency
        self.import_ = Price(cfg.import_, tz)
        self.export = Price(cfg.export, tz)

    @property
    def configured(self) -> bool:
        return self.import_.configured or self.export.configured or bool(self.cfg.fixed_per_day
                                                                           or self.cfg.capacity_per_kw)

    def import_price(self, ts_ms: int, register: int | None = None) -> float | None:
        return self.import_.at(ts_ms, register)

    def export_price(self, ts_ms: int, register: int | None = None) -> float | None:
        return self.export.at(ts_ms, register)

    def capacity_charge(self, peak_w: float) -> float:
        """The month's capacity charge for a month whose highest 15-minute average import is ``peak_w``."""
        if not self.cfg.capacity_per_kw:
            return 0.0
        return self.cfg.capacity_per_kw * max(self.cfg.capacity_min_kw, peak_w / 1000.0)

    def topics(self) -> dict[str, Price]:
        """MQTT topic -> the side whose dynamic prices it carries."""
        return {p.cfg.dynamic_topic: p for p in (self.import_, self.export) if p.cfg.dynamic_topic}
