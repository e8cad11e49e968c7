"""The poll loop: one GetPowerFlowRealtimeData per interval (plus the inverter's own data for the solar
device), turned into one reading; outages, garbage and the inverter's night told apart.

Night. A Fronius inverter is powered from its panels: at dusk it reports no production (``P_PV`` null,
inverter data "DeviceNotAvailable"), then, unless its Datamanager has its own supply, stops answering at all
until the morning. An answer-less device whose last answer said "no production" is *asleep*: logged once,
counted (``asleep_polls``), device ``offline``, and (``asleep_readings``) 0 W published with quality
``estimated`` and the lifetime counter where it was, so graphs and aggregates show the night as what it is. A
device that stops answering while producing is an outage: a warning, ``poll_failures``, nothing invented.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from .api import Answer, ApiError, Asleep, BadResponse, FroniusError, NotSupported, SolarApi
from .fields import COMMON, THREE_PHASE, Mapped, device_status, inverter_total, map_flow, map_inverter

if TYPE_CHECKING:
    import httpx

    from bus.producer import ProducerContext

    from . import Config

RUNNING, STANDBY = 7, 8


class Poller:
    def __init__(self, ctx: ProducerContext, cfg: Config, *, clock: Callable[[], float] = time.monotonic,
                 host_time: Callable[[], float] = time.time,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.ctx, self.cfg, self.clock, self.host_time = ctx, cfg, clock, host_time
        self.device = cfg.device or ctx.name
        self.api = SolarApi(cfg.host, timeout=cfg.timeout, retries=cfg.retries, sleep=ctx.wait,
                            should_stop=ctx.stopping.is_set, count=ctx.counters.inc, transport=transport)
        self.three_phase = cfg.three_phase
        self.online: bool | None = None
        self.producing = True      # what the last answer said: False = no production (dusk, night)
        self.asleep_since: float | None = None
        self.down_since: float | None = None
        self.last_ts: int | None = None
        self.last_total: float | None = None
        self.identified = False

    # -- one poll -------------------------------------------------------------------------------------------
    def poll_once(self) -> bool:
        """One poll; True when a reading was published."""
        ctx, name = self.ctx, self.device
        try:
            if not self.identified:
                self._identify()
            flow = self.api.power_flow()
        except FroniusError as exc:
            self._failed(exc)
            return False
        self._answered()
        ctx.counters.inc("polls")
        mapped, present = map_flow(flow.data, self.cfg.role, self.cfg.inverter)
        if self.cfg.role == "solar":
            self._inverter(mapped)
            self.producing = mapped.metrics.get("power_w", 0.0) > 0.0
        self._count_problems(mapped)
        if not present:
            ctx.counters.inc("absent")
            field = {"grid": "P_Grid", "load": "P_Load", "battery": "P_Akku"}.get(self.cfg.role)
            ctx.bad_input_log.warning(f"{name}:absent", "%s: the site has no %s now (Site.%s is null): "
                                      "nothing to publish", name, self.cfg.role, field)
            return False
        metrics = mapped.metrics
        total = metrics.get("energy_import_wh")
        if total is not None:
            if self.last_total is not None and total < self.last_total:
                ctx.counters.inc("counter_went_down")
                ctx.bad_input_log.warning(f"{name}:down", "%s: lifetime energy went down (%.0f -> %.0f Wh): "
                                          "counter left out of this reading", name, self.last_total, total)
                del metrics["energy_import_wh"]
            else:
                self.last_total = total
        if not metrics:
            return False
        ts = self._stamp(flow)
        if self.last_ts is not None and ts <= self.last_ts:
            ctx.counters.inc("stale_readings")  # the device's clock did not move (or went back)
            return False
        self.last_ts = ts
        quality = "ok" if not mapped.missing and not mapped.bad else "missing"
        ctx.publish_reading(name, metrics, ts=ts, quality=quality if "power_w" in metrics else "missing")
        return True

    def _identify(self) -> None:
        info = self.api.api_version()
        version = info.get("APIVersion")
        if version != 1:
            self.ctx.bad_input_log.warning(f"{self.device}:version", "%s: %s speaks Solar API version %r, "
                                           "not 1; trying anyway", self.device, self.api.url,
                                           str(version)[:20])
        self.ctx.log.info("%s: %s answers Solar API %s (%s)", self.device, self.api.url, str(version)[:20],
                          str(info.get("CompatibilityRange", "?"))[:40])
        self.identified = True

    def _inverter(self, mapped: Mapped) -> None:
        """The inverter's own data, for the solar device: CommonInverterData, then 3PInverterData."""
        ctx, name, inv = self.ctx, self.device, self.cfg.inverter
        try:
            common = self.api.inverter(inv, "CommonInverterData")
        except Asleep:
            ctx.counters.inc("inverter_asleep")
            return
        except FroniusError as exc:
            ctx.counters.inc("inverter_data_failures")
            ctx.bad_input_log.warning(f"{name}:inverter", "%s: inverter %d's data: %s", name, inv, exc)
            return
        code, error = device_status(common.data)
        running = code == RUNNING
        if error:
            ctx.counters.inc("device_errors")
            ctx.bad_input_log.warning(f"{name}:error{error}", "%s: inverter %d reports status %s, error %s",
                                      name, inv, code, error)
        if running:
            map_inverter(common.data, COMMON, mapped)
        if "energy_import_wh" not in mapped.metrics:
            total = inverter_total(common.data)
            if total is not None:
                mapped.metrics["energy_import_wh"] = total
        if not running or self.three_phase is False:
            return
        try:
            three = self.api.inverter(inv, "3PInverterData")
        except (NotSupported, Asleep) as exc:
            if isinstance(exc, NotSupported) and self.three_phase is None:
                self.three_phase = False
                ctx.log.info("%s: inverter %d has no per-phase data (%s): not asking again", name, inv, exc)
            return
        except FroniusError as exc:
            if self.three_phase is None and getattr(exc, "code", None) in (6, 255):
                self.three_phase = False
                ctx.log.info("%s: inverter %d refuses 3PInverterData (%s): not asking again", name, inv, exc)
            else:
                ctx.counters.inc("inverter_data_failures")
            return
        map_inverter(three.data, THREE_PHASE, mapped)

    def _stamp(self, answer: Answer) -> int:
        host = self.host_time()
        device = answer.device_time
        if device is None:
            self.ctx.counters.inc("device_clock_missing")
            return int(host * 1000)
        if abs(device - host) > self.cfg.max_clock_skew_s:
            self.ctx.counters.inc("device_clock_skewed")
            self.ctx.bad_input_log.warning(f"{self.device}:clock", "%s: device clock %+.0f s off the host's: "
                                           "stamping with the host's", self.device, device - host)
            return int(host * 1000)
        return int(device * 1000)

    def _count_problems(self, mapped: Mapped) -> None:
        ctx, log = self.ctx, self.ctx.bad_input_log
        if mapped.missing:
            ctx.counters.inc("missing_fields", len(mapped.missing))
            log.warning(f"{self.device}:missing", "%s: answer lacks %s", self.device,
                        ", ".join(mapped.missing[:6]))
        if mapped.bad:
            ctx.counters.inc("bad_fields", len(mapped.bad))
            log.warning(f"{self.device}:bad", "%s: unusable %s", self.device, ", ".join(mapped.bad[:4]))

    # -- availability ---------------------------------------------------------------------------------------
    def _set_online(self, online: bool) -> None:
        if online != self.online:
            self.online = online
            self.ctx.set_device_status(self.device, online)

    def _answered(self) -> None:
        now = self.clock()
        if self.asleep_since is not None:
            self.ctx.log.info("%s: the inverter woke up after %.1f h", self.device,
                              (now - self.asleep_since) / 3600)
        elif self.down_since is not None:
            self.ctx.log.info("%s: the device answers again after %.0f s", self.device, now - self.down_since)
        self.asleep_since = self.down_since = None
        self._set_online(True)

    def _failed(self, exc: FroniusError) -> None:
        ctx, name, now = self.ctx, self.device, self.clock()
        self.identified = False
        if isinstance(exc, BadResponse):
            ctx.dead_letter(exc.body, f"{name}: {exc}", self.api.url)
        if not self.producing and self.cfg.role == "solar" and not isinstance(exc, BadResponse):
            ctx.counters.inc("asleep_polls")
            if self.asleep_since is None:
                self.asleep_since = now
                ctx.log.info("%s: no answer after reporting no production: the inverter sleeps (%s)", name,
                             exc)
            self._set_online(False)
            if self.cfg.asleep_readings:
                self._publish_asleep()
            return
        ctx.counters.inc("poll_failures")
        if isinstance(exc, ApiError):  # (failed attempts are counted by the client, one per attempt)
            ctx.counters.inc("api_errors")
        if self.down_since is None:
            self.down_since = now
            ctx.log.warning("%s: poll failed: %s", name, exc)
        else:
            ctx.bad_input_log.warning(f"{name}:down", "%s: still failing for %.0f s: %s", name,
                                      now - self.down_since, exc)
        self._set_online(False)

    def _publish_asleep(self) -> None:
        ts = int(self.host_time() * 1000)
        if self.last_ts is not None and ts <= self.last_ts:
            return
        self.last_ts = ts
        metrics: dict[str, Any] = {"power_w": 0.0}
        if self.last_total is not None:
            metrics["energy_import_wh"] = self.last_total
        self.ctx.publish_reading(self.device, metrics, ts=ts, quality="estimated")

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> None:
        ctx = self.ctx
        ctx.log.info("%s: polling %s every %g s for the %s flow", self.device, self.api.url,
                     self.cfg.interval, self.cfg.role)
        next_due = self.clock()
        try:
            while not ctx.stopping.is_set():
                try:
                    self.poll_once()
                except Exception:  # a bug or an answer no table foresaw: log it, keep polling
                    ctx.counters.inc("internal_errors")
                    ctx.log.exception("%s: unexpected error while polling", self.device)
                next_due += self.cfg.interval
                now = self.clock()
                if next_due < now:  # a slow poll or an outage: skip the missed slots, keep the cadence
                    next_due = now + self.cfg.interval - (now - next_due) % self.cfg.interval
                if ctx.wait(next_due - now):
                    break
        finally:
            self._set_online(False)
            self.api.close()
