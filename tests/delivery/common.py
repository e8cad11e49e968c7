"""Shared by the delivery tests: a small hhpc dataset, the readings it should become, and counting."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from producers.hhpc.dataset import iter_rows
from producers.hhpc.localtime import iter_epochs

TZ = ZoneInfo("Europe/Brussels")


def write_dataset(path: Path, start: datetime, minutes: int) -> Path:
    """An hhpc file of ``minutes`` rows from local ``start``, values that differ row by row, every 50th
    row missing (``?``), as the real dataset has."""
    lines = ["Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;"
             "Sub_metering_1;Sub_metering_2;Sub_metering_3"]
    for i in range(minutes):
        t = start + timedelta(minutes=i)
        day, clock = t.strftime("%d/%m/%Y"), t.strftime("%H:%M:%S")
        if i % 50 == 49:
            lines.append(f"{day};{clock};?;?;?;?;?;?;")
            continue
        kw = 0.2 + (i * 37 % 400) / 100
        lines.append(f"{day};{clock};{kw:.3f};{(i % 17) / 100:.3f};{230 + (i % 9) / 10:.3f};"
                     f"{kw * 1000 / 230:.3f};{i % 2:.3f};{i % 3:.3f};{i % 19:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_keys(dataset: Path) -> list[int]:
    """Every ts the replay of ``dataset`` publishes (missing rows included, as quality=missing)."""
    return [ts for ts, _ in iter_epochs(iter_rows(dataset), TZ)]


def stored(db: Path, device: str, source: str = "hhpc") -> tuple[int, int, list[int]]:
    """(rows, distinct keys, sorted ts) of one device in a SQLite store; zeros while the file is not there."""
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            rows = conn.execute("SELECT count(*), count(DISTINCT ts) FROM readings WHERE source = ? AND "
                                "device = ?", (source, device)).fetchone()
            keys = [r[0] for r in conn.execute("SELECT ts FROM readings WHERE source = ? AND device = ? "
                                               "ORDER BY ts", (source, device))]
    except sqlite3.OperationalError:
        return 0, 0, []
    return rows[0], rows[1], keys


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def health(collector, process: str) -> dict:
    docs = collector.on(f"wattbus/{process}/health")
    return orjson.loads(docs[-1][1]) if docs else {}


def dlq(collector, process: str) -> list[dict]:
    return [orjson.loads(p) for _, p, _ in collector.on(f"wattbus/dlq/{process}")]


def report(what: str, **counts: int) -> None:
    """Fault tests print their counts: the figures a reviewer reads."""
    print(f"\n[{what}] " + ", ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text)
