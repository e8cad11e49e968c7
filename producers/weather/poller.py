"""The fetch loop: one request per interval gives both the current conditions (a reading) and the hourly
forecast (a retained batch on ``weather/{device}/forecast``).

What goes wrong and what it becomes: no answer, a timeout, HTTP 5xx, garbage -> retried (``bus.http``), then a
failed fetch (``fetch_failures``; garbage also to the DLQ); HTTP 401/403 -> the key is wrong or not (yet)
active: ``auth_failures``, an error naming the key's file, no retry before the next interval; HTTP 429 ->
``rate_limited``, the next interval; 400 -> the service's reason (a bad coordinate), ``api_errors``. The same
observation twice (the service updates every 15 min) is published once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from bus import envelope, topics
from bus.http import BadResponse, HttpError, JsonClient, Retry

from .providers import (Observation, Parsed, Refused, add_pv_estimate, open_meteo_error, open_meteo_request,
                        owm_error, owm_request, parse_open_meteo, parse_owm)

if TYPE_CHECKING:
    import httpx

    from bus.producer import ProducerContext

    from . import Config


class AuthFailed(HttpError):
    pass


class RateLimited(HttpError):
    pass


class ServiceError(HttpError):
    pass


class Poller:
    def __init__(self, ctx: ProducerContext, cfg: Config, *, clock: Callable[[], float] = time.monotonic,
                 host_time: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None,
                 publish_forecast: Callable[[str, bytes], Any] | None = None) -> None:
        self.ctx, self.cfg, self.clock, self.host_time = ctx, cfg, clock, host_time
        self.device = cfg.device or ctx.name
        self.key = cfg.api_key(ctx.name) if cfg.provider == "openweathermap" else None
        self.http = JsonClient(cfg.url, timeout=cfg.timeout, retries=cfg.retries, sleep=ctx.wait,
                               should_stop=ctx.stopping.is_set, count=ctx.counters.inc, transport=transport,
                               user_agent="wattbus-weather", secret=self.key)
        self._publish_forecast = publish_forecast if publish_forecast is not None else (
            lambda topic, payload: ctx.client.publish(topic, payload, qos=1, retain=True))
        self.online: bool | None = None
        self.last_ts: int | None = None
        self.down_since: float | None = None

    # -- one fetch ----------------------------------------------------------------------------------------
    def fetch(self) -> Parsed:
        cfg = self.cfg
        if cfg.provider == "open-meteo":
            path, params = open_meteo_request(cfg.latitude, cfg.longitude, cfg.forecast_hours)
            parse, error = parse_open_meteo, open_meteo_error
        else:
            assert self.key is not None
            path, params = owm_request(cfg.latitude, cfg.longitude, self.key)
            parse, error = parse_owm, owm_error

        def check(status: int, doc: Any, body: bytes) -> Parsed:
            reason = error(doc)
            if status in (401, 403):
                raise AuthFailed(f"HTTP {status}: {reason or 'refused'}")
            if status == 429:
                raise RateLimited(f"HTTP 429: {reason or 'too many requests'}")
            if status >= 400 or reason:
                raise ServiceError(f"HTTP {status}: {reason or 'error'}")
            try:
                return parse(doc)
            except Refused as exc:
                raise Retry("bad_responses", f"HTTP {status}: {exc}", body=body) from None

        return self.http.get(path, params, check)

    def poll_once(self) -> bool:
        """One fetch; True when something (reading or forecast) was published."""
        ctx, name = self.ctx, self.device
        try:
            parsed = self.fetch()
        except HttpError as exc:
            self._failed(exc)
            return False
        self._answered()
        ctx.counters.inc("fetches")
        if parsed.bad:
            ctx.counters.inc("bad_fields", len(parsed.bad))
            ctx.bad_input_log.warning(f"{name}:bad", "%s: unusable %s", name, ", ".join(parsed.bad[:4]))
        observations = ([parsed.current] if parsed.current else []) + parsed.hourly
        if self.cfg.pv_peak_w:
            add_pv_estimate(observations, self.cfg.pv_peak_w, self.cfg.latitude, self.cfg.longitude)
        published = self._reading(parsed.current)
        return self._forecast(parsed.hourly) or published

    def _reading(self, current: Observation | None) -> bool:
        if current is None or not current.metrics:
            return False
        if self.last_ts is not None and current.ts <= self.last_ts:
            self.ctx.counters.inc("stale_readings")  # the service has not moved on since the last fetch
            return False
        self.last_ts = current.ts
        self.ctx.publish_reading(self.device, current.metrics, ts=current.ts, period_s=current.period_s)
        return True

    def _forecast(self, hourly: list[Observation]) -> bool:
        """The hour in progress (its end is its ts) and the ``forecast_hours - 1`` after it, as one retained
        batch replacing the last."""
        now_ms = int(self.host_time() * 1000)
        points = []
        for o in hourly:
            if o.ts <= now_ms or not o.metrics:  # an hour that has ended: not a forecast any more
                continue
            problem = envelope.item_problem(o.ts, o.metrics, None, o.period_s)
            if problem:  # a value the bus would refuse (the parsers' limits should make this impossible)
                self.ctx.counters.inc("forecast_points_rejected")
                continue
            points.append({"ts": o.ts, "period_s": o.period_s, "metrics": o.metrics})
        points = points[: self.cfg.forecast_hours]
        if not points:
            return False
        payload = envelope.encode_batch(self.ctx.source, self.device, points)
        self._publish_forecast(topics.forecast(self.ctx.source, self.device), payload)
        self.ctx.counters.inc("forecasts")
        return True

    # -- availability -------------------------------------------------------------------------------------
    def _set_online(self, online: bool) -> None:
        if online != self.online:
            self.online = online
            self.ctx.set_device_status(self.device, online)

    def _answered(self) -> None:
        if self.down_since is not None:
            self.ctx.log.info("%s: %s answers again after %.0f s", self.device, self.cfg.provider,
                              self.clock() - self.down_since)
        self.down_since = None
        self._set_online(True)

    def _failed(self, exc: HttpError) -> None:
        ctx, name = self.ctx, self.device
        ctx.counters.inc("fetch_failures")
        if isinstance(exc, BadResponse):
            ctx.dead_letter(exc.body, f"{name}: {exc}", self.http.url)
        elif isinstance(exc, AuthFailed):
            ctx.counters.inc("auth_failures")
            where = self.cfg.api_key_file or f"${self.cfg.api_key_env}"
            ctx.bad_input_log.warning(f"{name}:auth", "%s: %s refuses the API key from %s (%s): a new key "
                                      "can take hours to become active", name, self.cfg.provider, where, exc)
        elif isinstance(exc, RateLimited):
            ctx.counters.inc("rate_limited")
        elif isinstance(exc, ServiceError):
            ctx.counters.inc("api_errors")
        if self.down_since is None:
            self.down_since = self.clock()
            ctx.log.warning("%s: fetch from %s failed: %s", name, self.cfg.provider, exc)
        else:
            ctx.bad_input_log.warning(f"{name}:down", "%s: still failing: %s", name, exc)
        self._set_online(False)

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> None:
        ctx = self.ctx
        ctx.log.info("%s: %s at %.4f, %.4f every %g s, forecast %d h%s", self.device, self.cfg.provider,
                     self.cfg.latitude, self.cfg.longitude, self.cfg.interval, self.cfg.forecast_hours,
                     f", PV estimate for {self.cfg.pv_peak_w:g} W" if self.cfg.pv_peak_w else "")
        next_due = self.clock()
        try:
            while not ctx.stopping.is_set():
                try:
                    self.poll_once()
                except Exception:  # a bug or an answer no parser foresaw: log it, keep going
                    ctx.counters.inc("internal_errors")
                    ctx.log.exception("%s: unexpected error while fetching", self.device)
                next_due += self.cfg.interval
                now = self.clock()
                if next_due < now:
                    next_due = now + self.cfg.interval - (now - next_due) % self.cfg.interval
                if ctx.wait(next_due - now):
                    break
        finally:
            self._set_online(False)
            self.http.close()
