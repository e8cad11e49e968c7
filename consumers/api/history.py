"""History from the store's sink (raw readings) and the aggregate consumer's ``rollups``, off the event loop.

Sinks are blocking clients (sqlite3, pymysql, pymongo...). Each runs in a small pool of worker threads, one
sink connection per thread, so a slow year-long query never stalls the event loop and a busy dashboard
cannot open a connection per request. A database that is away is a 503 problem document naming the store
and its error (the request itself was fine); the connection is reopened on the next request.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bus.envelope import Reading
from bus.rollup import Bucket
from bus.sinks import Sink, open_sink

T = TypeVar("T")
DEVICES_TTL_S = 10.0


class StoreUnavailable(Exception):
    """The sink could not answer (database away, file unreadable); the reason is safe to show."""


class History:
    def __init__(self, url: str | None, workers: int = 2):
        self.url = url
        self._local = threading.local()
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="history")
        self._devices: tuple[float, list[tuple[str, str, int]]] = (0.0, [])
        self.can_list = True
        """False when the sink cannot list its devices: then an unknown device is asked of the store anyway."""

    def describe(self) -> str:
        if self.url is None:
            return "no store configured"
        return open_sink(self.url).describe()

    def _sink(self) -> Sink:
        sink = getattr(self._local, "sink", None)
        if sink is None:
            if self.url is None:
                raise StoreUnavailable("no store is configured: set `sink` in [consumer.api] "
                                       "or configure a store consumer")
            sink = open_sink(self.url)
            sink.ensure_schema()
            self._local.sink = sink
            with self._lock:
                self._sinks.append(sink)
        return sink

    async def run(self, fn: Callable[[Sink], T]) -> T:
        def call() -> T:
            try:
                return fn(self._sink())
            except StoreUnavailable:
                raise
            except Exception as exc:  # any database error: a clear reason, the connection reopened next time
                self._local.sink = None
                raise StoreUnavailable(f"the store ({self.url and open_sink(self.url).describe()}) "
                                       f"did not answer: {type(exc).__name__}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def readings(self, source: str, device: str, start_ms: int, end_ms: int,
                       step_ms: int | None) -> list[Reading]:
        if step_ms is None:
            return await self.run(lambda s: list(s.read(source, device, start_ms, end_ms)))
        return await self.run(lambda s: s.read_downsampled(source, device, start_ms, end_ms, step_ms))

    async def buckets(self, source: str, device: str, period: str, start_ms: int, end_ms: int) -> list[Bucket]:
        return await self.run(lambda s: s.read_buckets(source, device, period, start_ms, end_ms))

    async def latest(self, source: str, device: str, last_ts: int) -> Reading | None:
        got = await self.run(lambda s: list(s.read(source, device, last_ts, last_ts + 1)))
        return got[-1] if got else None

    async def devices(self) -> list[tuple[str, str, int]]:
        """Stored devices, cached for a few seconds (the dashboard asks on every page)."""
        at, cached = self._devices
        if time.monotonic() - at < DEVICES_TTL_S:
            return cached
        try:
            got = await self.run(lambda s: s.devices())
        except StoreUnavailable:
            got = cached
        if got is None:
            self.can_list, got = False, []
        self._devices = (time.monotonic(), got)
        return got

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for sink in self._sinks:
                try:
                    sink.close()
                except Exception:
                    pass
