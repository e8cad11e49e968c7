"""A Fronius Datamanager emulator serving the Solar API v1 over HTTP (aiohttp): the plant of ``plant.py``
behind the documented JSON shapes, with the errors and the nights a real one has.

Served: ``/solar_api/GetAPIVersion.cgi``, ``/solar_api/v1/GetPowerFlowRealtimeData.fcgi``,
``/solar_api/v1/GetInverterRealtimeData.cgi`` (``Scope=Device&DeviceId=N&DataCollection=CommonInverterData``
or ``3PInverterData``; ``Scope=System``) and ``/solar_api/v1/GetInverterInfo.cgi``. Every answer is
``{"Head": {"RequestArguments", "Status": {"Code", "Reason", "UserMessage"}, "Timestamp"}, "Body": {"Data"}}``
with the Timestamp in the site's local time and offset, as the device sends it.

Night, as the real thing: after sunset the inverter stops feeding (``P_PV`` null, inverter data with the
energies only, DeviceStatus 8 = standby); half an hour later it sleeps: its data requests answer
``DeviceNotAvailable`` (code 12) while the Datamanager keeps answering the power flow
(``--night standby``, a Datamanager with its own supply, the default) or nothing answers at all until sunrise
(``--night offline``: powered from the panels).

Faults (``--faults name[:rate],...`` or ``faults.arm(name, n)``): ``drop`` (connection closed unanswered),
``timeout`` (no answer for ``timeout_delay`` s), ``http500``, ``garbage`` (half a document and binary junk),
``ln_timeout`` (Solar API status 8, LNRequestTimeout: ~1 % of a Symo's answers), ``unknown_error`` (255).

Run it::

    wattbus emulate fronius --port 8090                      # a 6 kWp three-phase plant with a meter
    wattbus emulate fronius --port 8090 --battery-wh 10000 --night offline --faults ln_timeout:0.01
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import threading
from collections import Counter
from datetime import datetime
from typing import Any, Callable

import orjson
from aiohttp import web

from bus.clock import Clock, EmulatedClock, HostClock

from .plant import Plant, Snapshot

FAULTS = ("drop", "timeout", "http500", "garbage", "ln_timeout", "unknown_error")
STATUS_RUNNING, STATUS_STANDBY = 7, 8
DEVICE_TYPE = 123  # a Symo's DT


class Faults:
    """``arm(name, n)`` fails the next n requests, ``set_rate(name, p)`` a fraction; ``injected`` counts."""

    def __init__(self, rates: dict[str, float] | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._armed: list[list[Any]] = []
        self.rates = dict(rates or {})
        self._rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        for name in self.rates:
            _check_fault(name)

    def arm(self, name: str, count: int = 1) -> None:
        _check_fault(name)
        with self._lock:
            self._armed.append([name, count])

    def pick(self) -> str | None:
        with self._lock:
            for entry in self._armed:
                entry[1] -= 1
                self._armed = [e for e in self._armed if e[1] > 0]
                self.injected[entry[0]] += 1
                return entry[0]
            for name, rate in self.rates.items():
                if rate > 0 and self._rng.random() < rate:
                    self.injected[name] += 1
                    return name
        return None


def _check_fault(name: str) -> None:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")


def parse_faults(text: str) -> dict[str, float]:
    """``"ln_timeout:0.01,garbage"`` -> rates (a bare name means 0.05)."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rate = part.partition(":")
        _check_fault(name)
        rates[name] = float(rate) if rate else 0.05
    return rates


