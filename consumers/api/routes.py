"""The REST routes of DESIGN.md's table, as typed Litestar handlers (the OpenAPI document comes from these).

Handlers read the bus state (``LiveState``) directly and history through ``History`` (worker threads).
Every parameter problem raises ``BadParameter``; ``app.py`` turns it into a problem document.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from bus import topics
from bus.consumer import ConsumerContext
from bus.envelope import NAME_SCHEMA_PATTERN, Reading
from bus.rollup import SITE_SOURCE, Period
from consumers.api import models as m
from consumers.api.history import History
from consumers.api.live import DeviceLive, Feed, LiveState
from consumers.api.seed import gethpc_body
from consumers.api.timerange import (DEFAULT_SPAN_MS, BadParameter, check_buckets_span, check_readings_span,
                                     local_iso, parse_day, parse_step, resolve_range)
from schemas import METRICS

SSE_KEEPALIVE_S = 15.0
CONFIG_ANSWER_WAIT_S = 3.0

NameParam = Annotated[str, Parameter(pattern=NAME_SCHEMA_PATTERN, max_length=64)]
OptName = Annotated[str | None, Parameter(pattern=NAME_SCHEMA_PATTERN, max_length=64)]
TimeParam = Annotated[str | None, Parameter(
    max_length=40, description="local date (2024-12-14) or time (2024-12-14T17:58) in site.timezone, "
                               "or epoch milliseconds")]
PROBLEM = ResponseSpec(m.Problem, description="the reason, as application/problem+json",
                       media_type="application/problem+json", generate_examples=False)
PROBLEMS = {400: PROBLEM, 404: PROBLEM, 503: PROBLEM}


@dataclass
class Services:
    """Everything the handlers share; one instance in ``app.state.services``."""

    ctx: ConsumerContext
    cfg: Any
    live: LiveState
    feed: Feed
    history: History
    token: str | None
    roles: dict[str, str] = field(default_factory=dict)
    """``source/device`` or process name -> role, from the producers' config."""

    @property
    def tz(self):
        return self.ctx.tz


def _svc(state: State) -> Services:
    return state.services


def _now_ms() -> int:
    return int(time.time() * 1000)


def _role(s: Services, dev: DeviceLive | None, source: str, device: str) -> str | None:
    role = s.roles.get(f"{source}/{device}")
    if role is None and dev is not None and dev.process:
        role = s.roles.get(dev.process)
    return role


async def _known(s: Services, source: str, device: str) -> tuple[DeviceLive | None, int | None]:
    """(live state, newest stored ts) of a device; 404 when neither the bus nor the store knows it."""
    dev = s.live.device(source, device)
    stored = next((ts for src, d, ts in await s.history.devices() if (src, d) == (source, device)), None)
    if dev is None and stored is None and s.history.can_list:
        raise BadParameter("device", f"unknown device {source}/{device}: no reading seen on the bus or in "
                                     "the store (see /api/v1/devices)", status=404)
    return dev, stored


def _row(r: Reading) -> m.ReadingRow:
    return m.ReadingRow(ts=r.ts, metrics=r.metrics, period_s=r.period_s, quality=r.quality, seq=r.seq)


# -- seed 000 -------------------------------------------------------------------------------------------
@get("/gethpc", responses={404: PROBLEM}, summary="The latest hhpc reading in seed 000's shape",
     description="kW, kvar, V, A and Wh of the configured hhpc device's latest reading, local time.")
async def gethpc(state: State) -> Response[m.Gethpc]:
    s = _svc(state)
    device = s.cfg.hhpc_device or next((d.device for d in s.live.all_devices() if d.source == "hhpc"), None)
    dev = s.live.device("hhpc", device) if device else None
    reading = dev.latest if dev else None
    if reading is None and device:
        _, stored = await _known(s, "hhpc", device)
        reading = await s.history.latest("hhpc", device, stored) if stored is not None else None
    if reading is None:
        raise BadParameter("device", f"no reading of hhpc device {device or '(none configured)'} yet",
                           status=404)
    return Response(gethpc_body(reading, s.tz), media_type="application/json")


