"""The API's response documents as typed msgspec structs: Litestar encodes them and writes the OpenAPI schema.

``Bucket`` (``bus.rollup``) is served as it is stored; everything else the API answers is declared here, so
the OpenAPI document and the bytes on the wire come from the same definitions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from bus.envelope import NAME_SCHEMA_PATTERN
from bus.rollup import Bucket

Name = Annotated[str, msgspec.Meta(pattern=NAME_SCHEMA_PATTERN, description="a source or device name")]
Role = Literal["grid", "solar", "load", "battery"]


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details: what went wrong with the request, in words."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


class Gethpc(msgspec.Struct):
    """Seed 000's hhpcserver document: kW, kvar, V, A, Wh, local time (``YYYY-MM-DD HH:MM:SS``)."""

    timestamp: str
    gapower: float
    grpower: float
    voltage: float
    gintens: float
    sm1: float
    sm2: float
    sm3: float


class DeviceInfo(msgspec.Struct, kw_only=True):
    source: str
    device: str
    role: Role | None = None
    """From the config of the producer that publishes it (null when not known)."""
    status: Literal["online", "offline"] | None = None
    last_ts: int | None = None
    """Epoch ms of the newest reading seen on the bus or in the store."""
    last_time: str | None = None
    """The same, local time in site.timezone."""
    process: str | None = None
    power_w: float | None = None
    """The newest power reading, for tiles."""


class ReadingRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    ts: int
    metrics: dict[str, float]
    period_s: float = 0.0
    quality: Literal["ok", "missing", "estimated"] = "ok"
    seq: int | None = None


class LatestReading(msgspec.Struct, kw_only=True):
    source: str
    device: str
    ts: int
    time: str
    period_s: float
    quality: str
    seq: int | None
    metrics: dict[str, float]
    units: dict[str, str]
    status: Literal["online", "offline"] | None
    age_s: float
    origin: Literal["bus", "store"]
    """`bus`: seen live since the API started; `store`: the newest stored reading."""


class ReadingsPage(msgspec.Struct, kw_only=True, rename={"start": "from", "end": "to"}):
    source: str
    device: str
    start: int
    end: int
    step_s: float | None
    timezone: str
    count: int
    readings: list[ReadingRow]


class EnergyPage(msgspec.Struct, kw_only=True, rename={"start": "from", "end": "to"}):
    source: str
    device: str
    period: str
    start: int
    end: int
    timezone: str
    buckets: list[Bucket]


class SiteInfo(msgspec.Struct, kw_only=True):
    """What the dashboard needs to lay itself out."""

    timezone: str
    now: int
    site: str | None
    """The site balance's device name (``/site/{period}``), when an aggregate consumer publishes one."""
    grid: list[str]
    solar: list[str]
    hhpc_device: str | None
    writable: bool
    """True when write routes are enabled (a token file is configured)."""


class ProcessInfo(msgspec.Struct, kw_only=True):
    name: str
    kind: str | None
    type: str | None
    configured: bool
    status: Literal["online", "offline"] | None
    health: dict[str, Any] | None
    health_age_s: float | None
    dead_letters: int
    """Rejected inputs counted by the process since it started (its health document)."""
    dlq_seen: int
    """Dead letters this API saw on ``wattbus/dlq/{process}`` since it started."""
    dlq_last_reason: str | None
    dlq_last_ts: int | None


class Heartbeat(msgspec.Struct, kw_only=True):
    serial: str
    status: Literal["online", "offline"] | None
    received_age_s: float | None
    ts: int | None
    uptime_s: float | None
    sim_time: int | None
    last_reading_ts: int | None
    upload: str | None
    pending: int | None
    energy_import_wh: float | None
    energy_export_wh: float | None


class MeterInfo(msgspec.Struct, kw_only=True):
    serial: str
    status: Literal["online", "offline"] | None
    config: dict[str, Any] | None
    """The config the meter runs now, as it last answered on ``sim/{serial}/config``."""
    heartbeat: Heartbeat | None
    last_reading_ts: int | None


class MeterDay(msgspec.Struct, kw_only=True):
    day: str
    start: int
    end: int
    import_wh: float | None
    export_wh: float | None
    readings: list[ReadingRow]


class MeterDetail(msgspec.Struct, kw_only=True):
    meter: MeterInfo
    day: MeterDay | None


class ConfigAnswer(msgspec.Struct, kw_only=True):
    serial: str
    sent: dict[str, Any]
    answered: bool
    answer: dict[str, Any] | None