class EmulatedFronius:
    """One Datamanager with one inverter (DeviceId 1), served from a background thread or the caller's
    loop."""

    def __init__(self, *, plant: Plant | None = None, clock: Clock | None = None, meter: bool = True,
                 night: str = "standby", faults: Faults | None = None, timeout_delay: float = 30.0,
                 host: str = "127.0.0.1", seed: int = 1) -> None:
        if night not in ("standby", "offline"):
            raise ValueError("night is \"standby\" or \"offline\"")
        self.plant = plant or Plant(seed=seed)
        self.clock = clock or HostClock()
        self.meter, self.night, self.host = meter, night, host
        self.faults = faults or Faults(seed=seed)
        self.timeout_delay = timeout_delay
        self.reachable = True
        self.raw: bytes | None = None
        """When set, every request is answered with these bytes (HTTP 200): hostile-answer tests."""
        self.requests: Counter[str] = Counter()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the documents --------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return self.plant.at(self.clock.now())

    def _head(self, args: dict[str, str], code: int = 0, reason: str = "") -> dict[str, Any]:
        stamp = datetime.fromtimestamp(int(self.clock.now()), self.plant.tz).isoformat()
        return {"RequestArguments": args, "Status": {"Code": code, "Reason": reason, "UserMessage": ""},
                "Timestamp": stamp}

    def document(self, data: Any, args: dict[str, str] | None = None, code: int = 0,
                 reason: str = "") -> dict[str, Any]:
        return {"Head": self._head(args or {}, code, reason), "Body": {"Data": data}}

    def power_flow(self, s: Snapshot) -> dict[str, Any]:
        battery = self.plant.battery_wh > 0
        running = s.state == "running"
        site = {
            "Mode": ("bidirectional" if battery else "meter") if self.meter else "produce-only",
            "BatteryStandby": False, "BackupMode": False,
            "P_Grid": round(s.grid_w, 2) if self.meter else None,
            "P_Load": round(-s.load_w, 2) if self.meter else None,
            "P_Akku": round(s.akku_w, 2) if battery else None,
            "P_PV": round(s.pv_w, 2) if running else None,
            "rel_SelfConsumption": (round(min(100.0, s.load_w / s.pv_w * 100), 2) if running and self.meter
                                    else None),
            "rel_Autonomy": round(max(0.0, min(100.0, (1 - max(s.grid_w, 0) / s.load_w) * 100)), 2)
            if self.meter else None,
            "Meter_Location": "grid" if self.meter else "unknown",
            "E_Day": round(s.e_day, 2), "E_Year": round(s.e_year, 2), "E_Total": round(s.e_total, 2),
        }
        inverter: dict[str, Any] = {"DT": DEVICE_TYPE, "P": round(s.pv_w, 2) if running else None,
                                    "E_Day": round(s.e_day, 2), "E_Year": round(s.e_year, 2),
                                    "E_Total": round(s.e_total, 2)}
        if battery:
            inverter.update({"SOC": round(s.soc or 0.0, 1), "Battery_Mode": "normal"})
        return {"Site": site, "Inverters": {"1": inverter}, "Smartloads": {"Ohmpilots": {}}, "Version": "12"}

    def inverter_data(self, s: Snapshot, collection: str) -> tuple[int, Any]:
        """(Solar API status, Body.Data) of GetInverterRealtimeData for DeviceId 1."""
        if s.state == "asleep":
            return 12, {}
        unit = lambda value, u: {"Value": round(value, 3), "Unit": u}  # noqa: E731
        if collection == "CommonInverterData":
            data: dict[str, Any] = {"DAY_ENERGY": unit(s.e_day, "Wh"), "YEAR_ENERGY": unit(s.e_year, "Wh"),
                                    "TOTAL_ENERGY": unit(s.e_total, "Wh")}
            running = s.state == "running"
            data["DeviceStatus"] = {"StatusCode": STATUS_RUNNING if running else STATUS_STANDBY,
                                    "ErrorCode": 0, "LEDColor": 2, "LEDState": 0,
                                    "MgmtTimerRemainingTime": -1, "StateToReset": False}
            if running:
                iac = sum(s.iac)
                data.update({"PAC": unit(s.pv_w, "W"), "SAC": unit(s.pv_w, "VA"), "IAC": unit(iac, "A"),
                             "UAC": unit(sum(s.uac) / len(s.uac), "V"), "FAC": unit(s.fac, "Hz"),
                             "IDC": unit(s.pv_w / 0.97 / s.udc, "A"), "UDC": unit(s.udc, "V")})
            return 0, data
        if collection == "3PInverterData":
            if self.plant.phases != 3:
                return 11, {}
            data = {}
            if s.state == "running":
                for n, (u, i) in enumerate(zip(s.uac, s.iac), start=1):
                    data[f"IAC_L{n}"] = unit(i, "A")
                    data[f"UAC_L{n}"] = unit(u, "V")
                data["T_AMBIENT"] = {"Value": 38, "Unit": "C"}
            return 0, data
        return 6, {}

    # -- HTTP -------------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/solar_api/GetAPIVersion.cgi", self._api_version)
        app.router.add_get("/solar_api/v1/GetPowerFlowRealtimeData.fcgi", self._power_flow)
        app.router.add_get("/solar_api/v1/GetInverterRealtimeData.cgi", self._inverter)
        app.router.add_get("/solar_api/v1/GetInverterInfo.cgi", self._inverter_info)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        self.requests[request.path.rsplit("/", 1)[-1]] += 1
        if not self.reachable or (self.night == "offline" and self.snapshot().state == "asleep"):
            return _drop(request)
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        fault = self.faults.pick()
        if fault == "drop":
            return _drop(request)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_delay)
        if fault == "http500":
            return web.Response(status=500, text="<html><body>500 Internal Server Error</body></html>",
                                content_type="text/html")
        if fault == "garbage":
            return web.Response(body=b'{"Head":{"Status":{"Code":0},"Timest\x00\xff\xfe<html>',
                                content_type="application/json")
        if fault in ("ln_timeout", "unknown_error") and request.path.startswith("/solar_api/v1/"):
            code, reason = (8, "LNRequestTimeout") if fault == "ln_timeout" else (255, "Unknown error")
            return _json(self.document({}, dict(request.query), code, reason))
        return await handler(request)

    async def _api_version(self, request: web.Request) -> web.Response:
        return _json({"APIVersion": 1, "BaseURL": "/solar_api/v1/", "CompatibilityRange": "1.6-3"})

    async def _power_flow(self, request: web.Request) -> web.Response:
        return _json(self.document(self.power_flow(self.snapshot())))

    async def _inverter(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        args = {"DataCollection": q.get("DataCollection", ""), "DeviceClass": "Inverter",
                "DeviceId": q.get("DeviceId", ""), "Scope": q.get("Scope", "")}
        s = self.snapshot()
        if q.get("Scope") == "System":
            running = s.state == "running"
            one = lambda v, u: {"Unit": u, "Values": {"1": round(v, 2)}}  # noqa: E731
            data = {"PAC": one(s.pv_w if running else 0.0, "W"), "DAY_ENERGY": one(s.e_day, "Wh"),
                    "YEAR_ENERGY": one(s.e_year, "Wh"), "TOTAL_ENERGY": one(s.e_total, "Wh")}
            return _json(self.document(data, {"DeviceClass": "Inverter", "Scope": "System"}))
        if q.get("Scope") != "Device" or not q.get("DeviceId") or not q.get("DataCollection"):
            return _json(self.document({}, args, 6, "Scope=Device needs DeviceId and DataCollection"))
        if q["DeviceId"] != "1":
            return _json(self.document({}, args, 12, f"Device {q['DeviceId'][:10]} not available"))
        code, data = self.inverter_data(s, q["DataCollection"])
        reason = {12: "Device not available", 11: "Not supported", 6: "Unknown DataCollection"}.get(code, "")
        return _json(self.document(data, args, code, reason))

    async def _inverter_info(self, request: web.Request) -> web.Response:
        s = self.snapshot()
        if s.state == "asleep":
            return _json(self.document({}))
        info = {"1": {"DT": DEVICE_TYPE, "PVPower": round(self.plant.peak_w), "Show": 1, "UniqueID": "476321",
                      "ErrorCode": 0,
                      "StatusCode": STATUS_RUNNING if s.state == "running" else STATUS_STANDBY,
                      "CustomName": "&#83;ymo&#32;6.0-3-M"}}
        return _json(self.document(info))

    # -- lifecycle (as the shelly emulator's) -----------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("emulator not started")
        return f"http://{self.host}:{self.port}"

    async def serve(self, port: int = 0) -> int:
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

    def start(self, port: int = 0) -> EmulatedFronius:
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
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=main, name="fronius-emulator", daemon=True)
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

    def __enter__(self) -> EmulatedFronius:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drop(request: web.Request) -> web.StreamResponse:
    """Unreachable: close the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError()


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wattbus emulate fronius",
                                description="Emulate a Fronius Datamanager (Solar API v1) for tests and the "
                                "demo.")
    p.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--peak-w", type=float, default=6000.0, help="the panels' peak AC power (default 6000)")
    p.add_argument("--phases", type=int, choices=(1, 3), default=3)
    p.add_argument("--battery-wh", type=float, default=0.0, help="battery capacity; 0 = no battery")
    p.add_argument("--no-meter", action="store_true",
                   help="no Fronius Smart Meter: P_Grid and P_Load are null")
    p.add_argument("--night", choices=("standby", "offline"), default="standby",
                   help="asleep at night: the Datamanager still answers (standby) or nothing does (offline)")
    p.add_argument("--latitude", type=float, default=50.85)
    p.add_argument("--timezone", default="Europe/Brussels")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help=f"comma list name[:rate], names: {', '.join(FAULTS)}")
    p.add_argument("--timeout-delay", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=float, help="emulated start time, epoch s (default: now, real time)")
    p.add_argument("--speed", type=float, default=1.0, help="emulated seconds per real second")
    return p


def main(argv: list[str] | None = None) -> int:
    """``wattbus emulate fronius ...``: serve until SIGTERM/SIGINT, then exit 0."""
    args = build_parser().parse_args(argv)
    try:
        faults = Faults(parse_faults(args.faults), seed=args.seed)
    except ValueError as exc:
        print(f"wattbus emulate fronius: --faults: {exc}", file=sys.stderr)
        return 2
    clock: Clock = (EmulatedClock(args.start, args.speed) if args.start is not None or args.speed != 1.0
                    else HostClock())
    plant = Plant(peak_w=args.peak_w, phases=args.phases, battery_wh=args.battery_wh, latitude=args.latitude,
                  tz=args.timezone, seed=args.seed)
    emu = EmulatedFronius(plant=plant, clock=clock, meter=not args.no_meter, night=args.night, faults=faults,
                          timeout_delay=args.timeout_delay, host=args.host, seed=args.seed)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        port = await emu.serve(args.port)
        print(f"fronius emulator ({args.peak_w:g} W peak, {args.phases} phase(s)"
              f"{f', battery {args.battery_wh:g} Wh' if args.battery_wh else ''}) listening on "
              f"http://{args.host}:{port}", flush=True)
        await stop.wait()
        await emu.shutdown()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"wattbus emulate fronius: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
