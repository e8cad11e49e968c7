"""Aggregate tests: an engine configured like the consumer, hand-made readings, the buckets it writes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from bus.envelope import Reading
from bus.rollup import Bucket
from bus.tariff import Tariff, TariffConfig
from consumers.aggregate import Config
from consumers.aggregate.engine import Engine
from consumers.aggregate.service import build_engine

BRUSSELS = ZoneInfo("Europe/Brussels")
MIN = 60_000
HOUR = 3_600_000
WALL_2030 = 1_900_000_000.0  # a wall clock long after the test data: buckets go by data time


def local_ms(text: str, tz: ZoneInfo = BRUSSELS, fold: int = 0) -> int:
    """Epoch ms of a local wall-clock time, e.g. local_ms('2024-10-27 02:30', fold=1)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold).timestamp() * 1000)


def make_engine(
    tz: ZoneInfo = BRUSSELS,
    *,
    tariff: dict | None = None,
    rollups=None,
    readings=None,
    clock=lambda: WALL_2030,
    **cfg,
) -> Engine:
    config = msgspec.convert({"type": "aggregate", **cfg}, Config)
    t = Tariff(msgspec.convert(tariff, TariffConfig), tz) if tariff is not None else None
    return build_engine(config, tz, t, rollups, readings, clock=clock)


class Run:
    """Feeds an engine and keeps the newest version of every bucket it writes (as the rollups table would)."""

    def __init__(self, engine: Engine, sink=None):
        self.engine, self.sink = engine, sink
        self.buckets: dict[tuple[str, str, str, int], Bucket] = {}
        self.writes: list[Bucket] = []

    def feed(self, readings: list[Reading], batch: int | None = None) -> "Run":
        batch = batch or max(1, len(readings))
        for i in range(0, len(readings), batch):
            self.engine.feed(list(readings[i : i + batch]))
            self.flush()
        return self

    def flush(self) -> None:
        pending = self.engine.pending()
        if self.sink is not None and pending:
            self.sink.write_buckets([b for b, _ in pending])
        self.engine.written()
        for b, _ in pending:
            self.writes.append(b)
            self.buckets[(b.source, b.device, b.period, b.start)] = b

    def get(self, source: str, device: str, period: str, start: int) -> Bucket:
        return self.buckets[(source, device, period, start)]

    def period(self, source: str, device: str, period: str) -> list[Bucket]:
        return sorted(
            (b for (s, d, p, _), b in self.buckets.items() if (s, d, p) == (source, device, period)),
            key=lambda b: b.start,
        )


def reading(
    device: str,
    ts: int,
    metrics: dict,
    *,
    source: str = "shelly",
    period_s: float = 0.0,
    quality: str = "ok",
    seq: int | None = None,
) -> Reading:
    return Reading(source, device, ts, metrics, seq, period_s, quality)


def values(b: Bucket) -> dict:
    """A bucket without its write counter (``rev`` counts writes, which depend on batching)."""
    d = msgspec.structs.asdict(b)
    d.pop("rev")
    return d
