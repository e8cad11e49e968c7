"""Glue between the bus and the engine: sinks, the batch handler, publishing, the clock tick, live prices.

Order per batch, under one lock: feed the engine, upsert every changed bucket into the sink, then publish
them and return (the runtime then acknowledges the messages). If the sink refuses, the handler raises, nothing
is acknowledged and the runtime retries the same batch: the engine sees duplicates and the changed buckets
are still pending, so they are written then.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import orjson

from bus import rollup, topics
from bus.config import ConfigError
from bus.consumer import ConsumerContext
from bus.envelope import Reading, to_dict
from bus.sinks.base import Sink, SinkError, open_sink
from bus.tariff import Tariff, TariffError, parse_price_message
from consumers.aggregate import Config, duration_ms
from consumers.aggregate.balance import Site
from consumers.aggregate.calendar import Calendar
from consumers.aggregate.energy import Rules
from consumers.aggregate.engine import Engine, Settings


def _refs(refs: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(r.split("/", 1)) for r in refs)  # type: ignore[misc]


def build_engine(cfg: Config, tz, tariff: Tariff | None, rollups: Sink | None, readings: Sink | None,
                 log=None, clock=None) -> Engine:
    """An engine configured like the consumer (also used by the bench and the tests)."""
    site = None
    if cfg.grid:
        site = Site(cfg.site, _refs(cfg.grid), _refs(cfg.solar), _refs(cfg.battery), _refs(cfg.loads))
    elif cfg.loads:
        site = Site(cfg.site, (), (), (), _refs(cfg.loads))
    rules = Rules(gap_ms=duration_ms(cfg.gap, "gap"), max_power_w=cfg.max_power_w)
    settings = Settings(grace_ms=duration_ms(cfg.grace, "grace"), complete=cfg.complete,
                        restore_wait_s=duration_ms(cfg.restore_wait, "restore_wait") / 1000, rules=rules)
    kwargs = {"clock": clock} if clock is not None else {}
    engine = Engine(Calendar(tz), settings=settings, tariff=tariff, site=site if site and site.grid else None,
                    rollups=rollups, readings=readings, log=log, **kwargs)
    if site is not None and not site.grid:
        engine.roles.update(site.roles())  # loads priced without a site balance
    return engine


class AggregateService:
    def __init__(self, ctx: ConsumerContext, cfg: Config):
        self.ctx, self.cfg = ctx, cfg
        where = f"{ctx.app.path}: consumer.{ctx.name}"
        try:
            self.tariff = Tariff(ctx.app.tariff, ctx.tz) if ctx.app.tariff is not None else None
        except TariffError as exc:
            raise ConfigError([f"{ctx.app.path}: tariff: {exc}"]) from None
        try:
            self.rollups = open_sink(cfg.sink)
        except (ValueError, OSError) as exc:
            raise ConfigError([f"{where}.sink: {exc}"]) from None
        url = cfg.readings or next((c.sink for c in ctx.app.consumers.values()  # type: ignore[attr-defined]
                                    if c.type == "store"), cfg.sink)
        try:
            self.readings = open_sink(url)
        except (ValueError, OSError) as exc:
            raise ConfigError([f"{where}.readings: {exc}"]) from None
        self.engine = build_engine(cfg, ctx.tz, self.tariff, self.rollups, _SafeReadings(self.readings, ctx),
                                   log=ctx.log)
        self.lock = threading.Lock()
        self.publisher = Publisher(ctx)
        self._wake = threading.Event()
        self._spans: list[tuple[int, int]] = []
        self._spans_lock = threading.Lock()
        self.schema_ok = False
        self._seen = dict.fromkeys(self.engine.counters, 0)
        ctx.add_health(self._health)

    def _health(self) -> dict:
        snap = self.engine.snapshot()
        return {"sink": self.rollups.describe(), "devices": len(self.engine.devices),
                "aggregate": {k: v for k, v in snap.items() if v}}

    def run(self) -> None:
        ctx, cfg = self.ctx, self.cfg
        site = self.engine.site
        ctx.log.info("aggregating into %s (rollups; raw readings from %s), site %s, tariff %s",
                     self.rollups.describe(), self.readings.describe(),
                     f"{site.name}: grid {', '.join('/'.join(k) for k in site.grid)}" if site else "none",
                     self.tariff.currency if self.tariff else "none")
        if self.tariff is not None:
            for topic, side in self.tariff.topics().items():
                ctx.subscribe(topic, self._prices(side))
        ticker = threading.Thread(target=self._tick_loop, name="agg-tick", daemon=True)
        ticker.start()
        ctx.consume_readings(self.handle, topic_filter=cfg.topics, batch_max=cfg.batch_max,
                             batch_wait=cfg.batch_wait)

    def handle(self, readings: list[Reading]) -> None:
        with self.lock:
            if not self.schema_ok:
                self.rollups.ensure_schema()
                self.schema_ok = True
            try:
                self.engine.feed(readings)
                self._flush()
            except Exception:
                self.schema_ok = False  # look again at the next try: the database may come back empty
                raise
            rejected, self.engine.rejected = self.engine.rejected, []
        for r, reason in rejected:
            self.ctx.dead_letter(orjson.dumps(to_dict(r)), reason, topics.reading(r.source, r.device))
        self._count()
        self.publisher.wait_for_room()  # outside the lock: the MQTT thread may need it meanwhile

    def _flush(self) -> None:
        """Write the pending buckets (raises when the sink refuses: they stay pending), then publish them."""
        pending = self.engine.pending()
        if not pending:
            return
        self.rollups.write_buckets([b for b, _ in pending])
        self.engine.written()
        for b, retain in pending:
            self.publisher.offer((b.source, b.device, b.period, b.start),
                                 topics.aggregate(b.source, b.device, b.period), rollup.encode(b), retain)

    def _count(self) -> None:
        snap = self.engine.snapshot()
        for k, v in snap.items():
            if v != self._seen.get(k, 0):
                self.ctx.counters.inc(k, v - self._seen.get(k, 0))
        self._seen = snap

    def _tick_loop(self) -> None:
        """Statuses by the clock every ``tick``, and repricing as soon as new prices came in."""
        every = max(1.0, duration_ms(self.cfg.tick, "tick") / 1000)
        next_tick = time.monotonic() + every
        while not self.ctx.stopping.is_set():
            self._wake.wait(max(0.0, next_tick - time.monotonic()))
            self._wake.clear()
            if self.ctx.stopping.is_set():
                return
            with self._spans_lock:
                spans, self._spans = self._spans, []
            due = time.monotonic() >= next_tick
            if due:
                next_tick = time.monotonic() + every
            try:
                with self.lock:
                    for lo, hi in spans:
                        self.engine.reprice(lo, hi)
                    if due:
                        self.engine.tick()
                    if not self.schema_ok:
                        continue
                    self._flush()
            except SinkError as exc:
                self.ctx.log.warning("status check: sink unavailable, will retry: %s", exc)
            except Exception:  # the tick must never take the process down
                self.ctx.log.exception("status check failed")

    def _prices(self, side):
        def on_message(msg) -> None:
            try:
                entries = parse_price_message(msg.payload, self.ctx.tz)
            except TariffError as exc:
                self.ctx.dead_letter(msg.payload, str(exc), msg.topic)
                return
            span = side.dynamic.merge(entries)
            self.ctx.log.info("prices: %d entries from %s", len(entries), msg.topic)
            if span is not None:  # repriced by the tick thread: this is the MQTT thread, it must not wait
                with self._spans_lock:
                    self._spans.append(span)
                self._wake.set()

        return on_message

    def close(self) -> None:
        self._wake.set()  # let the tick thread see the stop
        with self.lock:
            try:
                if self.schema_ok:
                    self._flush()
            except Exception as exc:
                self.ctx.log.warning("could not write the last buckets (they are recomputed at the next "
                                     "start from the redelivered readings): %s", exc)
            c = self.engine.counters
            self.ctx.log.info("stopping: %d readings, %d buckets written, %d duplicates, %d late filled, "
                              "%d late after closing", c["readings"], c["buckets_written"], c["duplicates"],
                              c["late_filled"], c["late_closed"])
            self.rollups.close()
            self.readings.close()
        self.publisher.close()


class Publisher:
    """Publishes buckets from its own thread, the newest version of each, at most ``window`` awaiting PUBACK.

    Aggregating runs ahead of what an MQTT client can publish during a replay (each publish and PUBACK costs
    tens of microseconds in paho). Buckets wait here keyed by (source, device, period, start): a bucket that
    changes again before it went out is sent once, in its latest state, in the order buckets first changed (so
    the retained message of a topic ends as its newest bucket). Publishing is not part of handling a batch:
    the rollups table is, and the batch is acknowledged once that is written. Past ``cap`` waiting buckets
    the handler waits, which keeps memory bounded and pushes back on the broker."""

    def __init__(self, ctx: ConsumerContext, window: int = 1000, cap: int = 5000):
        self.ctx, self.window, self.cap = ctx, window, cap
        self.waiting: OrderedDict[tuple, tuple[str, bytes, bool]] = OrderedDict()
        self.inflight = 0
        self.sent = 0
        self._cv = threading.Condition()
        self._closed = False
        ctx.client.on_publish(self._acked)
        self._thread = threading.Thread(target=self._run, name="agg-publish", daemon=True)
        self._thread.start()

    def _acked(self, mid: int, code: int = 0, topic: str = "") -> None:
        """Any PUBACK frees a place (refused ones too: the bus counts and logs those)."""
        with self._cv:
            self.inflight = max(0, self.inflight - 1)
            self._cv.notify_all()

    def offer(self, key: tuple, topic: str, payload: bytes, retain: bool) -> None:
        with self._cv:
            self.waiting[key] = (topic, payload, retain)
            self._cv.notify_all()

    def wait_for_room(self, patience_s: float = 30.0) -> None:
        """Wait while more than ``cap`` buckets wait (the broker is slower than aggregating, or away)."""
        deadline = time.monotonic() + patience_s
        with self._cv:
            while len(self.waiting) > self.cap and not self.ctx.stopping.is_set():
                if time.monotonic() > deadline:
                    self.ctx.log.warning("%d buckets wait to be published (is the broker away?); going on",
                                         len(self.waiting))
                    return
                self._cv.wait(0.2)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self.waiting or self.inflight >= self.window):
                    self._cv.wait(0.2)
                if not self.waiting:
                    return  # closed and nothing left
                _, (topic, payload, retain) = self.waiting.popitem(last=False)
                self.inflight += 1
                self._cv.notify_all()
            try:
                self.ctx.publish(topic, payload, retain=retain)
                self.sent += 1
            except Exception:  # publishing must never stop aggregating; the rollups table has the bucket
                self.ctx.log.exception("publishing %s failed", topic)

    def close(self, timeout: float = 3.0) -> None:
        """Send what is waiting (up to ``timeout``), then stop the thread."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.waiting and time.monotonic() < deadline:
                self._cv.wait(0.1)
            left = len(self.waiting)
            self._closed = True
            self.waiting.clear()
            self._cv.notify_all()
        if left:
            self.ctx.log.warning("stopping with %d buckets not published (they are in the rollups table)",
                                 left)
        self._thread.join(timeout=2)


class _SafeReadings:
    """The store's readings as the engine reads them at start: a missing table reads as empty."""

    def __init__(self, sink: Sink, ctx: ConsumerContext):
        self.sink, self.ctx = sink, ctx

    def describe(self) -> str:
        return self.sink.describe()

    def read(self, source: str, device: str, start_ms: int, end_ms: int):
        try:
            yield from self.sink.read(source, device, start_ms, end_ms)
        except SinkError:
            raise
        except Exception as exc:  # e.g. sqlite: no such table (no store has run yet)
            self.ctx.log.warning("cannot read stored readings of %s/%s from %s: %s", source, device,
                                 self.sink.describe(), exc)
