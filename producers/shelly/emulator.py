"""A Shelly Pro 3EM emulator speaking the Gen2 HTTP RPC API (aiohttp): the device behind its HTTP server.

Why: wattbus tests and the demo talk to the device through its real interface, never by skipping the code
that does. The device and its RPC method table are ``emulator_device``; this module adds what the network
sees: ``/rpc/<method>`` (GET/POST), ``/rpc`` frames and ``/shelly``, digest auth like the firmware's
(SHA-256, realm = device id, user ``admin``), reachability, and the faults of ``emulator_faults``.

Run it (``wattbus emulate shelly``)::

    wattbus emulate shelly --port 8081 --role grid
    wattbus emulate shelly --port 8082 --role solar --auth-file pw.txt --faults http500:0.02

In a test::

    clock = EmulatedClock(1718964000)                         # bus.clock: stands still until advanced
    with EmulatedShelly(role="solar", clock=clock) as emu:   # started on a free loopback port
        ... emu.url ...; clock.advance(7200); emu.faults.arm("http500", 2); emu.reachable = False
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
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

from bus.clock import EmulatedClock, HostClock
from bus.secrets import SecretError, read_secret

from .emulator_device import RpcFailure, ShellyDevice
from .emulator_faults import FAULTS, Faults, apply_data_fault, parse_faults

log = logging.getLogger("wattbus.shelly.emulator")

AUTH_FREE = ("Shelly.GetDeviceInfo",)  # per the firmware: readable without credentials
FAULT_KEY = web.RequestKey("fault", str)


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



class EmulatedShelly(ShellyDevice):
    """One emulated Pro 3EM served over HTTP from a background thread (or the caller's event loop)."""

    def __init__(self, *, faults: Faults | None = None, timeout_delay: float = 30.0, **device: Any) -> None:
        super().__init__(**device)
        self.guard = DigestGuard(self.device_id, self.password) if self.password else None
        self.faults = faults or Faults(seed=self.seed)
        self.timeout_delay = timeout_delay
        self.reachable = True
        self.requests: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def replace_device(self, device_id: str | None = None) -> None:
        super().replace_device(device_id)
        if self.password:
            self.guard = DigestGuard(self.device_id, self.password)

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
        return _json(apply_data_fault(request.get(FAULT_KEY), method, result))

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
        result = apply_data_fault(request.get(FAULT_KEY), method, result)
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


def _query_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text



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
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--auth-file", metavar="FILE", help="enable digest auth (user admin), password in FILE")
    auth.add_argument("--auth-env", metavar="VAR", help="enable digest auth, password in $VAR")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help=f"comma list name[:rate], names: {', '.join(FAULTS)} (e.g. http500:0.05,timeout:0.01)")
    p.add_argument("--timeout-delay", type=float, default=30.0, help="seconds a 'timeout' fault stalls")
    p.add_argument("--seed", type=int, default=1, help="same seed = same house: a grid and a solar emulator agree")
    p.add_argument("--device-id", help="device id (default shellypro3em-<mac>)")
    p.add_argument("--start", type=_parse_start, help="emulated start time (epoch s or ISO 8601; default now)")
    p.add_argument("--speed", type=float, default=1.0, help="emulated seconds per real second (default 1)")
    p.add_argument("--no-neutral", action="store_true", help="no neutral CT: n_current is null")
    p.add_argument("--timezone", default="Europe/Brussels", help="the house's timezone (daily profile)")
    p.add_argument("--switches", type=int, default=0, choices=range(0, 5), metavar="N",
                   help="switch outputs (Switch.Set/GetStatus/Toggle, ids 0..N-1) for the relay consumer")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="also answer RPC over MQTT on this broker")
    p.add_argument("--mqtt-prefix", help="the device's MQTT topic prefix (default: its device id)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``wattbus emulate shelly ...``: serve until SIGTERM/SIGINT, then exit 0."""
    args = build_parser().parse_args(argv)
    try:
        password = read_secret(args.auth_file, args.auth_env, env_required=True)
    except SecretError as exc:
        print(f"wattbus emulate shelly: --auth: {exc}", file=sys.stderr)
        return 2
    try:
        faults = Faults(parse_faults(args.faults), seed=args.seed)
    except ValueError as exc:
        print(f"wattbus emulate shelly: --faults: {exc}", file=sys.stderr)
        return 2
    emulated = args.start is not None or args.speed != 1.0
    clock = EmulatedClock(args.start, args.speed) if emulated else HostClock()
    emu = EmulatedShelly(role=args.role, profile=args.profile, password=password, clock=clock, seed=args.seed,
                         device_id=args.device_id, faults=faults, neutral=not args.no_neutral,
                         timeout_delay=args.timeout_delay, host=args.host, tz=args.timezone,
                         switches=args.switches)
    mqtt = None
    if args.mqtt:
        from producers.shelly.emulator_mqtt import MqttRpc

        host, _, port_text = args.mqtt.rpartition(":")
        mqtt = MqttRpc(emu, host or "127.0.0.1", int(port_text), args.mqtt_prefix or emu.device_id)
        mqtt.start()

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
        if mqtt is not None:
            mqtt.stop()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"wattbus emulate shelly: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
