"""The calendar bucket record (DESIGN.md "Aggregates"): what the aggregate consumer writes and everyone reads.

One record per ``(source, device, period, start)``; ``start``/``end`` are epoch ms UTC of the bucket's local
calendar boundaries in ``site.timezone`` and ``label`` is the local start with its UTC offset, so the repeated
autumn hour is two buckets with two labels. The site balance uses ``source = "site"``.

Every numeric field is optional: a meter without export leaves ``energy_export_wh`` as None (unknown), not 0.
``VALUE_FIELDS`` is the single list sinks turn into columns, so adding a value is one line here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

PERIODS = ("15m", "1h", "1d", "1w", "1mo", "1y")
Period = Literal["15m", "1h", "1d", "1w", "1mo", "1y"]
Status = Literal["open", "complete", "partial", "closed"]
SITE_SOURCE = "site"


class Bucket(msgspec.Struct, kw_only=True, omit_defaults=True):
    v: int = 1
    source: str
    device: str
    period: Period
    start: int
    end: int
    label: str
    status: Status = "open"
    coverage: float = 0.0
    """Fraction of the bucket's time covered by data (1.0: no gap)."""
    readings: int = 0
    # energy of the device, in its own sign convention (import = in the device's natural direction)
    energy_import_wh: float | None = None
    energy_export_wh: float | None = None
    energy_import_t1_wh: float | None = None
    energy_import_t2_wh: float | None = None
    energy_export_t1_wh: float | None = None
    energy_export_t2_wh: float | None = None
    sub1_energy_wh: float | None = None
    sub2_energy_wh: float | None = None
    sub3_energy_wh: float | None = None
    gas_m3: float | None = None
    power_avg_w: float | None = None
    power_min_w: float | None = None
    power_max_w: float | None = None
    demand_peak_w: float | None = None
    """Highest 15-minute average import power within the bucket (capacity tariff)."""
    # the site balance (source = "site")
    grid_import_wh: float | None = None
    grid_export_wh: float | None = None
    solar_wh: float | None = None
    home_wh: float | None = None
    """Home consumption = grid import + solar production - grid export (+ battery discharge - charge)."""
    self_consumption_wh: float | None = None
    """Solar energy used in the home directly (solar production - grid export)."""
    self_sufficiency_pct: float | None = None
    # money, computed by the aggregate consumer only (DESIGN "Prices")
    cost: float | None = None
    revenue: float | None = None
    cost_without_solar: float | None = None
    solar_profit: float | None = None
    currency: str | None = None
    late: int = 0
    """Readings that arrived after the bucket was closed: counted, not applied."""
    # added by the aggregate consumer (issue 10)
    battery_charge_wh: float | None = None
    """Site balance: energy into the battery devices (their export)."""
    battery_discharge_wh: float | None = None
    """Site balance: energy out of the battery devices (their import)."""
    last_ts: int | None = None
    """ts of the newest reading counted in the bucket (where a restart resumes)."""
    rev: int = 0
    """Revision: +1 every time the bucket changes. Readers that see two copies keep the higher one (a
    time-series database such as VictoriaMetrics keeps every write; a subscriber can drop a stale one)."""


KEY_FIELDS = ("source", "device", "period", "start")
META_FIELDS = ("v", "end", "label", "status", "coverage", "readings", "currency", "late")
VALUE_FIELDS = tuple(f for f in Bucket.__struct_fields__ if f not in KEY_FIELDS and f not in META_FIELDS)

PERIOD_LABELS = {"15m": "2024-10-27T02:00+02:00", "1h": "2024-10-27T02:00+02:00", "1d": "2024-10-27",
                 "1w": "2024-W43", "1mo": "2024-10", "1y": "2024"}
"""What a ``label`` looks like per period: local start with its UTC offset, date, ISO week, month, year."""


def label_of(period: str, local_start: datetime) -> str:
    """The ``label`` of a bucket from its local start (an aware datetime in the site's time zone)."""
    if period in ("15m", "1h"):
        return local_start.isoformat(timespec="minutes")
    if period == "1d":
        return local_start.date().isoformat()
    if period == "1w":
        year, week, _ = local_start.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "1mo":
        return f"{local_start.year}-{local_start.month:02d}"
    if period == "1y":
        return str(local_start.year)
    raise ValueError(f"unknown period {period!r}")


def from_row(row: dict) -> Bucket:
    """A bucket from a database row or document (None = absent; numbers stored as floats are fine)."""
    return msgspec.convert({k: v for k, v in row.items() if v is not None}, Bucket, strict=False)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Bucket)


def encode(bucket: Bucket) -> bytes:
    """JSON for ``agg/`` topics and the API; ``v`` always first (omit_defaults would drop it)."""
    body = _encoder.encode(bucket)
    return body if body.startswith(b'{"v"') else b'{"v":1,' + body[1:]


def decode(payload: bytes) -> Bucket:
    """Raise msgspec.ValidationError / DecodeError on a payload that is not a bucket."""
    return _decoder.decode(payload)
