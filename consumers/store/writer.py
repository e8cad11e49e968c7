"""Glue between the consumer runtime and a sink: schema at start, outage state logged once, counters.

While the sink refuses a batch, ``write`` raises: the runtime retries it with backoff and acknowledges
nothing, so the broker keeps the rest in the store's persistent session. With a spool configured, a refused
batch goes to disk instead and is acknowledged; a background thread writes the spool into the sink, oldest
first, once it is back (see spool.py).

A DataError (the database refuses these readings, not an outage) is neither an outage nor spooled: it goes
back to the runtime, which splits the batch until the refused readings are isolated and dead-lettered
(``bus.consumer.write_isolating``); the spool drainer does the same with what it replays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tenacity import Retrying, retry_if_not_exception_type, wait_exponential

from bus import topics
from bus.consumer import ConsumerContext, Stopping, write_isolating
from bus.envelope import Reading
from bus.sinks.base import DataError, Sink, open_sink
from consumers.store.spool import Spool


class StoreWriter:
    def __init__(self, ctx: ConsumerContext, url: str, *, spool_dir: str | Path | None = None,
                 spool_max_bytes: int = 1 << 30):
        self.ctx = ctx
        self.sink: Sink = open_sink(url)
        self.spool = Spool(spool_dir, spool_max_bytes) if spool_dir else None
        self._schema_ok = False
        self._down = False
        self._sink_lock = threading.Lock()  # one sink call at a time: intake thread and spool drainer
        self._state_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._drainer: threading.Thread | None = None
        self.stored = 0
        ctx.add_health(self._health)

    def _health(self) -> dict:
        doc = {"sink": self.sink.describe(), "sink_up": not self._down}
        if self.spool is not None:
            doc.update(spool_readings=self.spool.readings, spool_bytes=self.spool.bytes)
        return doc

    def start(self) -> None:
        self.ctx.log.info("storing into %s", self.sink.describe())
        if self.spool is not None:
            for path in self.spool.corrupt:
                self.ctx.counters.inc("spool_corrupt")
                self.ctx.log.error("spool file %s is unreadable; set aside, not replayed", path)
            if len(self.spool):
                self.ctx.log.info("spool %s holds %d readings from an earlier run; writing them first",
                                  self.spool.dir, self.spool.readings)
            self._drainer = threading.Thread(target=self._drain_loop, name="spool-drain", daemon=True)
            self._drainer.start()

    def write(self, readings: Sequence[Reading]) -> None:
        """Called by the runtime with a batch; raising means 'not stored, retry, acknowledge nothing'."""
        if self.spool is not None and (self._down or len(self.spool)):
            self._to_spool(readings)  # keep order: older spooled batches go in first
            return
        try:
            self._write_sink(readings)
        except DataError:
            raise  # about these readings, not the database: the runtime isolates them
        except Exception as exc:
            self._went_down(exc, len(readings))
            if self.spool is None:
                raise
            self._to_spool(readings)
            return
        self._came_back(len(readings))

    # -- internals -------------------------------------------------------------------------------
    def _write_sink(self, readings: Sequence[Reading]) -> None:
        with self._sink_lock:
            try:
                if not self._schema_ok:
                    self.sink.ensure_schema()
                    self._schema_ok = True
                self.sink.write(readings)
            except DataError:
                raise
            except Exception:
                self._schema_ok = False  # check again next time: the database may come back empty
                raise
        self.stored += len(readings)
        self.ctx.counters.inc("stored", len(readings))

    def _went_down(self, exc: Exception, held: int) -> None:
        spooled = self.spool.readings if self.spool is not None else 0
        self.ctx.counters.set("sink_backlog", held + spooled)
        with self._state_lock:
            if self._down:
                return
            self._down = True
        self.ctx.counters.inc("sink_outages")
        if self.spool is None:
            what = f"holding {held} readings, acknowledging nothing meanwhile"
        else:
            what = f"spooling to {self.spool.dir} ({spooled} readings there)"
        self.ctx.log.error("sink %s unavailable; %s: %s", self.sink.describe(), what, exc)
        self._publish_health()

    def _came_back(self, n: int) -> None:
        spooled = self.spool.readings if self.spool is not None else 0
        self.ctx.counters.set("sink_backlog", spooled)
        with self._state_lock:
            if not self._down:
                return
            self._down = False
        self.ctx.log.info("sink %s is back; stored %d held readings%s", self.sink.describe(), n,
                          f", {spooled} still in the spool" if spooled else "")
        self._publish_health()

    def _publish_health(self) -> None:
        """Show an outage's start and end in the retained health document now, not at the next 30 s tick."""
        try:
            self.ctx.publish(topics.process_health(self.ctx.name), self.ctx.health(), retain=True)
        except Exception:  # health must never get in the way of storing
            self.ctx.log.debug("could not publish health", exc_info=True)

    def _to_spool(self, readings: Sequence[Reading]) -> None:
        """Raises SpoolFull/OSError when the spool cannot take them: the runtime retries, acks nothing."""
        assert self.spool is not None
        self.spool.append(readings)
        self.ctx.counters.inc("spooled", len(readings))
        self.ctx.counters.set("sink_backlog", self.spool.readings)
        self._wake.set()

    def _drain_loop(self) -> None:
        assert self.spool is not None
        retrying = Retrying(wait=wait_exponential(multiplier=0.5, max=30),
                            retry=retry_if_not_exception_type(Stopping), sleep=self._sleep_or_stop,
                            reraise=True)
        while not (self.ctx.stopping.is_set() or self._closed.is_set()):
            item = self.spool.oldest()
            if item is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            path, readings = item
            try:
                retrying(self._drain_one, readings)
            except Stopping:
                return
            self.spool.remove(path)
            self._came_back(len(readings))
            if not len(self.spool):
                self.ctx.log.info("spool drained into %s", self.sink.describe())

    def _drain_one(self, readings: list[Reading]) -> None:
        try:
            write_isolating(self._write_sink, readings, self.ctx.poison)
        except Exception as exc:
            self._went_down(exc, 0)
            raise

    def _sleep_or_stop(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._closed.wait(min(left, 0.2)) or self.ctx.stopping.is_set():
                raise Stopping

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        self.ctx.log.info("stored %d readings in this run", self.stored)
        with self._sink_lock:
            self.sink.close()
        if self.spool is not None:
            self.spool.close()
