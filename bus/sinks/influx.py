"""InfluxDB 2 sink (influxdb-client): any server that speaks the ``/api/v2/write`` line protocol.

Layout: **one point per reading**. Measurement = the source (``hhpc``, ``p1``, ...), one tag ``device``,
one float field per metric key exactly as in ``schemas/metrics.toml`` (per-phase metrics keep their
``_l1``/``_l2``/``_l3`` key: ``power_l1_w``), plus ``seq`` (integer), ``period_s`` (float) and ``quality``
(integer: 0 ok, 1 missing, 2 estimated; an integer because VictoriaMetrics-like servers store numbers
only), timestamps in milliseconds. A reading is thus one line written and read as a unit, series stay at
one per device, and re-writing a reading overwrites the same point (same measurement, tag set and time):
idempotent on ``(source, device, ts)`` by construction. Splitting phases into a ``phase`` tag was
considered and not done: it would turn one reading into four points and make ``read`` reassemble them;
a Flux ``filter(fn: (r) => r._field =~ /_l1/)`` selects a phase just as well.

Writes go through the client's *synchronous* write API in chunks of ``batch`` lines (default 5000), each
chunk one HTTP request that returns once the server accepted it; the store acknowledges only after every
chunk of a batch was accepted. (The client's background batching mode is not used: it acknowledges
nothing back, so the store could not know when a reading is safe.) Lines are rendered directly as line
protocol, which is several times faster than building ``Point`` objects.

Reading back (``read``, used by ``wattbus export``): InfluxDB answers a Flux query (``from |> range |>
filter |> pivot``). VictoriaMetrics, which accepts the same writes, does not speak Flux; there ``read``
uses its native ``/api/v1/export`` (metrics named ``<measurement>_<field>``, e.g. ``hhpc_power_w``).
``read=auto`` (default) asks the server's ``/health`` which one it is; ``read=flux`` or ``read=victoria``
says so. VictoriaMetrics keeps a re-written sample twice unless started with ``-dedup.minScrapeInterval``;
``read`` merges samples by timestamp, so a reading is returned once either way.

URL: ``influx://host:8086?org=home&bucket=energy&token_file=/etc/wattbus/influx.token`` (or
$WATTBUS_INFLUX_TOKEN). Options: ``org``, ``bucket`` (required), ``token_file``, ``tls`` (https),
``read`` (auto | flux | victoria), ``batch`` (lines per request), ``timeout`` (s per request, default 30),
``bench=naive`` (one request per reading: ``wattbus bench``'s comparison path).
"""

from __future__ import annotations

import math
from functools import lru_cache
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote, urlsplit

import httpx
import orjson
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from bus.envelope import Reading
from bus.rollup import VALUE_FIELDS, Bucket, from_row
from bus.sinks.base import DataError, Sink, SinkError
from bus.sinks.urlopts import flag, options, reject_inline_secret, secret
from schemas import METRICS

TOKEN_ENV = "WATTBUS_INFLUX_TOKEN"
URL_OPTIONS = {"org", "bucket", "token_file", "tls", "read", "batch", "timeout", "bench"}
QUALITY_CODES = {"ok": 0, "missing": 1, "estimated": 2}
QUALITY_NAMES = {v: k for k, v in QUALITY_CODES.items()}
EXTRA_FIELDS = ("seq", "period_s", "quality")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DAY_MS = 86_400_000
MAX_MS = 32503680000000
"""The envelope's last valid ts (year 3000): range ends beyond it are clamped (servers reject far futures)."""
VICTORIA_WINDOW_POINTS = 50_000
NETWORK_ERRORS = (ApiException, urllib3.exceptions.HTTPError, httpx.HTTPError, OSError)
DATA_STATUSES = {400, 413, 422}
"""HTTP answers to a write that are about the lines: unparsable or a field type conflict (400), too large
(413: splitting helps), unprocessable, e.g. beyond the bucket's retention (422). 401/403/404 (token, bucket),
429, 5xx and network errors are the server's: retried."""


