"""One telegram (text from `/` to `!CRC`) -> canonical metrics, through dsmr_parser.

dsmr_parser's ``TelegramParser`` checks the CRC and parses the lines; this module gives it a trimmed copy
of the chosen specification (only the lines the tables in ``obis.py`` use, with the meter-time parser of
``clock.py``) and then walks those tables over the parsed ``Telegram``.

Trimming also keeps out the power-failure event log (1-0:99.97.0): dsmr_parser 1.11.2's
``ProfileGenericParser`` appends to its own parser list on every telegram that carries events, which
would grow without bound in a process that parses a telegram a second for months.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from dsmr_parser import telegram_specifications, value_types
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.objects import Telegram
from dsmr_parser.parsers import TelegramParser, ValueParser

from producers.p1 import clock, obis


class DecodeError(ValueError):
    """A telegram that must be skipped; ``reason`` is a short machine-friendly tag for counters."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class SubReading:
    """A sub-meter value (gas, water) with the sub-meter's own capture time."""

    suffix: str
    key: str
    value: float
    ts: int | None


@dataclass(slots=True)
class Sample:
    """What one telegram says, in canonical metrics."""

    ts: int | None
    """The meter's clock (epoch ms), None when the telegram has no (valid) timestamp."""
    metrics: dict[str, float] = field(default_factory=dict)
    subs: list[SubReading] = field(default_factory=list)


def build_spec(version: obis.Version, tz: ZoneInfo) -> dict[str, Any]:
    """The dsmr_parser specification of ``version``, trimmed to the lines we use, stamps read in ``tz``."""
    base = getattr(telegram_specifications, version.spec)
    wanted = obis.needed_attributes()
    objects = [copy.deepcopy(o) for o in base["objects"] if o["value_name"] in wanted]
    stamp = ValueParser(clock.parser_for(tz))
    for o in objects:
        parser = o["value_parser"]
        formats = getattr(parser, "value_formats", None)
        if formats:
            parser.value_formats = tuple(
                stamp if isinstance(f, ValueParser) and f.coerce_type is value_types.timestamp else f
                for f in formats
            )
    return {**{k: v for k, v in base.items() if k != "objects"}, "objects": objects}


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/ARC (reflected 0xA001, init 0), the P1 telegram checksum over `/` .. `!` inclusive.

    The same function as dsmr_parser's ``TelegramParser.crc16`` (the tests check they agree) at a
    fifth of its cost (0.2 ms instead of 1 ms per telegram here), where it was the largest single cost of
    reading a telegram a second on a Raspberry Pi.
    """
    crc = 0
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def check_crc(text: str) -> None:
    """Raise DecodeError("bad_crc") unless the `!XXXX` after the telegram matches its content."""
    end = text.rfind("!")
    digits = text[end + 1:].rstrip("\r\n\0")
    if end < 0 or not 1 <= len(digits) <= 4 or any(c not in "0123456789ABCDEF" for c in digits):
        raise DecodeError("bad_crc", f"no CRC after '!' (got {digits[:8]!r}); DSMR 2.2/3 and Q3D meters send "
                                     f"none: is `dsmr` right?")
    expected = int(digits, 16)
    actual = crc16(text[:end + 1].encode("latin-1"))
    if actual != expected:
        raise DecodeError("bad_crc", f"CRC {actual:04X} computed, telegram says {expected:04X}")


class Decoder:
    """Parses telegram text of one meter version into ``Sample`` objects."""

    def __init__(self, version: obis.Version, tz: ZoneInfo, check_crc: bool = True):
        self.version = version
        self.spec = build_spec(version, tz)
        self.has_crc = bool(self.spec["checksum_support"]) and check_crc
        self._parser = TelegramParser(self.spec, apply_checksum_validation=False)

    def parse(self, text: str) -> Telegram:
        """dsmr_parser's Telegram for ``text`` (from `/`); DecodeError for a bad CRC or a malformed line."""
        if self.has_crc:
            check_crc(text)
        try:
            return self._parser.parse(text, throw_ex=True)
        except InvalidChecksumError as exc:  # not raised with validation off; kept for safety
            raise DecodeError("bad_crc", str(exc)) from None
        except ParseError as exc:
            raise DecodeError("parse_error", str(exc)) from None
        except (ValueError, ArithmeticError, IndexError, TypeError) as exc:  # a value dsmr_parser could not coerce
            raise DecodeError("parse_error", f"{type(exc).__name__}: {exc}") from None

    def decode(self, text: str) -> Sample:
        """Canonical metrics of one telegram; DecodeError when it is corrupt or says nothing we know."""
        telegram = self.parse(text)
        try:
            sample = to_sample(telegram)
        except Exception as exc:  # a value shaped unlike any meter we know: skip the telegram, never crash
            raise DecodeError("parse_error", f"{type(exc).__name__}: {exc}") from None
        if not sample.metrics and not sample.subs:
            raise DecodeError("no_data", "telegram has none of the expected lines")
        return sample


