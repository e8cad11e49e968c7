"""The interface every storage backend implements, and the URL -> backend registry.

All sinks share one contract (DESIGN.md "Storage"): create or migrate their schema, write a batch
idempotently on ``(source, device, ts)`` and durably before returning, read a time range back, close.
The store consumer acknowledges MQTT messages only after ``write`` returned, so a crash means
redelivery, and idempotence means redelivery changes nothing.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

from bus.envelope import Reading
from bus.rollup import Bucket
from schemas import METRICS

SINKS: dict[str, str] = {
    "sqlite": "bus.sinks.sqlite:SqliteSink",
    "mysql": "bus.sinks.mysql:MysqlSink",
    "mongodb": "bus.sinks.mongo:MongoSink",
    "influx": "bus.sinks.influx:InfluxSink",
}
"""URL scheme -> sink class. Adding a backend is one module plus one line here."""


class SinkError(Exception):
    """The database itself is unavailable (down, locked, full, unreachable): retry with backoff, ack
    nothing."""


class DataError(SinkError):
    """The database refused *this data*: writing the same batch again can never succeed.

    The consumer runtime splits such a batch until the readings the database refuses are isolated, sends them
    to the DLQ with the database's reason and stores the rest (``bus.consumer.write_isolating``). Every sink
    sorts its driver's errors into the two kinds; an error it cannot place counts as the database's (retrying
    is the safe mistake: it delays, where the other one would throw readings away). A subclass of SinkError,
    so code that does not know the difference keeps treating it as an outage.
    """


class Sink(ABC):
    """A place readings are kept."""

    def __init__(self, url: str):
        self.url = url

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the schema, or migrate an older one, recording its version."""

    @abstractmethod
    def write(self, readings: Sequence[Reading]) -> None:
        """Store ``readings`` durably; writing the same reading twice leaves one copy.

        Raises DataError when the database refuses the data, SinkError when the database is unavailable.
        """

    @abstractmethod
    def read(self, source: str, device: str, start_ms: int, end_ms: int) -> Iterator[Reading]:
        """Readings of one device with ``start_ms <= ts < end_ms``, oldest first."""

    def count(self, source: str, device: str, start_ms: int = 0, end_ms: int = 2**53) -> int:
        """How many readings of one device are stored (backends override with a cheap query)."""
        return sum(1 for _ in self.read(source, device, start_ms, end_ms))

    def devices(self) -> list[tuple[str, str, int]] | None:
        """Every ``(source, device, last ts)`` with stored readings; None where a backend cannot list them.

        The API merges this with what it sees on the bus, so a device that is silent since the API started
        still shows; backends override it with a cheap query.
        """
        return None

    def read_downsampled(self, source: str, device: str, start_ms: int, end_ms: int,
                         step_ms: int) -> list[Reading]:
        """Readings of ``start_ms <= ts < end_ms`` merged into ``step_ms`` slots (epoch-aligned).

        Each slot is one reading stamped with the slot's start and ``period_s`` = the step: gauges are
        averaged, counters keep their last value, interval energies are summed (by the metrics table's
        kind), so a chart of a year does not carry half a million points. Backends override it with a
        query that does the same inside the database.
        """
        slots: dict[int, tuple[dict[str, float], dict[str, int]]] = {}
        for r in self.read(source, device, start_ms, end_ms):
            if not r.metrics:
                continue
            slot = r.ts - r.ts % step_ms
            sums, counts = slots.setdefault(slot, ({}, {}))
            for key, value in r.metrics.items():
                kind = METRICS[key].kind if key in METRICS else "gauge"
                if kind == "counter":
                    sums[key] = value
                    counts[key] = 1
                else:
                    sums[key] = sums.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
        out = []
        for slot, (sums, counts) in sorted(slots.items()):
            metrics = {k: (v / counts[k] if METRICS.get(k) is None or METRICS[k].kind == "gauge" else v)
                       for k, v in sums.items()}
            out.append(Reading(source, device, slot, metrics, None, step_ms / 1000, "ok"))
        return out

    # -- rollups: the aggregate consumer's calendar buckets (bus.rollup) --------------------------
    def write_buckets(self, buckets: Sequence[Bucket]) -> None:
        """Upsert buckets durably, idempotent on ``(source, device, period, start)``."""
        raise NotImplementedError(f"{type(self).__name__} does not store rollups yet")

    def read_buckets(self, source: str, device: str, period: str, start_ms: int, end_ms: int) -> list[Bucket]:
        """Buckets of one device and period with ``start_ms <= start < end_ms``, oldest first."""
        raise NotImplementedError(f"{type(self).__name__} does not store rollups yet")

    def close(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        """The URL without secrets, for logs."""
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        return f"{parts.scheme}://{netloc}{parts.path}"


def open_sink(url: str) -> Sink:
    scheme = urlsplit(url).scheme
    target = SINKS.get(scheme)
    if target is None:
        raise ValueError(f"unknown sink URL scheme {scheme!r} in {url!r} (expected one of: {', '.join(SINKS)})")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(url)
