"""Seed 000's ``GET /api/v1/gethpc``, byte for byte as its Go server wrote it.

The seed's hhpcserver encodes a struct with Go's ``encoding/json``: keys in struct order, no spaces, floats in
the shortest form that reads back exactly (``2`` for 2.0, ``0.288``; exponent only below 1e-6 or from 1e21)
and a newline at the end (``json.Encoder``). Its readers (the seed's Prometheus exporter, scripts) parse that,
so wattbus writes the same bytes rather than whatever a JSON library prefers.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from bus.envelope import Reading

# (seed key, metric key, scale, decimals): the dataset's units and precision
FIELDS = (
    ("gapower", "power_w", 0.001, 3),
    ("grpower", "reactive_power_var", 0.001, 3),
    ("voltage", "voltage_v", 1.0, 3),
    ("gintens", "current_a", 1.0, 3),
    ("sm1", "sub1_energy_wh", 1.0, 3),
    ("sm2", "sub2_energy_wh", 1.0, 3),
    ("sm3", "sub3_energy_wh", 1.0, 3),
)


def go_float(value: float) -> str:
    """A float as Go's encoding/json writes it."""
    if not math.isfinite(value):
        raise ValueError(f"JSON has no {value}")
    if value == 0:
        return "0"
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        mantissa, _, exp = repr(value).partition("e")
        if not exp:
            mantissa, _, exp = f"{value:e}".partition("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        sign = "-" if exp.startswith("-") else "+"
        return f"{mantissa}e{sign}{exp.lstrip('+-').lstrip('0') or '0'}"
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def gethpc_body(reading: Reading, tz: ZoneInfo) -> bytes:
    """The seed's document for one hhpc reading (local time in ``tz``)."""
    stamp = datetime.fromtimestamp(reading.ts / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")
    parts = [f'"timestamp":"{stamp}"']
    for key, metric, scale, decimals in FIELDS:
        value = round(reading.metrics.get(metric, 0.0) * scale, decimals)
        parts.append(f'"{key}":{go_float(value + 0.0)}')  # + 0.0 turns -0.0 into 0.0
    return ("{" + ",".join(parts) + "}\n").encode()