def _number(obj: Any, unit: str | None) -> Decimal | None:
    """The value of a parsed line in canonical ``unit``, None when absent or in a unit we cannot convert."""
    raw = getattr(obj, "value", None)
    if raw is None:
        return None
    try:
        value = raw if isinstance(raw, Decimal) else Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite():
        return None
    if unit is None:
        return value
    given = getattr(obj, "unit", None) or unit
    factor = obis.UNIT_FACTORS.get(unit, {}).get(given)
    return None if factor is None else value * factor


def to_sample(telegram: Telegram) -> Sample:
    """Walk the ``obis`` tables over a parsed telegram."""
    stamp = getattr(telegram, obis.TIMESTAMP_ATTR, None)
    sample = Sample(ts=clock.to_ms(stamp.value) if stamp is not None else None)
    exact: dict[str, Decimal] = {}
    for attr, f in obis.FIELDS.items():
        obj = getattr(telegram, attr, None)
        if obj is not None and (v := _number(obj, f.unit)) is not None:
            exact[f.key] = v
    for net in obis.NETS:
        pos = _attr_number(telegram, net.positive, net.unit)
        neg = _attr_number(telegram, net.negative, net.unit)
        if pos is not None or neg is not None:
            exact[net.key] = (pos or Decimal(0)) - (neg or Decimal(0))
    if "reactive_power_var" not in exact:
        parts = [(_attr_number(telegram, p, "var"), _attr_number(telegram, n, "var")) for p, n in obis.REACTIVE_PHASES]
        if any(p is not None or n is not None for p, n in parts):
            exact["reactive_power_var"] = sum(((p or 0) - (n or 0) for p, n in parts), Decimal(0))
    for total, tariffs in obis.TOTALS.items():
        if total not in exact and all(t in exact for t in tariffs):
            exact[total] = sum((exact[t] for t in tariffs), Decimal(0))
    sample.metrics = {k: float(v) for k, v in exact.items()}
    sample.subs = _sub_readings(telegram)
    return sample


def _attr_number(telegram: Telegram, attr: str, unit: str) -> Decimal | None:
    obj = getattr(telegram, attr, None)
    return None if obj is None else _number(obj, unit)


def _sub_readings(telegram: Telegram) -> list[SubReading]:
    out: list[SubReading] = []
    seen: set[str] = set()
    for device in getattr(telegram, "MBUS_DEVICES", None) or []:
        reading = next((getattr(device, a) for a in obis.MBUS_READING_ATTRS if hasattr(device, a)), None)
        if reading is None:
            continue
        dtype = _int(next((getattr(device, a).value for a in obis.MBUS_TYPE_ATTRS if hasattr(device, a)), None))
        if dtype is None:
            dtype = obis.MBUS_UNIT_KIND.get(getattr(reading, "unit", None) or "")
        kind = obis.MBUS_KINDS.get(dtype) if dtype is not None else None
        if kind is None:
            continue
        suffix, key = kind
        value = _number(reading, "m3")
        ts = clock.to_ms(reading.datetime)
        if value is None or ts is None or suffix in seen:  # empty channel: `(700101010000W)(00000000)`
            continue
        seen.add(suffix)
        out.append(SubReading(suffix, key, float(value), ts))
    return out


def _int(value: Any) -> int | None:
    """Device types come as int (DSMR 4+) or as text (DSMR 2.2 parses `(3)` as '3')."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
