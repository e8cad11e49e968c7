"""SQLite sink: the embedded default. One wide row per reading, one column per metric of the table.

WAL journal with ``synchronous=FULL``: a batch is on disk when ``write`` returns, which is when the store
acknowledges it. Writes are upserts on the primary key ``(source, device, ts)`` (idempotent). Columns follow
``schemas/metrics.toml``: a metric added to the table becomes a column at the next start (migration).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec

from bus.envelope import Reading
from bus.rollup import KEY_FIELDS, META_FIELDS, VALUE_FIELDS, Bucket, from_row
from bus.sinks.base import DataError, Sink, SinkError
from schemas import METRICS

SCHEMA_VERSION = 1
DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, OverflowError, TypeError,
               ValueError)
"""Refusals of the data (a constraint or trigger, a value SQLite cannot bind); OperationalError (locked, disk
full, I/O error, read-only, a missing table) is the database's."""
BASE_COLUMNS = ("source", "device", "ts", "seq", "period_s", "quality")


def sqlite_path(url: str) -> str:
    """``sqlite:///abs/path.db`` -> ``/abs/path.db``; ``sqlite://rel.db`` or ``sqlite:rel.db`` -> relative."""
    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
    if not path:
        raise ValueError(f"sqlite URL {url!r} names no file")
    return path