# -- devices --------------------------------------------------------------------------------------------
@get("/devices", summary="Every device seen on the bus or in the store")
async def devices(state: State) -> list[m.DeviceInfo]:
    s = _svc(state)
    live = {(d.source, d.device): d for d in s.live.all_devices()}
    stored = {(src, dev): ts for src, dev, ts in await s.history.devices()}
    out = []
    for key in sorted(set(live) | set(stored)):
        d = live.get(key)
        times = [t for t in (d.last_ts if d else None, stored.get(key)) if t is not None]
        last = max(times) if times else None
        out.append(m.DeviceInfo(
            source=key[0], device=key[1], role=_role(s, d, *key), status=d.status if d else None,
            last_ts=last, last_time=local_iso(last, s.tz) if last is not None else None,
            process=d.process if d else None,
            power_w=d.latest.metrics.get("power_w") if d and d.latest else None))
    return out


@get("/devices/{source:str}/{device:str}/latest", responses=PROBLEMS, summary="A device's latest reading")
async def latest(state: State, source: NameParam, device: NameParam) -> m.LatestReading:
    s = _svc(state)
    dev, stored = await _known(s, source, device)
    reading, origin = (dev.latest, "bus") if dev and dev.latest else (None, "store")
    if reading is None and stored is not None:
        reading = await s.history.latest(source, device, stored)
    if reading is None:
        raise BadParameter("device", f"{source}/{device} has sent no values yet", status=404)
    return m.LatestReading(
        source=source, device=device, ts=reading.ts, time=local_iso(reading.ts, s.tz),
        period_s=reading.period_s, quality=reading.quality, seq=reading.seq, metrics=reading.metrics,
        units={k: METRICS[k].unit for k in reading.metrics if k in METRICS},
        status=dev.status if dev else None, age_s=round(max(0.0, time.time() - reading.ts / 1000), 3),
        origin=origin)


@get("/devices/{source:str}/{device:str}/readings", responses=PROBLEMS,
     summary="A device's readings in a range, optionally downsampled",
     description="`to` is exclusive; without `step` at most 7 days of raw readings. With `step` (60s, 5m, 1h, "
                 "1d) each slot averages gauges, sums interval energies and keeps the last counter value.")
async def readings(state: State, source: NameParam, device: NameParam,
                   from_: Annotated[str | None, Parameter(query="from", max_length=40)] = None,
                   to: TimeParam = None,
                   step: Annotated[str | None, Parameter(max_length=20, description="60s, 5m, 1h, 1d")] = None,
                   ) -> m.ReadingsPage:
    s = _svc(state)
    step_ms = parse_step(step)
    start, end = resolve_range(from_, to, s.tz, _now_ms(), 86_400_000)
    check_readings_span(start, end, step_ms)
    await _known(s, source, device)
    got = await s.history.readings(source, device, start, end, step_ms)
    return m.ReadingsPage(source=source, device=device, start=start, end=end,
                          step_s=step_ms / 1000 if step_ms else None, timezone=s.tz.key, count=len(got),
                          readings=[_row(r) for r in got])


# -- energy buckets -------------------------------------------------------------------------------------
async def _buckets(s: Services, source: str, device: str, period: str, from_: str | None,
                   to: str | None) -> m.EnergyPage:
    start, end = resolve_range(from_, to, s.tz, _now_ms(), DEFAULT_SPAN_MS[period])
    check_buckets_span(period, start, end)
    got = await s.history.buckets(source, device, period, start, end)
    if not got and source != SITE_SOURCE:
        await _known(s, source, device)
    return m.EnergyPage(source=source, device=device, period=period, start=start, end=end,
                        timezone=s.tz.key, buckets=got)


@get("/energy/{period:str}", responses=PROBLEMS, summary="A device's energy buckets of one period",
     description="Buckets of the aggregate consumer (`rollups`), local calendar in site.timezone. "
                 "`source` may be left out when the device name is unique.")
