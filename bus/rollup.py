"""The calendar bucket record (DESIGN.md "Aggregates"): what the aggregate consumer writes and everyone reads.

One record per ``(source, device, period, start)``; ``start``/``end`` are epoch ms UTC of the bucket's local
calendar boundaries in ``site.timezone`` and ``label`` is the local start with its UTC offset, so the repeated
autumn hour is two buckets with two labels. The site balance uses ``source = "site"``.

Every numeric field is optional: a meter without export leaves ``energy_export_wh`` as None (unknown), not 0.
``VALUE_FIELDS`` is the single list sinks turn into columns, so adding a value is one line here.
"""

from __future__ import annotations

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


KEY_FIELDS = ("source", "device", "period", "start")
META_FIELDS = ("v", "end", "label", "status", "coverage", "readings", "currency", "late")
VALUE_FIELDS = tuple(f for f in Bucket.__struct_fields__ if f not in KEY_FIELDS and f not in META_FIELDS)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Bucket)


def encode(bucket: Bucket) -> bytes:
    """JSON for ``agg/`` topics and the API; ``v`` always first (omit_defaults would drop it)."""
    body = _encoder.encode(bucket)
    return body if body.startswith(b'{"v"') else b'{"v":1,' + body[1:]


def decode(payload: bytes) -> Bucket:
    """Raise msgspec.ValidationError / DecodeError on a payload that is not a bucket."""
    return _decoder.decode(payload)