class SqliteSink(Sink):
    def __init__(self, url: str):
        super().__init__(url)
        self.path = sqlite_path(url)
        self._db: sqlite3.Connection | None = None
        self._stmts: dict[tuple[str, ...], str] = {}
        self._columns: set[str] = set()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        return self._db

    def ensure_schema(self) -> None:
        db = self.db
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0] or 0
            if version > SCHEMA_VERSION:
                raise SinkError(f"{self.path}: schema version {version} is newer than this wattbus ({SCHEMA_VERSION})")
            metric_cols = ", ".join(f'"{k}" REAL' for k in METRICS)
            db.execute(
                "CREATE TABLE IF NOT EXISTS readings (source TEXT NOT NULL, device TEXT NOT NULL, "
                "ts INTEGER NOT NULL, seq INTEGER, period_s REAL, quality TEXT NOT NULL DEFAULT 'ok', "
                f"{metric_cols}, PRIMARY KEY (source, device, ts)) WITHOUT ROWID"
            )
            have = {r[1] for r in db.execute("PRAGMA table_info(readings)")}
            for key in METRICS:
                if key not in have:  # a row added to metrics.toml since the table was made
                    db.execute(f'ALTER TABLE readings ADD COLUMN "{key}" REAL')
            if version < SCHEMA_VERSION:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            value_cols = ", ".join(f'"{k}" REAL' for k in VALUE_FIELDS)
            db.execute(
                "CREATE TABLE IF NOT EXISTS rollups (source TEXT NOT NULL, device TEXT NOT NULL, "
                "period TEXT NOT NULL, start INTEGER NOT NULL, v INTEGER NOT NULL DEFAULT 1, "
                '"end" INTEGER NOT NULL, label TEXT NOT NULL, status TEXT NOT NULL, coverage REAL NOT NULL, '
                "readings INTEGER NOT NULL, currency TEXT, late INTEGER NOT NULL DEFAULT 0, "
                f"{value_cols}, PRIMARY KEY (source, device, period, start)) WITHOUT ROWID"
            )
            have = {r[1] for r in db.execute("PRAGMA table_info(rollups)")}
            for key in VALUE_FIELDS:
                if key not in have:  # a value added to bus.rollup.Bucket since the table was made
                    db.execute(f'ALTER TABLE rollups ADD COLUMN "{key}" REAL')
        self._columns = {r[1] for r in db.execute("PRAGMA table_info(readings)")}

    def _statement(self, keys: tuple[str, ...]) -> str:
        stmt = self._stmts.get(keys)
        if stmt is None:
            cols = BASE_COLUMNS + keys
            names = ", ".join(f'"{c}"' for c in cols)
            marks = ", ".join("?" * len(cols))
            updates = ", ".join(f'"{c}" = excluded."{c}"' for c in cols[3:])
            stmt = (f"INSERT INTO readings ({names}) VALUES ({marks}) "
                    f"ON CONFLICT (source, device, ts) DO UPDATE SET {updates}")
            self._stmts[keys] = stmt
        return stmt

    def write(self, readings: Sequence[Reading]) -> None:
        groups: dict[tuple[str, ...], list[tuple]] = {}
        for r in readings:
            keys = tuple(r.metrics)
            row = (r.source, r.device, r.ts, r.seq, r.period_s, r.quality, *r.metrics.values())
            groups.setdefault(keys, []).append(row)
        try:
            with self.db:
                for keys, rows in groups.items():
                    self.db.executemany(self._statement(keys), rows)
        except DATA_ERRORS as exc:
            raise DataError(f"sqlite {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: {exc}") from exc

    def read(self, source: str, device: str, start_ms: int, end_ms: int) -> Iterator[Reading]:
        cur = self.db.execute(
            "SELECT * FROM readings WHERE source = ? AND device = ? AND ts >= ? AND ts < ? ORDER BY ts",
            (source, device, start_ms, end_ms),
        )
        names = [d[0] for d in cur.description]
        metric_idx = [(i, n) for i, n in enumerate(names) if n in METRICS]
        base = {n: i for i, n in enumerate(names) if n in BASE_COLUMNS}
        for row in cur:
            metrics = {n: row[i] for i, n in metric_idx if row[i] is not None}
            yield Reading(row[base["source"]], row[base["device"]], row[base["ts"]], metrics,
                          row[base["seq"]], row[base["period_s"]] or 0.0, row[base["quality"]])

    def count(self, source: str, device: str, start_ms: int = 0, end_ms: int = 2**53) -> int:
        return self.db.execute("SELECT count(*) FROM readings WHERE source = ? AND device = ? AND ts >= ? "
                               "AND ts < ?", (source, device, start_ms, end_ms)).fetchone()[0]

    def devices(self) -> list[tuple[str, str, int]]:
        """One index seek per device (a ``GROUP BY`` would scan every stored reading)."""
        out: list[tuple[str, str, int]] = []
        after = ("", "")
        while True:
            row = self.db.execute("SELECT source, device FROM readings WHERE (source, device) > (?, ?) "
                                  "ORDER BY source, device LIMIT 1", after).fetchone()
            if row is None:
                return out
            last = self.db.execute("SELECT max(ts) FROM readings WHERE source = ? AND device = ?", row).fetchone()
            out.append((row[0], row[1], last[0]))
            after = (row[0], row[1])

    def read_downsampled(self, source: str, device: str, start_ms: int, end_ms: int,
                         step_ms: int) -> list[Reading]:
        # only the metrics this device sends (a sample of its rows): a year grouped over 50 columns is slow
        sample = self.db.execute("SELECT * FROM readings WHERE source = ? AND device = ? AND ts >= ? AND ts < ? "
                                 "LIMIT 100", (source, device, start_ms, end_ms))
        names = [d[0] for d in sample.description]
        seen = {names[i] for row in sample for i, v in enumerate(row) if v is not None}
        have = [k for k in METRICS if k in seen]
        if not have:
            return []
        agg = {"gauge": "avg", "interval": "sum", "counter": "max"}
        cols = ", ".join(f'{agg[METRICS[k].kind]}("{k}")' for k in have)
        cur = self.db.execute(
            f"SELECT ts - ts % ? AS slot, {cols} FROM readings WHERE source = ? AND device = ? AND ts >= ? "
            "AND ts < ? AND quality != 'missing' GROUP BY slot ORDER BY slot",
            (step_ms, source, device, start_ms, end_ms))
        period_s = step_ms / 1000
        return [Reading(source, device, row[0], {k: v for k, v in zip(have, row[1:]) if v is not None},
                        None, period_s, "ok") for row in cur]

    _BUCKET_COLUMNS = KEY_FIELDS + META_FIELDS + VALUE_FIELDS

    def write_buckets(self, buckets: Sequence[Bucket]) -> None:
        cols = self._BUCKET_COLUMNS
        names = ", ".join(f'"{c}"' for c in cols)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in cols[len(KEY_FIELDS):])
        stmt = (f"INSERT INTO rollups ({names}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT (source, device, period, start) DO UPDATE SET {updates}")
        at = [Bucket.__struct_fields__.index(c) for c in cols]
        rows = [[t[i] for i in at] for t in map(msgspec.structs.astuple, buckets)]
        try:
            with self.db:
                self.db.executemany(stmt, rows)
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite {self.path}: {exc}") from exc

    def read_buckets(self, source: str, device: str, period: str, start_ms: int, end_ms: int) -> list[Bucket]:
        cols = self._BUCKET_COLUMNS
        cur = self.db.execute(
            "SELECT " + ", ".join(f'"{c}"' for c in cols) + " FROM rollups "
            "WHERE source = ? AND device = ? AND period = ? AND start >= ? AND start < ? ORDER BY start",
            (source, device, period, start_ms, end_ms))
        return [from_row(dict(zip(cols, row))) for row in cur]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