async def energy(state: State, period: Period, device: NameParam, source: OptName = None,
                 from_: Annotated[str | None, Parameter(query="from", max_length=40)] = None,
                 to: TimeParam = None) -> m.EnergyPage:
    s = _svc(state)
    if source is None:
        candidates = sorted({src for src, d in _all_device_keys(s) | {(src, d) for src, d, _ in
                                                                       await s.history.devices()}
                             if d == device})
        if len(candidates) != 1:
            raise BadParameter("source", f"device {device!r} is " + (
                f"known under several sources ({', '.join(candidates)}): name one" if candidates
                else "unknown (see /api/v1/devices)"), status=400 if candidates else 404)
        source = candidates[0]
    return await _buckets(s, source, device, period, from_, to)


def _all_device_keys(s: Services) -> set[tuple[str, str]]:
    keys = {(d.source, d.device) for d in s.live.all_devices()}
    with s.live.lock:
        keys |= {(src, d) for src, d, _ in s.live.buckets}
    return keys


def _site_name(s: Services) -> str | None:
    if s.cfg.site:
        return s.cfg.site
    with s.live.lock:
        return next((d for src, d, _ in s.live.buckets if src == SITE_SOURCE), None)


@get("/site/{period:str}", responses=PROBLEMS, summary="The site balance: grid, solar, home, cost, profit")
async def site(state: State, period: Period,
               from_: Annotated[str | None, Parameter(query="from", max_length=40)] = None,
               to: TimeParam = None) -> m.EnergyPage:
    s = _svc(state)
    name = _site_name(s)
    if name is None:
        raise BadParameter("site", "no site balance yet: the aggregate consumer publishes it once config "
                                   "names the grid and solar devices", status=404)
    return await _buckets(s, SITE_SOURCE, name, period, from_, to)


@get("/site", summary="What the dashboard needs: time zone, site name, grid and solar devices")
async def site_info(state: State) -> m.SiteInfo:
    s = _svc(state)
    grid, solar = _site_devices(s)
    name = _site_name(s)
    hhpc = s.cfg.hhpc_device or next((d.device for d in s.live.all_devices() if d.source == "hhpc"), None)
    return m.SiteInfo(timezone=s.tz.key, now=_now_ms(), site=name, grid=grid, solar=solar, hhpc_device=hhpc,
                      writable=s.token is not None)


def _site_devices(s: Services) -> tuple[list[str], list[str]]:
    if s.cfg.grid or s.cfg.solar:
        return list(s.cfg.grid), list(s.cfg.solar)
    grid, solar = [], []
    for d in s.live.all_devices():
        key = f"{d.source}/{d.device}"
        role = _role(s, d, d.source, d.device)
        if d.source == "sim":  # simulated households have their own head-end page
            continue
        if role == "grid":
            grid.append(key)
        elif role == "solar":
            solar.append(key)
    return sorted(grid), sorted(solar)


# -- processes ------------------------------------------------------------------------------------------
@get("/processes", summary="Every wattbus process: status, latest health, dead letters")
async def processes(state: State) -> list[m.ProcessInfo]:
    s = _svc(state)
    app = s.ctx.app
    seen = {p.name: p for p in s.live.all_processes()}
    now = time.time()
    out = []
    for name in sorted(set(seen) | set(app.producers) | set(app.consumers)):
        p = seen.get(name)
        kind = "producer" if name in app.producers else "consumer" if name in app.consumers else None
        pcfg = app.producers.get(name) or app.consumers.get(name)
        health = p.health if p else None
        counters = health.get("counters") if isinstance(health, dict) else None
        dead = counters.get("dead_letters", 0) if isinstance(counters, dict) else 0
        out.append(m.ProcessInfo(
            name=name, kind=kind or (health.get("kind") if isinstance(health, dict) else None),
            type=pcfg.type if pcfg else None, configured=pcfg is not None,
            status=p.status if p and p.status in ("online", "offline") else None, health=health,
            health_age_s=round(now - p.health_received, 1) if p and p.health_received else None,
            dead_letters=int(dead) if isinstance(dead, (int, float)) else 0,
            dlq_seen=p.dlq_seen if p else 0, dlq_last_reason=p.dlq_last_reason if p else None,
            dlq_last_ts=p.dlq_last_ts if p else None))
    return out


