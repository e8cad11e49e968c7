"""The sim producer's main loop: a (possibly accelerated) clock, the meters, heartbeats, remote config.

One ``ctx.wait`` loop sleeps until the next reading or heartbeat is due; remote config arrives on the
MQTT thread and is applied under the meters' lock. A small saver thread publishes each meter's retained
state only once the broker has acknowledged every reading queued before it, so a restart never skips
a reading the broker did not get (at worst it regenerates readings already sent, identical ones, which
the sinks store idempotently).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from producers.sim.config import Config
from producers.sim.meter import SimMeter, Upload
from producers.sim.profile import Site
from bus.state import StateSaver

if TYPE_CHECKING:
    from bus.producer import ProducerContext


class SimClock:
    """Simulated time: starts at ``origin_s`` and runs ``speed`` times faster than the host's clock."""

    def __init__(self, origin_s: float, speed: float):
        self.origin_s, self.speed = origin_s, speed
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self.origin_s + (time.monotonic() - self._mono0) * self.speed

    def real_seconds_until(self, sim_s: float) -> float:
        return max(0.0, (sim_s - self.now()) / self.speed)


def start_time(cfg: Config, site: Site) -> float:
    """Config ``start`` (local in site.timezone unless it carries an offset) in epoch s, else now."""
    if cfg.start is None:
        return time.time()
    dt = datetime.fromisoformat(cfg.start)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=site.tz)
    return dt.timestamp()


def run(ctx: ProducerContext, cfg: Config) -> None:
    site_cfg = ctx.app.site
    site = Site(ctx.tz,
                cfg.latitude if cfg.latitude is not None else site_cfg.latitude,
                cfg.longitude if cfg.longitude is not None else site_cfg.longitude)
    meters = {m.serial: SimMeter(m, site, cfg.seed, cfg.interval, cfg.upload, cfg.backfill_days * 86400.0)
              for m in cfg.meters}
    lock = threading.Lock()
    saver = StateSaver(ctx, min_interval_s=1.0, name="sim-state")

    with ThreadPoolExecutor(max_workers=len(meters)) as pool:  # each lookup may wait for a retained message
        states = dict(zip(meters, pool.map(ctx.load_state, meters)))
    for serial, meter in meters.items():
        for warning in meter.restore(states[serial]):
            ctx.log.warning("%s: %s", serial, warning)
        if meter.anchor is not None:
            ctx.log.info("%s: counters restored at %s: import %.3f Wh, export %.3f Wh", serial,
                         datetime.fromtimestamp(meter.anchor.ts_ms / 1000, site.tz).isoformat(),
                         meter.anchor.import_wh, meter.anchor.export_wh)

    # resume where the meters stopped if they ran ahead of the configured start (accelerated or backdated)
    restored = [m.anchor.ts_ms / 1000 for m in meters.values() if m.anchor is not None]
    clock = SimClock(max([start_time(cfg, site), *restored]), cfg.speed)
    for meter in meters.values():
        meter.begin(clock.origin_s)
    ctx.log.info("simulating %d meter(s) from %s at %gx speed, a reading every %g s, upload %s",
                 len(meters), datetime.fromtimestamp(clock.origin_s, site.tz).isoformat(), cfg.speed,
                 cfg.interval, ", ".join(f"{s}={m.upload}" for s, m in meters.items()))

    def publish(meter: SimMeter, uploads: list[Upload]) -> None:
        for up in uploads:
            if up.batch:
                ctx.publish_readings(meter.serial, [r.item() for r in up.readings])
            else:
                r = up.readings[0]
                ctx.publish_reading(meter.serial, r.metrics(), ts=r.ts_ms)
        if uploads:
            saver.offer(meter.serial, meter.state())

    def answer(meter: SimMeter, error: str | None = None) -> None:
        body: dict[str, Any] = {"serial": meter.serial, "ok": error is None, "config": meter.describe(),
                                "ts": int(time.time() * 1000)}
        if error:
            body["error"] = error
        ctx.publish(f"{ctx.source}/{meter.serial}/config", body, retain=True)

    def on_config(meter: SimMeter, topic: str, payload: bytes) -> None:
        try:
            request = orjson.loads(payload) if payload.strip() else {}
        except orjson.JSONDecodeError:
            request = None
        with lock:
            try:
                if request is None:
                    raise ValueError("payload: expected a JSON object of keys to change, "
                                     "like {\"daily_kwh\": 12}")
                publish(meter, meter.update(request))
            except ValueError as exc:
                ctx.counters.inc("config_rejected")
                ctx.dead_letter(payload, f"config for {meter.serial}: {exc}", topic)
                answer(meter, str(exc))
                return
            ctx.counters.inc("config_updates")
            ctx.log.info("%s: config changed by %s: %s", meter.serial, topic, request)
            saver.offer(meter.serial, meter.state())
            answer(meter)

    started = time.monotonic()
    for serial, meter in meters.items():
        ctx.set_device_status(serial, True)
        answer(meter)
        ctx.subscribe(f"{ctx.source}/{serial}/config/set",
                      lambda topic, payload, m=meter: on_config(m, topic, payload))
        with lock:
            publish(meter, meter.step(clock.now(), catch_up=True))

    next_heartbeat = time.monotonic()
    try:
        while not ctx.stopping.is_set():
            now = clock.now()
            with lock:
                for meter in meters.values():
                    publish(meter, meter.step(now))
                    if meter.skipped:
                        ctx.counters.inc("readings_skipped", meter.skipped)
                        ctx.log.warning("%s: %d readings older than backfill_days skipped (energy counted)",
                                        meter.serial, meter.skipped)
                        meter.skipped = 0
            if time.monotonic() >= next_heartbeat:
                uptime = time.monotonic() - started
                for meter in meters.values():
                    ctx.publish(f"{ctx.source}/{meter.serial}/heartbeat", heartbeat(meter, clock, uptime))
                next_heartbeat += cfg.heartbeat
                if next_heartbeat < time.monotonic():  # fell behind (suspended host): no burst
                    next_heartbeat = time.monotonic() + cfg.heartbeat
            until_reading = min(clock.real_seconds_until(m.next_due_s()) for m in meters.values())
            if ctx.wait(min(until_reading, next_heartbeat - time.monotonic())):
                break
    finally:
        ctx.stopping.set()
        if not saver.save_now(timeout=5.0):
            ctx.log.warning("readings not acknowledged by the broker: state not saved "
                            "(they will be regenerated)")
        for serial in meters:
            ctx.set_device_status(serial, False)


def heartbeat(meter: SimMeter, clock: SimClock, uptime_s: float) -> dict[str, Any]:
    """The meter's ping: alive, since when, how far it got."""
    last = meter.anchor
    return {"serial": meter.serial, "ts": int(time.time() * 1000), "uptime_s": round(uptime_s, 1),
            "sim_time": int(clock.now() * 1000), "last_reading_ts": last.ts_ms if last else None,
            "upload": meter.upload, "pending": len(meter.pending),
            "energy_import_wh": round(last.import_wh, 3) if last else None,
            "energy_export_wh": round(last.export_wh, 3) if last else None}
