"""The sim producer's main loop: a (possibly accelerated) clock, the meters, heartbeats, remote config.

One ``ctx.wait`` loop sleeps until the next reading or heartbeat is due; remote config arrives on the
MQTT thread and is applied under the meters' lock. Each meter's retained state goes out through a
``StateSaver`` only once the broker has acknowledged every reading queued before it, so a restart never
skips a reading the broker did not get (at worst it regenerates readings already sent, identical ones,
which the sinks store idempotently).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import orjson

from bus import topics
from bus.clock import EmulatedClock
from bus.producer import ProducerContext
from bus.state import StateSaver
from producers.sim.config import Config
from producers.sim.meter import SimMeter, Upload
from producers.sim.profile import Site


def start_time(cfg: Config, site: Site) -> float:
    """Config ``start`` (local in site.timezone unless it carries an offset) in epoch s, else now."""
    if cfg.start is None:
        return time.time()
    dt = datetime.fromisoformat(cfg.start)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=site.tz)
    return dt.timestamp()


class Meters:
    """The configured meters of one sim process and what they say on the bus."""

    def __init__(self, ctx: ProducerContext, cfg: Config) -> None:
        self.ctx, self.cfg = ctx, cfg
        site_cfg = ctx.app.site
        self.site = Site(ctx.tz, cfg.latitude if cfg.latitude is not None else site_cfg.latitude,
                         cfg.longitude if cfg.longitude is not None else site_cfg.longitude)
        self.meters = {m.serial: SimMeter(m, self.site, cfg.seed, cfg.interval, cfg.upload,
                                          cfg.backfill_days * 86400.0) for m in cfg.meters}
        self.lock = threading.Lock()
        self.saver = StateSaver(ctx, min_interval_s=1.0, name="sim-state")
        self.started = time.monotonic()

    def restore(self) -> EmulatedClock:
        """Restore every meter from its retained state; the simulated clock resumes where they stopped."""
        ctx = self.ctx
        with ThreadPoolExecutor(max_workers=len(self.meters)) as pool:  # each lookup may wait its timeout
            states = dict(zip(self.meters, pool.map(ctx.load_state, self.meters)))
        for serial, meter in self.meters.items():
            for warning in meter.restore(states[serial]):
                ctx.log.warning("%s: %s", serial, warning)
            if meter.anchor is not None:
                ctx.log.info("%s: counters restored at %s: import %.3f Wh, export %.3f Wh", serial,
                             datetime.fromtimestamp(meter.anchor.ts_ms / 1000, self.site.tz).isoformat(),
                             meter.anchor.import_wh, meter.anchor.export_wh)
        # resume where the meters stopped if they ran ahead of the configured start (accelerated or backdated)
        restored = [m.anchor.ts_ms / 1000 for m in self.meters.values() if m.anchor is not None]
        clock = EmulatedClock(max([start_time(self.cfg, self.site), *restored]), self.cfg.speed)
        for meter in self.meters.values():
            meter.begin(clock.start)
        ctx.log.info("simulating %d meter(s) from %s at %gx speed, a reading every %g s, upload %s",
                     len(self.meters), datetime.fromtimestamp(clock.start, self.site.tz).isoformat(),
                     self.cfg.speed, self.cfg.interval,
                     ", ".join(f"{s}={m.upload}" for s, m in self.meters.items()))
        return clock

    def go_online(self, clock: EmulatedClock) -> None:
        """Status, current config, the config subscription and the catch-up readings of every meter."""
        for serial, meter in self.meters.items():
            self.ctx.set_device_status(serial, True)
            self.answer(meter)
            self.ctx.subscribe(topics.device_config_set(self.ctx.source, serial),
                               lambda topic, payload, m=meter: self.on_config(m, topic, payload))
            with self.lock:
                self.publish(meter, meter.step(clock.now(), catch_up=True))

    def publish(self, meter: SimMeter, uploads: list[Upload]) -> None:
        for up in uploads:
            if up.batch:
                self.ctx.publish_readings(meter.serial, [r.item() for r in up.readings])
            else:
                r = up.readings[0]
                self.ctx.publish_reading(meter.serial, r.metrics(), ts=r.ts_ms)
        if uploads:
            self.saver.offer(meter.serial, meter.state())

    def step(self, now: float) -> None:
        """Publish whatever every meter has due at simulated time ``now``."""
        with self.lock:
            for meter in self.meters.values():
                self.publish(meter, meter.step(now))
                if meter.skipped:
                    self.ctx.counters.inc("readings_skipped", meter.skipped)
                    self.ctx.log.warning("%s: %d readings older than backfill_days skipped (energy counted)",
                                         meter.serial, meter.skipped)
                    meter.skipped = 0

    def heartbeats(self, clock: EmulatedClock) -> None:
        uptime = time.monotonic() - self.started
        for meter in self.meters.values():
            self.ctx.publish(topics.heartbeat(self.ctx.source, meter.serial), heartbeat(meter, clock, uptime))

    def answer(self, meter: SimMeter, error: str | None = None) -> None:
        """The retained config answer: what the meter runs now, and why a change was refused."""
        body: dict[str, Any] = {"serial": meter.serial, "ok": error is None, "config": meter.describe(),
                                "ts": int(time.time() * 1000)}
        if error:
            body["error"] = error
        self.ctx.publish(topics.device_config(self.ctx.source, meter.serial), body, retain=True)

    def on_config(self, meter: SimMeter, topic: str, payload: bytes) -> None:
        """A remote change on ``sim/{serial}/config/set`` (MQTT thread): applied, or refused, with why."""
        ctx = self.ctx
        try:
            request = orjson.loads(payload) if payload.strip() else {}
        except orjson.JSONDecodeError:
            request = None
        with self.lock:
            try:
                if request is None:
                    raise ValueError("payload: expected a JSON object of keys to change, "
                                     "like {\"daily_kwh\": 12}")
                self.publish(meter, meter.update(request))
            except ValueError as exc:
                ctx.counters.inc("config_rejected")
                ctx.dead_letter(payload, f"config for {meter.serial}: {exc}", topic)
                self.answer(meter, str(exc))
                return
            ctx.counters.inc("config_updates")
            ctx.log.info("%s: config changed by %s: %s", meter.serial, topic, request)
            self.saver.offer(meter.serial, meter.state())
            self.answer(meter)

    def stop(self) -> None:
        if not self.saver.save_now(timeout=5.0):
            self.ctx.log.warning("readings not acknowledged by the broker: state not saved "
                                 "(they will be regenerated)")
        for serial in self.meters:
            self.ctx.set_device_status(serial, False)


def run(ctx: ProducerContext, cfg: Config) -> None:
    meters = Meters(ctx, cfg)
    clock = meters.restore()
    meters.go_online(clock)
    next_heartbeat = time.monotonic()
    try:
        while not ctx.stopping.is_set():
            meters.step(clock.now())
            if time.monotonic() >= next_heartbeat:
                meters.heartbeats(clock)
                next_heartbeat += cfg.heartbeat
                if next_heartbeat < time.monotonic():  # fell behind (suspended host): no burst
                    next_heartbeat = time.monotonic() + cfg.heartbeat
            until_reading = min(clock.real_seconds_until(m.next_due_s()) for m in meters.meters.values())
            if ctx.wait(min(until_reading, next_heartbeat - time.monotonic())):
                break
    finally:
        ctx.stopping.set()
        meters.stop()


def heartbeat(meter: SimMeter, clock: EmulatedClock, uptime_s: float) -> dict[str, Any]:
    """The meter's ping: alive, since when, how far it got."""
    last = meter.anchor
    return {"serial": meter.serial, "ts": int(time.time() * 1000), "uptime_s": round(uptime_s, 1),
            "sim_time": int(clock.now() * 1000), "last_reading_ts": last.ts_ms if last else None,
            "upload": meter.upload, "pending": len(meter.pending),
            "energy_import_wh": round(last.import_wh, 3) if last else None,
            "energy_export_wh": round(last.export_wh, 3) if last else None}