# -- the sim meters' head end (seed 004) ----------------------------------------------------------------
def _heartbeat(s: Services, serial: str, doc: dict[str, Any] | None, received: float | None) -> m.Heartbeat:
    doc = doc or {}
    dev = s.live.device("sim", serial)

    def num(key: str, kind: type) -> Any:
        v = doc.get(key)
        return v if isinstance(v, kind) and not isinstance(v, bool) else None

    return m.Heartbeat(serial=serial, status=dev.status if dev else None,
                       received_age_s=round(time.time() - received, 1) if received else None,
                       ts=num("ts", int), uptime_s=num("uptime_s", (int, float)), sim_time=num("sim_time", int),
                       last_reading_ts=num("last_reading_ts", int), upload=num("upload", str),
                       pending=num("pending", int), energy_import_wh=num("energy_import_wh", (int, float)),
                       energy_export_wh=num("energy_export_wh", (int, float)))


def _meters(s: Services) -> dict[str, m.MeterInfo]:
    out: dict[str, m.MeterInfo] = {}
    meters = {mt.serial: mt for mt in s.live.all_meters()}
    sims = {d.device: d for d in s.live.all_devices() if d.source == "sim"}
    for serial in sorted(set(meters) | set(sims)):
        mt, dev = meters.get(serial), sims.get(serial)
        config = mt.config.get("config") if mt and isinstance(mt.config, dict) else None
        out[serial] = m.MeterInfo(
            serial=serial, status=dev.status if dev else None,
            config=config if isinstance(config, dict) else None,
            heartbeat=_heartbeat(s, serial, mt.heartbeat, mt.heartbeat_received) if mt and mt.heartbeat else None,
            last_reading_ts=dev.last_ts if dev else None)
    return out


@get("/meters", summary="The simulated meters: status, config, last heartbeat")
async def meters(state: State) -> list[m.MeterInfo]:
    return list(_meters(_svc(state)).values())


@get("/heartbeats", summary="The latest heartbeat of every simulated meter")
async def heartbeats(state: State) -> list[m.Heartbeat]:
    return [mi.heartbeat for mi in _meters(_svc(state)).values() if mi.heartbeat is not None]


@get("/meter", responses=PROBLEMS, summary="One simulated meter, and with `day` its readings of that day")
async def meter(state: State, serial: NameParam,
                day: Annotated[str | None, Parameter(max_length=10, description="local date, 2024-06-01")] = None,
                ) -> m.MeterDetail:
    s = _svc(state)
    info = _meters(s).get(serial)
    if info is None:
        stored = {d for src, d, _ in await s.history.devices() if src == "sim"}
        if serial not in stored:
            raise BadParameter("serial", f"unknown meter {serial!r} (see /api/v1/meters)", status=404)
        info = m.MeterInfo(serial=serial, status=None, config=None, heartbeat=None, last_reading_ts=None)
    if day is None:
        return m.MeterDetail(meter=info, day=None)
    d, start, end = parse_day("day", day, s.tz, _now_ms())
    # the reading before the day starts the day's counter difference
    got = await s.history.readings("sim", serial, start - 86_400_000, end, None)
    before = [r for r in got if r.ts < start]
    inside = [r for r in got if r.ts >= start]

    def diff(key: str) -> float | None:
        values = [r.metrics[key] for r in ([before[-1]] if before else []) + inside if key in r.metrics]
        return round(values[-1] - values[0], 3) if len(values) >= 2 else None

    return m.MeterDetail(meter=info, day=m.MeterDay(day=d.isoformat(), start=start, end=end,
                                                    import_wh=diff("energy_import_wh"),
                                                    export_wh=diff("energy_export_wh"),
                                                    readings=[_row(r) for r in inside]))


