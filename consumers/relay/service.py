"""The relay consumer's glue: readings, commands and prices in; outputs switched; state out, retained.

Three threads meet here: the readings handler (``consume_readings``), the MQTT thread (commands, prices,
the restored state) and the worker that decides and switches. The controllers are guarded by one lock; the
worker switches outside it, because a device that does not confirm takes seconds to give up.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import orjson

from bus import topics
from bus.config import ConfigError
from bus.consumer import ConsumerContext
from bus.envelope import Reading
from bus.mqtt import Message
from bus.secrets import SecretError
from bus.tariff import Price, Tariff, TariffError, parse_price_message
from consumers.relay import Config, RelayConfig
from consumers.relay.engine import MODES, Controller
from consumers.relay.outputs import Output, OutputError, open_output

MAX_COMMAND = 64
RETRY_AFTER_S = 10.0
"""After an output failed to confirm, the next attempt waits this long (the output already retried)."""
SAFE_STOP_S = 6.0


@dataclass
class Relay:
    name: str
    cfg: RelayConfig
    ctl: Controller
    output: Output
    actual: bool | None = None
    """What the device last confirmed (None: not yet since start)."""
    reason: str = "starting: safe state until input arrives"
    error: str | None = None
    failed_at: float = 0.0
    published: tuple | None = None
    restored: threading.Event = field(default_factory=threading.Event)
    switchings: int = 0
    failures: int = 0


class RelayService:
    def __init__(self, ctx: ConsumerContext, cfg: Config) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.lock = threading.Lock()
        self.wake = threading.Event()
        try:
            self.tariff = Tariff(ctx.app.tariff, ctx.tz) if ctx.app.tariff is not None else None
        except TariffError as exc:
            raise ConfigError([f"{ctx.app.path}: tariff: {exc}"]) from None
        price_at = self.tariff.import_price if self.tariff is not None else None
        self.relays: dict[str, Relay] = {}
        for name, rc in cfg.relay.items():
            try:
                output = open_output(rc.output, ctx.client, ctx.log, name)
            except SecretError as exc:
                raise ConfigError([f"{ctx.app.path}: consumer.{ctx.name}.relay.{name}.output: {exc}"]) from None
            self.relays[name] = Relay(name, rc, Controller(rc.rules(), ctx.tz, price_at), output)
        self.grid = tuple(cfg.grid.split("/", 1)) if cfg.grid else None
        self.loads = {tuple(r.cfg.load.split("/", 1)): r for r in self.relays.values() if r.cfg.load}
        ctx.add_health(self._health)

    # -- input ---------------------------------------------------------------------------------------
    def handle(self, readings: list[Reading]) -> None:
        with self.lock:
            for r in readings:
                power = r.metrics.get("power_w")
                if power is None:
                    continue
                key = (r.source, r.device)
                if key == self.grid:
                    for relay in self.relays.values():
                        relay.ctl.grid(r.ts / 1000, power)
                if (relay := self.loads.get(key)) is not None:
                    relay.ctl.load(r.ts / 1000, power)
        self.wake.set()

    def _command(self, relay: Relay):
        def on_message(msg: Message) -> None:
            word = msg.payload[:MAX_COMMAND + 1].decode("utf-8", "replace").strip().lower()
            if len(msg.payload) > MAX_COMMAND or word not in MODES:
                self.ctx.counters.inc("commands_rejected")
                self.ctx.dead_letter(msg.payload, f"relay command must be one of {', '.join(MODES)}",
                                     msg.topic)
                return
            with self.lock:
                relay.ctl.command(word, time.time())
            self.ctx.log.info("relay %s: mode %s (command on %s)", relay.name, word, msg.topic)
            self.wake.set()

        return on_message

    def _restore(self, relay: Relay):
        """The retained state of the previous run: its manual mode goes on, unless expired."""

        def on_message(msg: Message) -> None:
            msg.ack()
            if relay.restored.is_set():
                return  # our own state coming back
            relay.restored.set()
            try:
                body = orjson.loads(msg.payload)
                mode, until = body["mode"], body.get("manual_until")
                until_s = None if until is None else float(until) / 1000
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return  # not ours, or from an older version: start in auto
            with self.lock:
                relay.ctl.restore(mode, until_s, time.time())
            if relay.ctl.mode != "auto":
                self.ctx.log.info("relay %s: manual %s restored from its retained state", relay.name, mode)
            self.wake.set()

        return on_message

    def _prices(self, side: Price):
        def on_message(msg: Message) -> None:
            try:
                entries = parse_price_message(msg.payload, self.ctx.tz)
            except TariffError as exc:
                self.ctx.dead_letter(msg.payload, str(exc), msg.topic)
                return
            side.dynamic.merge(entries)  # type: ignore[union-attr]
            with self.lock:
                for relay in self.relays.values():
                    relay.ctl.prices_changed()
            self.ctx.log.info("prices: %d entries from %s", len(entries), msg.topic)
            self.wake.set()

        return on_message

    # -- deciding and switching --------------------------------------------------------------------------
    def step(self) -> None:
        now = time.time()
        for relay in self.relays.values():
            with self.lock:
                decision = relay.ctl.decide(now)
            if decision.on != relay.actual and now - relay.failed_at >= RETRY_AFTER_S:
                self._switch(relay, decision.on, decision.reason)
            self._publish(relay)

    def _switch(self, relay: Relay, on: bool, reason: str) -> None:
        try:
            relay.output.set(on)
        except OutputError as exc:
            relay.error, relay.failed_at = str(exc), time.time()
            relay.failures += 1
            self.ctx.counters.inc("output_failures")
            self.ctx.log.warning("relay %s: %s", relay.name, exc)
            return
        with self.lock:
            relay.ctl.switched(on, time.time())
        if relay.actual is not None:
            relay.switchings += 1
            self.ctx.counters.inc("switchings")
        relay.actual, relay.reason, relay.error, relay.failed_at = on, reason, None, 0.0
        self.ctx.log.info("relay %s: %s (%s)", relay.name, "on" if on else "off", reason)

    def _publish(self, relay: Relay) -> None:
        ctl = relay.ctl
        key = (relay.actual, ctl.mode, ctl.manual_until, relay.reason, relay.error)
        if key == relay.published:
            return
        relay.published = key
        body = {"state": "on" if relay.actual else "off", "mode": ctl.mode, "reason": relay.reason,
                "since": int(ctl.since * 1000) if ctl.since is not None else None,
                "manual_until": int(ctl.manual_until * 1000) if ctl.manual_until is not None else None,
                "error": relay.error, "ts": int(time.time() * 1000)}
        if relay.actual is None:
            body["state"] = "unknown"
        self.ctx.publish(topics.relay_state(relay.name), body, retain=True)

    def _health(self) -> dict:
        return {"relays": {r.name: {"state": {True: "on", False: "off", None: "unknown"}[r.actual],
                                    "mode": r.ctl.mode, "switchings": r.switchings, "failures": r.failures,
                                    "error": r.error} for r in self.relays.values()}}

    def work(self) -> None:
        while not self.ctx.stopping.is_set():
            self.wake.wait(self.cfg.tick)
            self.wake.clear()
            if self.ctx.stopping.is_set():
                break
            try:
                self.step()
            except Exception:  # the worker must outlive any surprise; the next tick tries again
                self.ctx.log.exception("relay step failed")

    def safe_stop(self, budget_s: float = SAFE_STOP_S) -> None:
        """SIGTERM: every relay to its safe state, all at once and within ``budget_s`` (the process must exit
        within 10 s; a device that does not confirm by then is reported in the state it is left with)."""
        moving = []
        for relay in self.relays.values():
            safe = relay.cfg.safe_state == "on"
            if relay.actual != safe:
                t = threading.Thread(target=self._switch, args=(relay, safe, "stopped: safe state"), daemon=True)
                t.start()
                moving.append(t)
            else:
                relay.reason = "stopped: safe state"
        deadline = time.monotonic() + budget_s
        for t in moving:
            t.join(max(0.0, deadline - time.monotonic()))
        for relay in self.relays.values():
            self._publish(relay)
            relay.output.close()


def serve(ctx: ConsumerContext, cfg: Config) -> None:
    svc = RelayService(ctx, cfg)
    ctx.client.wait_connected(10)
    acked = [ctx.client.subscribe(topics.relay_state(r.name), svc._restore(r)) for r in svc.relays.values()]
    for event in acked:  # retained states follow the acknowledgement: read them before publishing ours
        if event is not None:
            event.wait(5)
    for relay in svc.relays.values():
        relay.restored.wait(0.5)
        relay.restored.set()
        ctx.subscribe(topics.relay_set(relay.name), svc._command(relay))
    if svc.tariff is not None:
        for topic, side in svc.tariff.topics().items():
            ctx.subscribe(topic, svc._prices(side))
    filters = [topics.reading(*k) for k in ([svc.grid] if svc.grid else []) + list(svc.loads)]
    ctx.log.info("driving %d relay(s): %s; grid %s", len(svc.relays),
                 ", ".join(f"{n} ({r.output.kind})" for n, r in svc.relays.items()), cfg.grid or "none")
    for relay in svc.relays.values():  # the safe state until input arrives
        svc._switch(relay, relay.cfg.safe_state == "on", relay.reason)
        svc._publish(relay)
    worker = threading.Thread(target=svc.work, name="relay-worker", daemon=True)
    worker.start()
    try:
        if filters:
            ctx.consume_readings(svc.handle, topic_filter=filters)
        else:
            ctx.stopping.wait()
    finally:
        ctx.stopping.set()
        svc.wake.set()
        worker.join(15)
        svc.safe_stop()
