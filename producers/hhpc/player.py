"""The hhpc loops: live (the row for *now*) and replay (a time range, paced or flat out)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from bus.producer import ProducerContext
from producers.hhpc import Config
from producers.hhpc.dataset import BadRow, iter_chunks, row_metrics
from producers.hhpc.localtime import chunk_epochs_ms, local_to_epoch_ms
from producers.hhpc.yeartable import dataset_day, load_year

BATCH_HOLD_S = 1.0
"""A paced replay holds a due reading at most this long to send it with the next ones in one message."""
REPLAY_QUEUE_HIGH = 64
"""Replay waits while this many messages are still queued: replay is not a device, backpressure is fine."""


def play(ctx: ProducerContext, cfg: Config) -> None:
    device = cfg.device or ctx.name
    path = Path(cfg.dataset)
    if not path.exists():
        ctx.log.error("dataset %s not found (make one with: wattbus emulate hhpc --year 2024 --out %s)",
                      path, path)
        ctx.set_device_status(device, False)
        ctx.stopping.wait()
        return
    (_live if cfg.mode == "live" else _replay)(ctx, cfg, device, path)
    ctx.set_device_status(device, False)


def _on_bad(ctx: ProducerContext, path: Path):
    def bad(b: BadRow) -> None:
        ctx.counters.inc("bad_rows")
        ctx.bad_input_log.warning("bad_row", "%s:%d: skipped bad row: %s", path, b.line, b.reason)

    return bad


def reading(ts: int, metrics: dict[str, float] | None, period_s: float) -> dict:
    """A replayed row as the batch item it is published as (``None`` metrics: the row has no values)."""
    if metrics is None:
        return {"ts": ts, "period_s": period_s, "quality": "missing", "metrics": {}}
    return {"ts": ts, "period_s": period_s, "quality": "ok", "metrics": metrics}


def replay_items(path: Path, tz, *, on_bad=None, on_gap=None) -> Iterator[tuple[int, dict[str, float] | None]]:
    """(epoch ms, metrics) of every row, in file order, a chunk at a time: no Row or datetime per line,
    which was most of a fast replay's time. Rows in a spring-forward gap go to ``on_gap``."""
    for c in iter_chunks(path, on_bad=on_bad):
        for ts, vals, nans in zip(chunk_epochs_ms(c.seconds, c.repeat, tz), c.values, c.nans):
            if ts is None:
                if on_gap is not None:
                    on_gap()
                continue
            yield ts, row_metrics(c.keys, vals, nans, c.ncols)


def _live(ctx: ProducerContext, cfg: Config, device: str, path: Path) -> None:
    """The row for now, from a table of today only: the next day is read while waiting for its first tick."""
    local = datetime.fromtimestamp(time.time(), ctx.tz).replace(tzinfo=None)
    # Until the file says which year it holds, today may be either of two days of it (leap or not).
    table = load_year(path, on_bad=_on_bad(ctx, path),
                      days=(dataset_day(2023, local), dataset_day(2024, local)))
    ctx.log.info("live: %s read (year %d); today's %d rows kept; a reading every %.0f s", path, table.year,
                 len(table), cfg.interval)
    ctx.set_device_status(device, True)
    while True:
        now = time.time()
        next_tick = (now // cfg.interval + 1) * cfg.interval
        local = datetime.fromtimestamp(next_tick, ctx.tz).replace(tzinfo=None)
        if not table.holds(local):
            day = dataset_day(table.year, local)
            table = load_year(path, table.year, days=(day, day))
            ctx.log.info("live: day %d of %d read (%d rows)", day, table.year, len(table))
            continue  # reading took time: the tick may be past
        if ctx.wait(next_tick - time.time()):
            return
        row = table.for_local(local)
        ts = int(next_tick * 1000)
        if row is None or row.metrics is None:
            ctx.counters.inc("missing")
            ctx.publish_reading(device, {}, ts=ts, period_s=cfg.interval, quality="missing")
        else:
            ctx.publish_reading(device, row.metrics, ts=ts, period_s=cfg.interval)


def _replay(ctx: ProducerContext, cfg: Config, device: str, path: Path) -> None:
    start_ms = local_to_epoch_ms(datetime.fromisoformat(cfg.start), ctx.tz) if cfg.start else None
    end_ms = local_to_epoch_ms(datetime.fromisoformat(cfg.end), ctx.tz) if cfg.end else None
    ctx.set_device_status(device, True)
    while True:
        sent = _replay_once(ctx, cfg, device, path, start_ms, end_ms)
        ctx.log.info("replay of %s done: %d readings", path, sent)
        if not cfg.repeat or ctx.stopping.is_set():
            break
    if not ctx.stopping.is_set():
        ctx.flush(timeout=60.0)
        ctx.stopping.wait()  # stay up (status online) until told to stop, like any other device


def _replay_once(ctx: ProducerContext, cfg: Config, device: str, path: Path, start_ms, end_ms) -> int:
    period = 60.0
    batch: list[dict] = []
    sent = 0
    t0_wall = time.monotonic()
    t0_data: int | None = None
    batch_due = 0.0  # when the oldest reading of ``batch`` was due (paced replays)

    def gap() -> None:
        ctx.counters.inc("nonexistent_local_times")

    for ts, metrics in replay_items(path, ctx.tz, on_bad=_on_bad(ctx, path), on_gap=gap):
        if start_ms is not None and ts < start_ms:
            continue
        if end_ms is not None and ts >= end_ms:
            break
        if cfg.speed > 0:
            t0_data = ts if t0_data is None else t0_data
            due = t0_wall + (ts - t0_data) / 1000.0 / cfg.speed
            wait = due - time.monotonic()
            if wait > 0:
                # Readings already due wait for this one only while the oldest is held less than
                # BATCH_HOLD_S: at 60 readings a second they go out as one message, at one a second each alone.
                if batch and due - batch_due >= BATCH_HOLD_S:
                    ctx.publish_readings(device, batch)
                    sent += len(batch)
                    batch = []
                if ctx.wait(wait):
                    return sent
            if not batch:
                batch_due = due
        batch.append(reading(ts, metrics, period))
        if len(batch) >= cfg.batch:
            _backpressure(ctx)
            ctx.publish_readings(device, batch)
            sent += len(batch)
            batch = []
        if ctx.stopping.is_set():
            return sent
    if batch:
        ctx.publish_readings(device, batch)
        sent += len(batch)
    return sent


def _backpressure(ctx: ProducerContext) -> None:
    while len(ctx.outbox) > REPLAY_QUEUE_HIGH and not ctx.stopping.is_set():
        time.sleep(0.005)
