"""A Shelly Pro 3EM emulator speaking the Gen2 HTTP RPC API (aiohttp).

Why: wattbus tests and the demo talk to the device through its real interface, never by skipping
the code that does.  This server answers the RPC methods the producer uses (and a few more) with
values from ``emulator_model``: counters integrate the powers, ``EMData`` keeps a minute database
with ``GetRecords`` blocks and chunked ``GetData`` (``keys``, ``next_record_ts``), digest auth works
like the firmware's (SHA-256, realm = device id, user ``admin``), and faults can be switched on.

Run it::

    python -m producers.shelly.emulator --port 8081 --role grid
    python -m producers.shelly.emulator --port 8082 --role solar --auth secret --faults http500:0.02

In a test::

    clock = FakeClock(1718964000)
    with EmulatedShelly(role="solar", clock=clock) as emu:   # started on a free loopback port
        ... emu.url ...; clock.advance(7200); emu.faults.arm("http500", 2); emu.reachable = False
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
import secrets
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
from aiohttp import web

from .emulator_model import EM1DATA_KEYS, EMDATA_KEYS, PHASES, HouseModel, Meter

log = logging.getLogger("wattbus.shelly.emulator")

FAULTS = ("drop", "timeout", "http500", "garbage", "missing", "missing_component", "auth")
# What the "missing" fault removes from any status object it answers.
MISSING_FIELDS = ("a_voltage", "b_current", "total_act_ret", "voltage", "total_act_ret_energy")
AUTH_FREE = ("Shelly.GetDeviceInfo",)  # per the firmware: readable without credentials
FAULT_KEY = web.RequestKey("fault", str)


class FakeClock:
    """Epoch seconds that move only when told to: ``clock()``, ``clock.advance(s)``, ``clock.set(t)``."""

    def __init__(self, start: float) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._t

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._t += seconds
            return self._t

    def set(self, t: float) -> None:
        with self._lock:
            self._t = float(t)


class SpeedClock:
    """Wall time that runs ``speed`` times faster from ``start`` (for demos of days in minutes)."""

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        self._t0, self._start, self._speed = time.time(), time.time() if start is None else start, speed

    def __call__(self) -> float:
        return self._start + (time.time() - self._t0) * self._speed

    def advance(self, seconds: float) -> None:
        """Jump ahead (a test's "two hours later")."""
        self._start += seconds


class Faults:
    """Fault switches: ``arm(name, n)`` fails the next n requests, ``set_rate(name, p)`` a fraction.

    ``method`` restricts a fault to one RPC method.  ``injected`` counts what was done.
    """

    def __init__(self, rates: dict[str, float] | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._armed: list[list[Any]] = []  # [name, remaining, method]
        self.rates: dict[str, float] = {}
        self._rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        for name, rate in (rates or {}).items():
            self.set_rate(name, rate)

    def arm(self, name: str, count: int = 1, method: str | None = None) -> None:
        _check_fault(name)
        with self._lock:
            self._armed.append([name, count, method])

    def set_rate(self, name: str, rate: float) -> None:
        _check_fault(name)
        with self._lock:
            self.rates[name] = rate

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
            self.rates.clear()

    def pick(self, method: str) -> str | None:
        with self._lock:
            for entry in self._armed:
                name, remaining, only = entry
                if remaining > 0 and (only is None or only == method):
                    entry[1] -= 1
                    self._armed = [e for e in self._armed if e[1] > 0]
                    self.injected[name] += 1
                    return name
            for name, rate in self.rates.items():
                if rate > 0 and self._rng.random() < rate:
                    self.injected[name] += 1
                    return name
        return None


def _check_fault(name: str) -> None:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")


def parse_faults(text: str) -> dict[str, float]:
    """``"timeout:0.01,http500:0.05,garbage"`` -> rates (a bare name means 0.05)."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rate = part.partition(":")
        _check_fault(name)
        rates[name] = float(rate) if rate else 0.05
    return rates


class DigestGuard:
    """Server side of RFC 7616 digest auth as the Gen2 firmware does it (SHA-256, qop=auth).

    A nonce stays valid for an hour and may be reused with an increasing ``nc`` (firmware 2.0+).
    """

    NONCE_TTL_S = 3600.0

    def __init__(self, realm: str, password: str) -> None:
        self.realm = realm
        self.ha1 = _sha256(f"admin:{realm}:{password}")
        self._nonces: dict[str, list[float]] = {}  # nonce -> [issued (monotonic), last nc]
        self._lock = threading.Lock()

    def challenge(self, stale: bool = False) -> str:
        nonce = secrets.token_hex(8)
        now = time.monotonic()
        with self._lock:
            self._nonces = {n: v for n, v in self._nonces.items() if now - v[0] < self.NONCE_TTL_S}
            self._nonces[nonce] = [now, 0]
        extra = ", stale=true" if stale else ""
        return f'Digest qop="auth", realm="{self.realm}", nonce="{nonce}", algorithm=SHA-256{extra}'

    def check(self, method: str, path_qs: str, header: str | None) -> bool:
        if not header or not header.lower().startswith("digest "):
            return False
        fields = urllib.request.parse_keqv_list(urllib.request.parse_http_list(header[7:]))
        try:
            nonce, nc = fields["nonce"], int(fields["nc"], 16)
            if (fields["username"] != "admin" or fields["realm"] != self.realm or fields["qop"] != "auth"
                    or fields.get("algorithm", "SHA-256").upper() != "SHA-256" or fields["uri"] != path_qs):
                return False
            expected = _sha256(":".join((self.ha1, nonce, fields["nc"], fields["cnonce"], "auth",
                                         _sha256(f"{method}:{fields['uri']}"))))
        except (KeyError, ValueError):
            return False
        with self._lock:
            entry = self._nonces.get(nonce)
            if entry is None or time.monotonic() - entry[0] > self.NONCE_TTL_S or nc <= entry[1]:
                return False
            if not secrets.compare_digest(expected, fields.get("response", "")):
                return False
            entry[1] = nc
        return True


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class RpcFailure(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class EmulatedShelly:
    """One emulated Pro 3EM: device state, the RPC methods, and an aiohttp server in a thread."""

    def __init__(self, *, role: str = "grid", profile: str = "triphase", password: str | None = None,
                 clock: Callable[[], float] | None = None, seed: int = 1, device_id: str | None = None,
                 faults: Faults | None = None, neutral: bool = True, keys_order: str = "csv",
                 data_chunk: int = 480, timeout_delay: float = 30.0, host: str = "127.0.0.1",
                 tz: str = "Europe/Brussels", pv_peak_w: float = 6000.0) -> None:
        if profile not in ("triphase", "monophase"):
            raise ValueError("profile must be triphase or monophase")
        self.role, self.profile, self.seed, self.host = role, profile, seed, host
        self.clock = clock or time.time
        mac = hashlib.blake2b(f"{seed}:{role}".encode(), digest_size=3).hexdigest().upper()
        self.mac = "FCE8C0" + mac
        self.device_id = device_id or f"shellypro3em-{self.mac.lower()}"
        self.password = password
        self.guard = DigestGuard(self.device_id, password) if password else None
        self.faults = faults or Faults(seed=seed)
        self.data_chunk, self.timeout_delay = data_chunk, timeout_delay
        self.reachable = True
        self.sys_time_synced = True
        self.errors: list[str] = []  # em:0 "errors", e.g. ["power_meter_failure"]
        self.phase_errors: dict[str, list[str]] = {}  # {"a": ["out_of_range:voltage"]}
        self.data_errors: list[str] = []  # emdata:0 "errors"
        self.requests: Counter[str] = Counter()
        self._boot = self.clock()
        self._lock = threading.RLock()
        self.meter = Meter(HouseModel(seed=seed, tz=tz, pv_peak_w=pv_peak_w), role, self._boot, neutral=neutral)
        keys = list(EMDATA_KEYS if profile == "triphase" else EM1DATA_KEYS)
        if keys_order == "shuffled":
            random.Random(seed).shuffle(keys)
        elif keys_order != "csv":
            raise ValueError("keys_order must be csv or shuffled")
        self.keys = keys
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- device state (thread safe: tests poke it while the server runs) -----------------------
    def _now(self) -> float:
        now = self.clock()
        self.meter.advance(now)
        return now

    def power_off(self) -> None:
        """The device loses power: unreachable, no counting, no records until ``power_on``."""
        with self._lock:
            self._now()
            self.meter.set_powered(False)

    def power_on(self) -> None:
        with self._lock:
            self._now()
            self.meter.set_powered(True)
            self._boot = self.clock()

    def reset_counters(self) -> None:
        """``EMData.ResetCounters``: counters to zero, records kept."""
        with self._lock:
            self._now()
            self.meter.reset_counters()

    def delete_all_data(self) -> None:
        """``EMData.DeleteAllData``: records deleted and counters nullified."""
        with self._lock:
            self._now()
            self.meter.delete_all_data()

    def replace_device(self, device_id: str | None = None) -> None:
        """Another unit at the same address: new id, its own counters, an empty database."""
        with self._lock:
            now = self._now()
            self.seed += 1000
            mac = hashlib.blake2b(f"{self.seed}:{self.role}".encode(), digest_size=3).hexdigest().upper()
            self.mac = "FCE8C0" + mac
            self.device_id = device_id or f"shellypro3em-{self.mac.lower()}"
            if self.password:
                self.guard = DigestGuard(self.device_id, self.password)
            house = self.meter.house
            self.meter = Meter(house, self.role, now, neutral=self.meter.neutral,
                               counters=([5000.0, 6000.0, 7000.0], [10.0, 20.0, 30.0]))

    def counters(self) -> dict[str, float]:
        """The exact (unrounded) counters now, in the device's own field names."""
        with self._lock:
            self._now()
            out = {}
            for k, x in enumerate(PHASES):
                out[f"{x}_total_act_energy"] = self.meter.imp[k]
                out[f"{x}_total_act_ret_energy"] = self.meter.exp[k]
            out["total_act"] = sum(self.meter.imp)
            out["total_act_ret"] = sum(self.meter.exp)
            return out

    # -- status objects ------------------------------------------------------------------------
    def device_info(self) -> dict[str, Any]:
        return {"name": None, "id": self.device_id, "mac": self.mac, "slot": 0, "model": "SPEM-003CEBEU",
                "gen": 2, "fw_id": "20241011-114455/1.4.4-g6d2a586", "ver": "1.4.4", "app": "Pro3EM",
                "auth_en": self.password is not None, "auth_domain": self.device_id if self.password else None,
                "profile": self.profile}

    def _sys(self, now: float) -> dict[str, Any]:
        local = datetime.fromtimestamp(now, self.meter.house.tz)
        synced = self.sys_time_synced
        return {"mac": self.mac, "restart_required": False, "time": local.strftime("%H:%M") if synced else None,
                "unixtime": int(now) if synced else None, "uptime": int(now - self._boot),
                "ram_size": 246532, "ram_free": 118000, "fs_size": 524288, "fs_free": 192512,
                "cfg_rev": 12, "kvs_rev": 0, "schedule_rev": 0, "webhook_rev": 0, "available_updates": {}}

    def _em(self, now: float) -> dict[str, Any]:
        s = self.meter.slot(now)
        out: dict[str, Any] = {"id": 0}
        for k, x in enumerate(PHASES):
            sk = s.s(k)
            out.update({f"{x}_current": round(s.i(k), 3), f"{x}_voltage": round(s.v[k], 1),
                        f"{x}_act_power": round(s.p[k], 1), f"{x}_aprt_power": round(sk, 1),
                        f"{x}_pf": round(abs(s.p[k]) / sk, 2) if sk > 0.5 else 0.0, f"{x}_freq": round(s.f, 1)})
            if self.phase_errors.get(x):
                out[f"{x}_errors"] = list(self.phase_errors[x])
        out.update({"n_current": round(s.neutral(), 3) if self.meter.neutral else None,
                    "total_current": round(sum(s.i(k) for k in range(3)), 3),
                    "total_act_power": round(sum(s.p), 3),
                    "total_aprt_power": round(sum(s.s(k) for k in range(3)), 3),
                    "user_calibrated_phase": []})
        if self.errors:
            out["errors"] = list(self.errors)
        return out

    def _emdata(self) -> dict[str, Any]:
        m = self.meter
        out: dict[str, Any] = {"id": 0}
        for k, x in enumerate(PHASES):
            out[f"{x}_total_act_energy"] = round(m.imp[k], 2)
            out[f"{x}_total_act_ret_energy"] = round(m.exp[k], 2)
        out["total_act"] = round(sum(m.imp), 2)
        out["total_act_ret"] = round(sum(m.exp), 2)
        if self.data_errors:
            out["errors"] = list(self.data_errors)
        return out

    def _em1(self, now: float, ch: int) -> dict[str, Any]:
        s = self.meter.slot(now)
        sk = s.s(ch)
        out = {"id": ch, "current": round(s.i(ch), 3), "voltage": round(s.v[ch], 1),
               "act_power": round(s.p[ch], 1), "aprt_power": round(sk, 1),
               "pf": round(abs(s.p[ch]) / sk, 2) if sk > 0.5 else 0.0, "freq": round(s.f, 1),
               "calibration": "factory"}
        x = PHASES[ch]
        if self.phase_errors.get(x):
            out["errors"] = list(self.phase_errors[x])
        if self.errors:
            out["errors"] = out.get("errors", []) + list(self.errors)
        return out

    def _em1data(self, ch: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": ch, "total_act_energy": round(self.meter.imp[ch], 2),
                               "total_act_ret_energy": round(self.meter.exp[ch], 2)}
        if self.data_errors:
            out["errors"] = list(self.data_errors)
        return out

    def _full_status(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"ble": {}, "cloud": {"connected": False}, "eth": {"ip": None},
                               "modbus": {}, "mqtt": {"connected": False}, "sys": self._sys(now),
                               "temperature:0": {"id": 0, "tC": 46.3, "tF": 115.3},
                               "wifi": {"sta_ip": self.host, "status": "got ip", "ssid": "home", "rssi": -58},
                               "ws": {"connected": False}}
        if self.profile == "triphase":
            out["em:0"] = self._em(now)
            out["emdata:0"] = self._emdata()
        else:
            for ch in range(3):
                out[f"em1:{ch}"] = self._em1(now, ch)
                out[f"em1data:{ch}"] = self._em1data(ch)
        return out

    # -- records ---------------------------------------------------------------------------------
    def _row_values(self, row: dict[str, float], ch: int | None) -> list[float]:
        if ch is None:
            return [row[k] for k in self.keys]
        x = PHASES[ch]
        return [row[f"{x}_{k}"] for k in self.keys]

    def _get_records(self, ch: int | None, params: dict[str, Any]) -> dict[str, Any]:
        start = _int_param(params, "ts", 0)
        blocks = [{"ts": b.ts, "period": b.period, "records": len(b.rows)}
                  for b in self.meter.blocks if b.end > start]
        return {"data_blocks": blocks}

    def _get_data(self, ch: int | None, params: dict[str, Any]) -> dict[str, Any]:
        start = _int_param(params, "ts", None)
        if start is None:
            raise RpcFailure(400, -103, "Missing required argument 'ts'!")
        end = _int_param(params, "end_ts", None)
        rows = self.meter.records(start, end)
        page, rest = rows[: self.data_chunk], rows[self.data_chunk:]
        data: list[dict[str, Any]] = []
        for ts, period, row in page:
            last = data[-1] if data else None
            if last is not None and last["period"] == period and last["ts"] + period * len(last["values"]) == ts:
                last["values"].append(self._row_values(row, ch))
            else:
                data.append({"ts": ts, "period": period, "values": [self._row_values(row, ch)]})
        out: dict[str, Any] = {}
        if params.get("add_keys", True) not in (False, "false", 0):
            out["keys"] = list(self.keys)
        out["data"] = data
        if rest:
            out["next_record_ts"] = rest[0][0]
        return out

    # -- RPC dispatch ----------------------------------------------------------------------------
    def rpc(self, method: str, params: dict[str, Any]) -> Any:
        """Answer one RPC call (no transport, no faults): the table below is the device's API."""
        with self._lock:
            now = self._now()
            tri = self.profile == "triphase"
            ns, _, verb = method.partition(".")
            if method == "Shelly.GetDeviceInfo":
                return self.device_info()
            if method == "Shelly.GetStatus":
                return self._full_status(now)
            if method == "Sys.GetStatus":
                return self._sys(now)
            if ns in ("EM", "EMData") and tri or ns in ("EM1", "EM1Data") and not tri:
                cid = _int_param(params, "id", None)
                if cid is None:
                    raise RpcFailure(400, -103, "Missing required argument 'id'!")
                limit = 1 if tri else 3
                if not 0 <= cid < limit:
                    raise RpcFailure(404, -105, f"Argument 'id', value {cid} not found!")
                ch = None if tri else cid
                handlers: dict[tuple[str, str], Callable[[], Any]] = {
                    ("EM", "GetStatus"): lambda: self._em(now),
                    ("EMData", "GetStatus"): self._emdata,
                    ("EM1", "GetStatus"): lambda: self._em1(now, cid),
                    ("EM1Data", "GetStatus"): lambda: self._em1data(cid),
                    (ns, "GetRecords"): lambda: self._get_records(ch, params),
                    (ns, "GetData"): lambda: self._get_data(ch, params),
                    (ns, "DeleteAllData"): lambda: (self.meter.delete_all_data(), None)[1],
                    (ns, "ResetCounters"): lambda: (self.meter.reset_counters(), None)[1],
                }
                if ns in ("EMData", "EM1Data") or verb == "GetStatus":
                    handler = handlers.get((ns, verb))
                    if handler is not None:
                        return handler()
            raise RpcFailure(404, 404, f"No handler for {method}")

    # -- HTTP ------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/rpc/{method}", self._handle_method)
        app.router.add_post("/rpc", self._handle_frame)
        app.router.add_get("/shelly", self._handle_shelly)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        method = request.match_info.get("method", "") if request.path != "/rpc" else "(frame)"
        self.requests[method] += 1
        if not self.reachable or not self.meter.powered:
            return _drop(request)
        fault = self.faults.pick(method)
        if fault == "drop":
            return _drop(request)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_delay)
        if method not in AUTH_FREE and request.path != "/shelly":
            if fault == "auth" or (self.guard and not self.guard.check(request.method, request.path_qs,
                                                                        request.headers.get("Authorization"))):
                guard = self.guard or DigestGuard(self.device_id, secrets.token_hex(8))
                return web.json_response({"code": 401, "message": "Unauthorized"}, status=401,
                                         headers={"WWW-Authenticate": guard.challenge(stale=fault == "auth")})
        if fault == "http500":
            return web.json_response({"code": -1, "message": "Internal error"}, status=500)
        if fault == "garbage":
            return web.Response(body=b'{"id":0,"a_current":4.0,"a_vol\x00\xff<html>',
                                content_type="application/json")
        request[FAULT_KEY] = fault or ""
        return await handler(request)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {k: _query_value(v) for k, v in request.query.items()}
        if request.method == "POST" and request.can_read_body:
            try:
                body = orjson.loads(await request.read() or b"{}")
            except orjson.JSONDecodeError:
                raise RpcFailure(400, -103, "Invalid JSON") from None
            if isinstance(body, dict):
                params.update(body)
        return params

    async def _handle_method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            result = self.rpc(method, await self._params(request))
        except RpcFailure as exc:
            return web.json_response({"code": exc.code, "message": exc.message}, status=exc.status)
        return _json(_apply_data_fault(request.get(FAULT_KEY), method, result))

    async def _handle_frame(self, request: web.Request) -> web.Response:
        try:
            frame = orjson.loads(await request.read())
            method, params, rid = frame["method"], frame.get("params") or {}, frame.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"code": -103, "message": "Bad frame"}, status=400)
        try:
            result = self.rpc(method, params)
        except RpcFailure as exc:
            return _json({"id": rid, "src": self.device_id, "error": {"code": exc.code, "message": exc.message}})
        result = _apply_data_fault(request.get(FAULT_KEY), method, result)
        return _json({"id": rid, "src": self.device_id, "result": result})

    async def _handle_shelly(self, request: web.Request) -> web.Response:
        return _json(self.device_info())

    # -- server lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("emulator not started")
        return f"http://{self.host}:{self.port}"

    async def serve(self, port: int = 0) -> int:
        """Start serving on the running loop; returns the bound port."""
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self, port: int = 0) -> "EmulatedShelly":
        """Serve from a background thread (for tests); returns self once listening."""
        ready = threading.Event()
        errors: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(port))
            except BaseException as exc:  # reported to the caller of start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.shutdown())
            pending = asyncio.all_tasks(loop)  # e.g. a handler stalled by a "timeout" fault
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=main, name=f"shelly-emulator-{self.role}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> "EmulatedShelly":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drop(request: web.Request) -> web.StreamResponse:
    """Unreachable: close the connection without an answer, like a device that went away."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError()


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def _apply_data_fault(fault: str | None, method: str, result: Any) -> Any:
    if fault == "missing" and isinstance(result, dict):
        return _strip(result)
    if fault == "missing_component" and isinstance(result, dict):
        if method == "Shelly.GetStatus":
            return {k: v for k, v in result.items() if not k.startswith(("em:", "emdata:", "em1:", "em1data:"))}
        return {"id": result.get("id", 0)}
    return result


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: (_strip(v) if isinstance(v, dict) else v) for k, v in obj.items() if k not in MISSING_FIELDS}


def _query_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _int_param(params: dict[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name, default)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RpcFailure(400, -103, f"Invalid argument '{name}'!") from None


# -- command line --------------------------------------------------------------------------------

def _parse_start(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        dt = datetime.fromisoformat(text)
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wattbus emulate shelly",
                                description="Emulate a Shelly Pro 3EM (Gen2 HTTP RPC) for tests and the demo.")
    p.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--role", choices=("grid", "solar"), default="grid",
                   help="grid: a house's mains (imports, exports at noon); solar: a PV inverter's feed")
    p.add_argument("--profile", choices=("triphase", "monophase"), default="triphase")
    p.add_argument("--auth", metavar="PASSWORD", help="enable digest auth with this password (user admin)")
    p.add_argument("--auth-file", metavar="FILE", help="read the password from FILE instead")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help=f"comma list name[:rate], names: {', '.join(FAULTS)} (e.g. http500:0.05,timeout:0.01)")
    p.add_argument("--timeout-delay", type=float, default=30.0, help="seconds a 'timeout' fault stalls")
    p.add_argument("--seed", type=int, default=1, help="same seed = same house: a grid and a solar emulator agree")
    p.add_argument("--device-id", help="device id (default shellypro3em-<mac>)")
    p.add_argument("--start", type=_parse_start, help="emulated start time (epoch s or ISO 8601; default now)")
    p.add_argument("--speed", type=float, default=1.0, help="emulated seconds per real second (default 1)")
    p.add_argument("--no-neutral", action="store_true", help="no neutral CT: n_current is null")
    p.add_argument("--timezone", default="Europe/Brussels", help="the house's timezone (daily profile)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``wattbus emulate shelly ...``: serve until SIGTERM/SIGINT, then exit 0."""
    args = build_parser().parse_args(argv)
    password = args.auth
    if args.auth_file:
        with open(args.auth_file, encoding="utf-8") as fh:
            password = fh.read().strip()
    try:
        faults = Faults(parse_faults(args.faults), seed=args.seed)
    except ValueError as exc:
        print(f"wattbus emulate shelly: --faults: {exc}", file=sys.stderr)
        return 2
    clock = SpeedClock(args.start, args.speed) if (args.start is not None or args.speed != 1.0) else time.time
    emu = EmulatedShelly(role=args.role, profile=args.profile, password=password, clock=clock, seed=args.seed,
                         device_id=args.device_id, faults=faults, neutral=not args.no_neutral,
                         timeout_delay=args.timeout_delay, host=args.host, tz=args.timezone)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        port = await emu.serve(args.port)
        print(f"shelly emulator {emu.device_id} ({args.role}, {args.profile}"
              f"{', auth' if password else ''}) listening on http://{args.host}:{port}", flush=True)
        await stop.wait()
        await emu.shutdown()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"wattbus emulate shelly: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