# -- a write route: remote config of a simulated meter (token required) ---------------------------------
def require_token(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Write routes need ``Authorization: Bearer <token>``, the token read from ``token_file`` at start."""
    token = connection.app.state.services.token
    if token is None:
        raise PermissionDeniedException("write routes are disabled: set `token_file` in [consumer.api]")
    given = connection.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise NotAuthorizedException("this route needs the API token: Authorization: Bearer <token>")


@post("/meter/config", responses={400: PROBLEM, 401: PROBLEM, 403: PROBLEM, 404: PROBLEM}, status_code=200,
      guards=[require_token],
      summary="Change a simulated meter's config (needs the API token)",
      description="Sends the JSON object to `sim/{serial}/config/set` and waits up to 3 s for the meter's "
                  "answer. Needs `Authorization: Bearer <token>` where the token is the content of the "
                  "configured `token_file`.")
async def meter_config(state: State, serial: NameParam, data: dict[str, Any]) -> m.ConfigAnswer:
    s = _svc(state)
    if serial not in _meters(s):
        raise BadParameter("serial", f"unknown meter {serial!r} (see /api/v1/meters)", status=404)
    if len(msgspec.json.encode(data)) > 4096:
        raise BadParameter("body", "a config change is at most 4096 bytes of JSON")
    answered = s.live.expect_config(serial)
    s.ctx.publish(topics.device_config_set("sim", serial), data)
    s.ctx.log.info("meter %s: config change sent: %s", serial, data)
    ok = await asyncio.get_running_loop().run_in_executor(None, answered.wait, CONFIG_ANSWER_WAIT_S)
    mt = next((x for x in s.live.all_meters() if x.serial == serial), None)
    return m.ConfigAnswer(serial=serial, sent=data, answered=ok, answer=mt.config if ok and mt else None)


# -- the live feed --------------------------------------------------------------------------------------
@get("/live", summary="Server-sent events: reading, bucket, status and health",
     description="Events `reading` (a device's newest reading, at most one per device per bus batch), "
                 "`bucket` (an aggregate bucket from agg/#), `status` (a device or process going online or "
                 "offline) and `health` (a process's health document). Filter with `source`/`device` and "
                 "`events=reading,status`.")
async def live(state: State, request: Request, source: OptName = None, device: OptName = None,
               events: Annotated[str | None, Parameter(max_length=100)] = None) -> ServerSentEvent:
    s = _svc(state)
    wanted = {e.strip() for e in events.split(",")} if events else None
    if wanted and not wanted <= {"reading", "bucket", "status", "health"}:
        raise BadParameter("events", f"expected a comma-separated list of reading, bucket, status, health; "
                                     f"got {events!r}")
    q = s.feed.attach()
    stopping = s.ctx.stopping

    def matches(data: bytes) -> bool:
        if source is None and device is None:
            return True
        doc = msgspec.json.decode(data)
        return (source is None or doc.get("source") == source) and (device is None or doc.get("device") == device)

    async def stream():
        try:
            yield ServerSentEventMessage(data=None, comment="wattbus live feed", retry=3000)
            while not stopping.is_set():
                try:
                    event, data = await asyncio.wait_for(q.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if time.monotonic() - last[0] > SSE_KEEPALIVE_S:
                        last[0] = time.monotonic()
                        yield ServerSentEventMessage(data=None, comment="keepalive")
                    continue
                if (wanted is None or event in wanted) and matches(data):
                    last[0] = time.monotonic()
                    yield ServerSentEventMessage(event=event, data=data.decode())
        finally:
            s.feed.detach(q)

    last = [time.monotonic()]
    return ServerSentEvent(stream(), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


ROUTES = [gethpc, devices, latest, readings, energy, site, site_info, processes, meters, heartbeats, meter,
          meter_config, live]
