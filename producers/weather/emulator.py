"""A weather service emulator: Open-Meteo's ``/v1/forecast`` and OpenWeatherMap's One Call 3.0
``/data/3.0/onecall`` on one port (aiohttp), answering with their documented JSON shapes for a deterministic
sky, so tests and the demo need no internet (point the producer's ``base_url`` here).

The sky: a cloud cover drifting over hours, a temperature with its seasons and its day, and the irradiance the
sun gives through those clouds (``bus/solar.py``'s clear-sky model). Open-Meteo's hourly shortwave radiation
is the mean of the *preceding* hour and its ``current`` block is on a 15-minute grid (``interval`` 900), as
the real service; OpenWeatherMap has no irradiance, as the real one.

Errors as the services send them: a bad coordinate (400 ``{"error": true, "reason": ...}`` /
``{"cod": "400", "message": "wrong latitude"}``), OpenWeatherMap without or with a wrong ``appid`` (401
``{"cod": 401, "message": "Invalid API key. ..."}``); faults on demand (``--faults name[:rate]``): ``drop``,
``timeout``, ``http500``, ``garbage``, ``ratelimit`` (429).

Run it::

    wattbus emulate weather --port 8095 --owm-key-file owm.key
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import signal
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import orjson
from aiohttp import web

from bus import solar
from bus.clock import Clock, EmulatedClock, HostClock
from bus.secrets import SecretError, read_secret

FAULTS = ("drop", "timeout", "http500", "garbage", "ratelimit")
OPEN_METEO_UNITS = {"temperature_2m": "°C", "cloud_cover": "%", "shortwave_radiation": "W/m²",
                    "relative_humidity_2m": "%", "wind_speed_10m": "km/h"}
OWM_BAD_KEY = {"cod": 401, "message": "Invalid API key. Please see https://openweathermap.org/faq#error401 "
                                      "for more info."}


class Sky:
    """Deterministic weather at any place and time (a pure function of time, place and seed)."""

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        self._clouds = [(rng.uniform(0.03, 0.3), rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 0.3))
                        for _ in range(4)]  # (cycles per hour, phase, weight)

    def cloud_cover(self, t: np.ndarray) -> np.ndarray:
        """0..1."""
        h = np.asarray(t, dtype=np.float64) / 3600
        c = sum(w * np.sin(2 * np.pi * f * h + p) for f, p, w in self._clouds)
        return np.clip(0.5 + c, 0.0, 1.0)

    def temperature(self, t: np.ndarray, lat: float, lon: float) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        day = (t / 86400.0) % 365.25
        season = 10.0 + np.sign(lat or 1.0) * 8.0 * np.sin(2 * np.pi * (day - 110) / 365.25)
        solar_h = (t / 3600.0 + lon / 15.0) % 24
        diurnal = 5.0 * np.sin(2 * np.pi * (solar_h - 9.0) / 24.0)
        return season + diurnal * (1.0 - 0.6 * self.cloud_cover(t))

    def ghi(self, t: np.ndarray, lat: float, lon: float) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return solar.clear_sky_ghi(solar.cos_zenith(t, lat, lon)) * solar.cloud_factor(self.cloud_cover(t))

    def ghi_mean(self, ends: np.ndarray, span_s: float, lat: float, lon: float) -> np.ndarray:
        """Mean irradiance over the ``span_s`` before each time in ``ends`` (12 samples)."""
        offsets = (np.arange(12) + 0.5) / 12 * span_s
        samples = self.ghi(np.asarray(ends, dtype=np.float64)[:, None] - offsets[None, :], lat, lon)
        return samples.mean(axis=1)


class Faults:
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
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rate = part.partition(":")
        _check_fault(name)
        rates[name] = float(rate) if rate else 0.05
    return rates


class EmulatedWeather:
    """Both services, served from a background thread (tests) or the caller's event loop (``main``)."""

    def __init__(self, *, clock: Clock | None = None, owm_key: str | None = None, seed: int = 1,
                 faults: Faults | None = None, timeout_delay: float = 30.0, host: str = "127.0.0.1") -> None:
        self.clock = clock or HostClock()
        self.sky = Sky(seed)
        self.owm_key = owm_key
        self.faults = faults or Faults(seed=seed)
        self.timeout_delay, self.host = timeout_delay, host
        self.reachable = True
        self.raw: bytes | None = None
        """When set, every request is answered with these bytes (HTTP 200): hostile-answer tests."""
        self.requests: Counter[str] = Counter()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- Open-Meteo -------------------------------------------------------------------------------------
    def open_meteo(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            lat, lon = float(q.get("latitude", "")), float(q.get("longitude", ""))
        except ValueError:
            return 400, {"error": True,
                         "reason": "Parameter 'latitude' and 'longitude' must be floating point"}
        if not -90 <= lat <= 90:
            return 400, {"error": True, "reason": f"Latitude must be in range of -90 to 90°. Given: {lat}."}
        if not -180 <= lon <= 180:
            return 400, {"error": True,
                         "reason": f"Longitude must be in range of -180 to 180°. Given: {lon}."}
        current = [v for v in q.get("current", "").split(",") if v]
        hourly = [v for v in q.get("hourly", "").split(",") if v]
        for block, names in (("current", current), ("hourly", hourly)):
            unknown = [v for v in names if v not in OPEN_METEO_UNITS]
            if unknown:
                return 400, {"error": True,
                             "reason": f"Data corrupted at path ''. Cannot initialize ForecastVariable from "
                                       f"invalid String value {unknown[0]} for key {block}"}
        unixtime = q.get("timeformat", "iso8601") == "unixtime"
        now = self.clock.now()
        stamp = (lambda t: int(t)) if unixtime else \
            (lambda t: datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M"))
        doc: dict[str, Any] = {"latitude": round(lat, 2), "longitude": round(lon, 2),
                               "generationtime_ms": 0.05, "utc_offset_seconds": 0, "timezone": "GMT",
                               "timezone_abbreviation": "GMT", "elevation": 35.0}
        if current:
            t = now - now % 900
            doc["current_units"] = {"time": "unixtime" if unixtime else "iso8601", "interval": "seconds",
                                    **{v: OPEN_METEO_UNITS[v] for v in current}}
            doc["current"] = {"time": stamp(t), "interval": 900,
                              **{v: self._value(v, np.array([t]), lat, lon, 900)[0] for v in current}}
        if hourly:
            if "forecast_hours" in q:
                try:
                    n = max(1, min(384, int(q["forecast_hours"])))
                except ValueError:
                    return 400, {"error": True, "reason": "Parameter 'forecast_hours' must be an integer"}
                start = now - now % 3600
            else:
                days = int(q.get("forecast_days", "7")) if q.get("forecast_days", "7").isdigit() else 7
                n, start = 24 * max(1, min(16, days)), now - now % 86400
            times = start + 3600.0 * np.arange(n)
            doc["hourly_units"] = {"time": "unixtime" if unixtime else "iso8601",
                                   **{v: OPEN_METEO_UNITS[v] for v in hourly}}
            doc["hourly"] = {"time": [stamp(t) for t in times],
                             **{v: self._value(v, times, lat, lon, 3600) for v in hourly}}
        return 200, doc

    def _value(self, var: str, t: np.ndarray, lat: float, lon: float, span: float) -> list[float]:
        if var == "temperature_2m":
            return [round(float(x), 1) for x in self.sky.temperature(t, lat, lon)]
        if var == "cloud_cover":
            return [int(round(float(x) * 100)) for x in self.sky.cloud_cover(t)]
        if var == "shortwave_radiation":
            return [round(float(x), 1) for x in self.sky.ghi_mean(t, span, lat, lon)]
        if var == "relative_humidity_2m":
            return [int(60 + 30 * float(c)) for c in self.sky.cloud_cover(t)]
        return [round(8.0 + 4 * math.sin(float(x) / 5000), 1) for x in t]  # wind_speed_10m

    # -- OpenWeatherMap One Call 3.0 --------------------------------------------------------------------
    def onecall(self, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if not q.get("appid") or q.get("appid") != self.owm_key:
            return 401, OWM_BAD_KEY
        try:
            lat, lon = float(q.get("lat", "")), float(q.get("lon", ""))
        except ValueError:
            return 400, {"cod": "400", "message": "Nothing to geocode"}
        if not -90 <= lat <= 90:
            return 400, {"cod": "400", "message": "wrong latitude"}
        if not -180 <= lon <= 180:
            return 400, {"cod": "400", "message": "wrong longitude"}
        units = q.get("units", "standard")
        shift = {"metric": 0.0, "standard": 273.15}.get(units)
        to_temp = (lambda c: c + shift) if shift is not None else (lambda c: c * 9 / 5 + 32)
        exclude = set(q.get("exclude", "").split(","))
        now = self.clock.now()
        doc: dict[str, Any] = {"lat": round(lat, 4), "lon": round(lon, 4), "timezone": "Europe/Brussels",
                               "timezone_offset": 3600}
        if "current" not in exclude:
            doc["current"] = self._owm_entry(int(now), lat, lon, to_temp, current=True)
        if "hourly" not in exclude:
            start = int(now - now % 3600)
            doc["hourly"] = [self._owm_entry(start + 3600 * k, lat, lon, to_temp) for k in range(48)]
        if "daily" not in exclude:
            doc["daily"] = []
        return 200, doc

    def _owm_entry(self, t: int, lat: float, lon: float, to_temp: Callable[[float], float],
                   current: bool = False) -> dict[str, Any]:
        tt = np.array([float(t)])
        clouds = int(round(float(self.sky.cloud_cover(tt)[0]) * 100))
        temp = float(self.sky.temperature(tt, lat, lon)[0])
        main, desc, wid = next(kind for limit, kind in ((11, ("Clear", "clear sky", 800)),
                                                        (25, ("Clouds", "few clouds", 801)),
                                                        (51, ("Clouds", "scattered clouds", 802)),
                                                        (85, ("Clouds", "broken clouds", 803)),
                                                        (101, ("Clouds", "overcast clouds", 804)))
                               if clouds < limit)
        entry: dict[str, Any] = {
            "dt": t, "temp": round(to_temp(temp), 2), "feels_like": round(to_temp(temp - 1.5), 2),
            "pressure": 1015, "humidity": 60 + clouds // 4, "dew_point": round(to_temp(temp - 6), 2),
            "uvi": round(max(0.0, float(solar.cos_zenith(tt, lat, lon)[0])) * 8 * (1 - clouds / 150), 2),
            "clouds": clouds, "visibility": 10000, "wind_speed": 3.6, "wind_deg": 240,
            "weather": [{"id": wid, "main": main, "description": desc, "icon": "04d"}]}
        if current:
            entry.update({"sunrise": t - t % 86400 + 4 * 3600, "sunset": t - t % 86400 + 20 * 3600})
        else:
            entry.update({"wind_gust": 7.2, "pop": round(clouds / 200, 2)})
        return entry

    # -- HTTP -------------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v1/forecast", self._handle(self.open_meteo))
        app.router.add_get("/data/3.0/onecall", self._handle(self.onecall))
        return app

    def _handle(self, answer: Callable[[dict[str, str]], tuple[int, dict[str, Any]]]) -> Callable[..., Any]:
        async def handler(request: web.Request) -> web.Response:
            status, doc = answer(dict(request.query))
            return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")

        return handler

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        self.requests[request.path] += 1
        if not self.reachable:
            return _drop(request)
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        fault = self.faults.pick()
        if fault == "drop":
            return _drop(request)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_delay)
        if fault == "http500":
            return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                                content_type="text/html")
        if fault == "garbage":
            return web.Response(body=b'{"latitude":50.84,"hourly":{"time":[17189\x00\xff<html>',
                                content_type="application/json")
        if fault == "ratelimit":
            body = ({"error": True,
                     "reason": "Minutely API request limit exceeded. Please try again in one minute."}
                    if request.path.startswith("/v1/") else
                    {"cod": 429, "message": "Your account is temporary blocked due to exceeding of requests "
                                            "limitation of your subscription type."})
            return web.Response(status=429, body=orjson.dumps(body), content_type="application/json")
        return await handler(request)

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

    def start(self, port: int = 0) -> EmulatedWeather:
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

        self._thread = threading.Thread(target=main, name="weather-emulator", daemon=True)
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

    def __enter__(self) -> EmulatedWeather:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drop(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wattbus emulate weather",
                                description="Emulate Open-Meteo and OpenWeatherMap One Call 3.0 on one port.")
    p.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--owm-key-file", metavar="FILE",
                     help="the OpenWeatherMap API key it accepts (first line)")
    key.add_argument("--owm-key-env", metavar="VAR", help="... or in this environment variable")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help=f"comma list name[:rate]: {', '.join(FAULTS)}")
    p.add_argument("--timeout-delay", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=float, help="emulated start time, epoch s (default: now, real time)")
    p.add_argument("--speed", type=float, default=1.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        key = read_secret(args.owm_key_file, args.owm_key_env, env_required=True)
        faults = Faults(parse_faults(args.faults), seed=args.seed)
    except (SecretError, ValueError) as exc:
        print(f"wattbus emulate weather: {exc}", file=sys.stderr)
        return 2
    clock: Clock = (EmulatedClock(args.start, args.speed) if args.start is not None or args.speed != 1.0
                    else HostClock())
    emu = EmulatedWeather(clock=clock, owm_key=key, seed=args.seed, faults=faults,
                          timeout_delay=args.timeout_delay, host=args.host)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        port = await emu.serve(args.port)
        print(f"weather emulator (Open-Meteo /v1/forecast, OpenWeatherMap /data/3.0/onecall"
              f"{'' if key else ', no OWM key: every onecall is 401'}) "
              f"listening on http://{args.host}:{port}",
              flush=True)
        await stop.wait()
        await emu.shutdown()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"wattbus emulate weather: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