def _escape_key(s: str) -> str:
    """Line-protocol escaping for measurement, tag keys and tag values (commas, spaces, equals signs)."""
    return s.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


@lru_cache(maxsize=4096)
def _series(source: str, device: str) -> str:
    return f"{_escape_key(source)},device={_escape_key(device)} "


def line(r: Reading) -> str:
    """One reading as one line of line protocol (millisecond timestamp)."""
    fields = ",".join([f"{k}={v!r}" for k, v in r.metrics.items() if math.isfinite(v)])
    seq = "" if r.seq is None else f"seq={int(r.seq)}i,"
    sep = "," if fields else ""
    return (f"{_series(r.source, r.device)}{fields}{sep}{seq}period_s={float(r.period_s)!r},"
            f"quality={QUALITY_CODES.get(r.quality, 0)}i {int(r.ts)}")


def _flux_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rfc3339(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class InfluxSink(Sink):
    def __init__(self, url: str):
        super().__init__(url)
        reject_inline_secret(url, "token_file")
        parts = urlsplit(url)
        self.opts = options(url, URL_OPTIONS)
        self.org = self.opts.get("org", "")
        self.bucket = self.opts.get("bucket", "")
        if not self.bucket:
            raise ValueError("influx URL needs a bucket: influx://host:8086?org=home&bucket=energy")
        scheme = "https" if flag(self.opts, "tls") else "http"
        host, port, path = parts.hostname or "localhost", parts.port or 8086, unquote(parts.path).rstrip("/")
        self.base = f"{scheme}://{host}:{port}{path}"
        self.token = secret(self.opts, "token_file", TOKEN_ENV)
        self.read_mode = self.opts.get("read", "auto")
        if self.read_mode not in ("auto", "flux", "victoria"):
            raise ValueError(f"influx URL option read={self.read_mode!r}: expected auto, flux or victoria")
        self.batch = 1 if self.opts.get("bench") == "naive" else int(self.opts.get("batch", 5000))
        self.timeout = float(self.opts.get("timeout", 30))
        self._client: InfluxDBClient | None = None
        self._write_api = None

    def describe(self) -> str:
        return f"{super().describe()}?org={self.org}&bucket={self.bucket}"

    @property
    def client(self) -> InfluxDBClient:
        if self._client is None:
            self._client = InfluxDBClient(url=self.base, token=self.token or "", org=self.org or None,
                                          timeout=int(self.timeout * 1000))
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        return self._client

    def ensure_schema(self) -> None:
        """Nothing to create: a measurement appears with its first point, a field with its first value.

        The bucket itself is made by the InfluxDB administrator (retention is a decision, not a default).
        """

    def write(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        lines = [line(r) for r in readings]
        _ = self.client
        try:
            for i in range(0, len(lines), self.batch):
                self._write_api.write(self.bucket, self.org, "\n".join(lines[i:i + self.batch]),
                                      write_precision=WritePrecision.MS)
        except NETWORK_ERRORS as exc:
            kind = DataError if isinstance(exc, ApiException) and exc.status in DATA_STATUSES else SinkError
            raise kind(f"influx {self.describe()}: {_reason(exc)}") from exc

    # -- read --------------------------------------------------------------------------------------
    def read(self, source: str, device: str, start_ms: int, end_ms: int) -> Iterator[Reading]:
        end_ms = min(end_ms, MAX_MS + 1)
        try:
            if self._server_kind() == "victoria":
                yield from self._read_victoria(source, device, start_ms, end_ms)
            else:
                yield from self._read_flux(source, device, start_ms, end_ms)
        except NETWORK_ERRORS as exc:
            raise SinkError(f"influx {self.describe()}: {_reason(exc)}") from exc

    def count(self, source: str, device: str, start_ms: int = 0, end_ms: int = 2**53) -> int:
        """Readings stored: the points of the ``quality`` field, which every reading has."""
        end_ms = min(end_ms, MAX_MS + 1)
        try:
            if self._server_kind() == "victoria":
                resp = httpx.post(f"{self.base}/api/v1/export", timeout=self.timeout, data={
                    "match[]": f'{{__name__="{source}_quality",device="{device}"}}',
                    "start": f"{start_ms / 1000:.3f}", "end": f"{(end_ms - 1) / 1000:.3f}"})
                resp.raise_for_status()
                seen: set[int] = set()
                for raw in resp.content.splitlines():
                    if raw.strip():
                        seen.update(t for t in orjson.loads(raw)["timestamps"] if start_ms <= t < end_ms)
                return len(seen)
            flux = self._flux_select(source, device, start_ms, end_ms, "quality") + "  |> count()"
            tables = self.client.query_api().query(flux, org=self.org or None)
            return sum(int(rec.get_value()) for table in tables for rec in table.records)
        except NETWORK_ERRORS as exc:
            raise SinkError(f"influx {self.describe()}: {_reason(exc)}") from exc

    def _server_kind(self) -> str:
        """InfluxDB's /health answers JSON naming itself; VictoriaMetrics answers plain ``OK``."""
        if self.read_mode == "auto":
            r = httpx.get(f"{self.base}/health", timeout=self.timeout)
            try:
                is_influx = orjson.loads(r.content).get("name") == "influxdb"
            except (orjson.JSONDecodeError, AttributeError):
                is_influx = False
            self.read_mode = "flux" if is_influx else "victoria"
        return self.read_mode

    def _flux_select(self, source: str, device: str, start_ms: int, end_ms: int,
                     field: str | None = None) -> str:
        where = f"r._measurement == {_flux_string(source)} and r.device == {_flux_string(device)}"
        if field:
            where += f" and r._field == {_flux_string(field)}"
        return (f"from(bucket: {_flux_string(self.bucket)})\n"
                f"  |> range(start: {_rfc3339(start_ms)}, stop: {_rfc3339(end_ms)})\n"
                f"  |> filter(fn: (r) => {where})\n")

    def flux_query(self, source: str, device: str, start_ms: int, end_ms: int) -> str:
        return (self._flux_select(source, device, start_ms, end_ms)
                + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
                + '  |> sort(columns: ["_time"])')

    def _read_flux(self, source: str, device: str, start_ms: int, end_ms: int) -> Iterator[Reading]:
        records = self.client.query_api().query_stream(self.flux_query(source, device, start_ms, end_ms),
                                                       org=self.org or None)
        last = None
        for rec in records:
            ts = (rec.get_time() - EPOCH) // timedelta(milliseconds=1)
            if ts == last:
                continue
            last = ts
            yield reading_from_fields(source, device, ts, rec.values)

    def _read_victoria(self, source: str, device: str, start_ms: int, end_ms: int) -> Iterator[Reading]:
        """Through /api/v1/export, window by window, so a year streams in bounded memory.

        The window adapts: it doubles across empty time (an export from 1970 on costs a few requests) and
        shrinks to about ``VICTORIA_WINDOW_POINTS`` readings where there is data.
        """
        names = "|".join([*METRICS, *EXTRA_FIELDS])
        match = f'{{__name__=~"{source}_({names})",device="{device}"}}'
        prefix = len(source) + 1
        window = DAY_MS
        with httpx.Client(timeout=self.timeout) as http:
            lo = start_ms
            while lo < end_ms:
                hi = min(lo + window, end_ms)
                resp = http.post(f"{self.base}/api/v1/export",
                                 data={"match[]": match, "start": f"{lo / 1000:.3f}",
                                       "end": f"{(hi - 1) / 1000:.3f}"})
                resp.raise_for_status()
                rows: dict[int, dict[str, float]] = {}
                for raw in resp.content.splitlines():
                    if not raw.strip():
                        continue
                    series = orjson.loads(raw)
                    field = series["metric"]["__name__"][prefix:]
                    for ts, value in zip(series["timestamps"], series["values"]):
                        if lo <= ts < hi and value is not None and math.isfinite(value):
                            rows.setdefault(ts, {})[field] = value
                for ts in sorted(rows):
                    yield reading_from_fields(source, device, ts, rows[ts])
                span = hi - lo
                lo = hi
                if rows:
                    window = max(60_000, min(span * 2, span * VICTORIA_WINDOW_POINTS // len(rows)))
                else:
                    window = span * 4

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._write_api = None

    # -- rollups: the aggregate consumer's buckets (bus.rollup) --------------------------------------
    # Measurement ``rollups``, tags source/device/period (and currency), one point per bucket with every
    # value as a field; the status as a number and the label rebuilt from the start and its UTC offset
    # (time-series servers keep numbers). InfluxDB overwrites a point written again at the bucket's start.
    # VictoriaMetrics keeps every write of the same timestamp and returns them in no fixed order, so there
    # each write goes to ``start + rev`` ms (still inside the bucket) and a read keeps the highest revision.
    def write_buckets(self, buckets: Sequence[Bucket]) -> None:
        if not buckets:
            return
        _ = self.client
        try:
            shift = self._server_kind() == "victoria"
            lines = [bucket_line(b, shift) for b in buckets]
            for i in range(0, len(lines), self.batch):
                self._write_api.write(self.bucket, self.org, "\n".join(lines[i:i + self.batch]),
                                      write_precision=WritePrecision.MS)
        except NETWORK_ERRORS as exc:
            raise SinkError(f"influx {self.describe()}: rollups: {_reason(exc)}") from exc

    def read_buckets(self, source: str, device: str, period: str, start_ms: int, end_ms: int) -> list[Bucket]:
        end_ms = min(end_ms, MAX_MS + 1)
        hi = min(end_ms + _LONGEST.get(period, DAY_MS), MAX_MS + 1)
        try:
            if self._server_kind() == "victoria":
                points = self._rollup_points_victoria(source, device, period, start_ms, hi)
            else:
                points = self._rollup_points_flux(source, device, period, start_ms, hi)
        except NETWORK_ERRORS as exc:
            raise SinkError(f"influx {self.describe()}: rollups: {_reason(exc)}") from exc
        newest: dict[int, dict] = {}
        for fields in points:
            start = fields.get("start")
            if start is None or not start_ms <= start < end_ms:
                continue
            start = int(start)
            if start not in newest or fields.get("rev", 0) >= newest[start].get("rev", 0):
                newest[start] = fields
        return [bucket_from_fields(source, device, period, newest[k]) for k in sorted(newest)]

    def _rollup_points_victoria(self, source: str, device: str, period: str, lo: int, hi: int) -> list[dict]:
        try:  # make the last writes searchable now (VictoriaMetrics shows them within a second otherwise)
            httpx.get(f"{self.base}/internal/force_flush", timeout=self.timeout)
        except httpx.HTTPError:
            pass
        match = (f'{{__name__=~"rollups_.+",source="{_label_value(source)}",device="{_label_value(device)}",'
                 f'period="{_label_value(period)}"}}')
        resp = httpx.post(f"{self.base}/api/v1/export", timeout=self.timeout,
                          data={"match[]": match, "start": f"{lo / 1000:.3f}",
                                "end": f"{(hi - 1) / 1000:.3f}"})
        resp.raise_for_status()
        by_ts: dict[tuple[int, str], dict] = {}
        for raw in resp.content.splitlines():
            if not raw.strip():
                continue
            series = orjson.loads(raw)
            labels = series["metric"]
            field = labels["__name__"][len("rollups_"):]
            currency = labels.get("currency", "")
            for ts, value in zip(series["timestamps"], series["values"]):
                point = by_ts.setdefault((ts, currency), {"currency": currency or None})
                point[field] = value
        return list(by_ts.values())

    def _rollup_points_flux(self, source: str, device: str, period: str, lo: int, hi: int) -> list[dict]:
        where = (f'r._measurement == "rollups" and r.source == {_flux_string(source)} and '
                 f'r.device == {_flux_string(device)} and r.period == {_flux_string(period)}')
        flux = (f"from(bucket: {_flux_string(self.bucket)})\n"
                f"  |> range(start: {_rfc3339(lo)}, stop: {_rfc3339(hi)})\n"
                f"  |> filter(fn: (r) => {where})\n"
                '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")')
        out = []
        for rec in self.client.query_api().query_stream(flux, org=self.org or None):
            values = dict(rec.values)
            values["currency"] = values.get("currency") or None
            out.append(values)
        return out


STATUS_CODES = {"open": 0, "complete": 1, "partial": 2, "closed": 3}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
_LONGEST = {"15m": 900_000, "1h": 7_200_000, "1d": 2 * DAY_MS, "1w": 8 * DAY_MS, "1mo": 32 * DAY_MS,
            "1y": 367 * DAY_MS}
"""Longest bucket of each period (a revision's point lies between its start and its end)."""
_INT_FIELDS = ("start", "end", "readings", "late", "rev", "v", "last_ts")
_FLOAT_FIELDS = ("coverage", *(f for f in VALUE_FIELDS if f not in _INT_FIELDS))


def _label_value(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _offset_min(b: Bucket) -> int:
    """The UTC offset of the bucket's local start, read back from its label."""
    utc_naive = datetime(1970, 1, 1) + timedelta(milliseconds=b.start)
    try:
        if b.period in ("15m", "1h"):
            off = datetime.fromisoformat(b.label).utcoffset()
            return int(off.total_seconds() // 60) if off is not None else 0
        if b.period == "1d":
            local = datetime.fromisoformat(b.label)
        elif b.period == "1w":
            year, week = b.label.split("-W")
            local = datetime.fromisocalendar(int(year), int(week), 1)
        elif b.period == "1mo":
            local = datetime.strptime(b.label, "%Y-%m")
        else:
            local = datetime(int(b.label), 1, 1)
    except ValueError:
        return 0
    return round((local - utc_naive).total_seconds() / 60)


def bucket_line(b: Bucket, shift: bool) -> str:
    """One bucket as one line of line protocol; ``shift`` puts it at ``start + rev`` (VictoriaMetrics)."""
    tags = (f"rollups,source={_escape_key(b.source)},device={_escape_key(b.device)},"
            f"period={_escape_key(b.period)}")
    if b.currency:
        tags += f",currency={_escape_key(b.currency)}"
    fields = [f"{k}={int(getattr(b, k))}i" for k in _INT_FIELDS if getattr(b, k) is not None]
    fields += [f"{k}={float(getattr(b, k))!r}" for k in _FLOAT_FIELDS
               if getattr(b, k) is not None and math.isfinite(getattr(b, k))]
    fields.append(f"status={STATUS_CODES.get(b.status, 0)}i")
    fields.append(f"offset_min={_offset_min(b)}i")
    ts = b.start + min(b.rev, b.end - b.start - 1) if shift else b.start
    return f"{tags} {','.join(fields)} {ts}"


def bucket_from_fields(source: str, device: str, period: str, fields: dict) -> Bucket:
    from bus.rollup import label_of

    start = int(fields["start"])
    offset = timezone(timedelta(minutes=int(fields.get("offset_min") or 0)))
    row = {k: fields.get(k) for k in (*_INT_FIELDS, *_FLOAT_FIELDS)}
    row.update(source=source, device=device, period=period, currency=fields.get("currency"),
               status=STATUS_NAMES.get(int(fields.get("status") or 0), "open"),
               label=label_of(period, datetime.fromtimestamp(start / 1000, offset)))
    return from_row(row)


def reading_from_fields(source: str, device: str, ts: int, fields: dict) -> Reading:
    """A Reading from one point's fields (Flux pivot row or merged VictoriaMetrics samples)."""
    metrics = {k: float(fields[k]) for k in METRICS if fields.get(k) is not None}
    seq = fields.get("seq")
    quality = fields.get("quality")
    return Reading(source, device, ts, metrics, None if seq is None else int(seq),
                   float(fields.get("period_s") or 0.0),
                   QUALITY_NAMES.get(int(quality), "ok") if quality is not None else "ok")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status}: {(exc.body or exc.reason or '')!s:.300}"
    return str(exc) or type(exc).__name__
