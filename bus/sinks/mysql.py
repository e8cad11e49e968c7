"""MySQL / MariaDB sink (pymysql): the SQLite layout on a server, for households that already run one.

One wide row per reading in ``readings``, one DOUBLE column per metric of ``schemas/metrics.toml``, primary
key ``(source, device, ts)``. InnoDB clusters rows by primary key, so one device's day is one contiguous
range scan. ``ts`` is BIGINT epoch milliseconds UTC (unambiguous, the envelope's own value); ``ts_utc`` is a
virtual ``DATETIME(3)`` computed from it for humans and SQL date functions, independent of any session
time zone. Writes are multi-row ``INSERT ... ON DUPLICATE KEY UPDATE`` in one transaction: idempotent, and
committed (InnoDB redo log flushed) before ``write`` returns, which is when the store acknowledges.

The schema is versioned in ``schema_version``; a metric added to the table becomes a column at the next
start, under an advisory lock so two store copies starting together do not race.

URL: ``mysql://user@host:3306/wattbus?password_file=/etc/wattbus/mysql.pass`` (or $WATTBUS_MYSQL_PASSWORD;
never a password in the URL). Options: ``password_file``, ``unix_socket``, ``connect_timeout`` (s, default
5), ``timeout`` (s a statement may take before the write counts as failed, default 60), ``bench=naive``
(one INSERT and commit per reading: the comparison path of ``wattbus bench``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from collections.abc import Iterator, Sequence
from urllib.parse import unquote, urlsplit

import pymysql
import pymysql.cursors
from pymysql.constants import ER

from bus.envelope import Reading
from bus.rollup import KEY_FIELDS, META_FIELDS, VALUE_FIELDS, Bucket, from_row
from bus.sinks.base import DataError, Sink, SinkError
from bus.sinks.urlopts import options, reject_inline_secret, secret
from schemas import METRICS

SCHEMA_VERSION = 1
BASE_COLUMNS = ("source", "device", "quality", "ts", "seq", "period_s")
PASSWORD_ENV = "WATTBUS_MYSQL_PASSWORD"
URL_OPTIONS = {"password_file", "unix_socket", "connect_timeout", "timeout", "bench"}
MAX_STATEMENT_BYTES = 4_000_000
"""One INSERT carries rows up to about this size (below the server's default max_allowed_packet, 16 MB)."""
READ_PAGE = 10_000
DATA_ERROR_CODES = {
    1048, 1062, 1064, 1149, 1153, 1264, 1265, 1292, 1366, 1367, 1406, 1416, 1690, 3819, 4025,
}
"""Server errors about the rows, not the server: NULL into NOT NULL, duplicate key, a statement the values
broke, packet too large, out of range, truncated, incorrect or illegal value, data too long, CHECK constraint
(MySQL 3819, MariaDB 4025). Everything else (cannot connect, gone away, lock wait, deadlock, disk or table
full, read-only, access denied, unknown table or column) is the server's: retried."""


def _classify(exc: Exception, where: str) -> SinkError:
    """A pymysql error (or a rendering error of ours) as DataError or SinkError."""
    code = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) and exc.args else None
    if isinstance(exc, (pymysql.err.DataError, pymysql.err.IntegrityError, ValueError, TypeError,
                        OverflowError)) or code in DATA_ERROR_CODES:
        return DataError(f"{where}: {exc}")
    return SinkError(f"{where}: {exc}")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS readings (
    source VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    ts BIGINT NOT NULL COMMENT 'epoch milliseconds UTC, end of the reading''s period',
    ts_utc DATETIME(3) AS (CAST('1970-01-01 00:00:00' AS DATETIME(3)) + INTERVAL (ts * 1000) MICROSECOND)
        VIRTUAL COMMENT 'ts as a UTC date-time, for humans',
    seq BIGINT NULL,
    period_s DOUBLE NOT NULL DEFAULT 0,
    quality VARCHAR(16) NOT NULL DEFAULT 'ok',
    {metric_columns},
    PRIMARY KEY (source, device, ts)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""


def _sql_float(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else "NULL"


class MysqlSink(Sink):
    def __init__(self, url: str):
        super().__init__(url)
        reject_inline_secret(url, "password_file")
        parts = urlsplit(url)
        self.opts = options(url, URL_OPTIONS)
        self.database = unquote(parts.path.lstrip("/"))
        if not self.database or "/" in self.database or "`" in self.database:
            raise ValueError(f"mysql URL {self.describe()!r} needs a database name: "
                             "mysql://user@host:3306/wattbus")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 3306
        self.user = unquote(parts.username or "wattbus")
        self.password = secret(self.opts, "password_file", PASSWORD_ENV)
        self.connect_timeout = float(self.opts.get("connect_timeout", 5))
        self.timeout = float(self.opts.get("timeout", 60))
        self.naive = self.opts.get("bench") == "naive"
        self._conn: pymysql.connections.Connection | None = None
        self._columns: set[str] = set()
        self._heads: dict[tuple[str, ...], tuple[str, str]] = {}

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, database: str | None) -> pymysql.connections.Connection:
        try:
            conn = pymysql.connect(
                host=self.host, port=self.port, user=self.user, password=self.password or "",
                database=database, unix_socket=self.opts.get("unix_socket"), charset="utf8mb4",
                autocommit=False, connect_timeout=self.connect_timeout, read_timeout=self.timeout,
                write_timeout=self.timeout, init_command="SET time_zone = '+00:00'",
            )
        except pymysql.err.MySQLError as exc:
            raise SinkError(f"mysql {self.describe()}: {exc}") from exc
        return conn

    @property
    def conn(self) -> pymysql.connections.Connection:
        if self._conn is None:
            self._conn = self._connect(self.database)
        return self._conn

    def _create_database(self) -> None:
        conn = self._connect(None)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}` "
                            "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            conn.commit()
        except pymysql.err.MySQLError as exc:
            raise SinkError(f"mysql {self.describe()}: database {self.database!r} does not exist and "
                            f"cannot be created: {exc}") from exc
        finally:
            conn.close()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken: nothing to release
                pass
            self._conn = None

    # -- schema ------------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        try:
            _ = self.conn
        except SinkError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, pymysql.err.OperationalError) and cause.args[0] == ER.BAD_DB_ERROR):
                raise
            self._create_database()
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT GET_LOCK('wattbus_schema', 60)")
                try:
                    self._migrate(cur)
                finally:
                    cur.execute("SELECT RELEASE_LOCK('wattbus_schema')")
            self.conn.commit()
        except pymysql.err.MySQLError as exc:
            self._drop_connection()
            raise SinkError(f"mysql {self.describe()}: schema: {exc}") from exc

    def _migrate(self, cur) -> None:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL PRIMARY KEY, "
                    "applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB")
        cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        version = cur.fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SinkError(f"mysql {self.describe()}: schema version {version} is newer than this "
                            f"wattbus ({SCHEMA_VERSION})")
        cur.execute(CREATE_TABLE.format(metric_columns=",\n    ".join(f"`{k}` DOUBLE NULL" for k in METRICS)))
        have = self._table_columns(cur)
        missing = [k for k in METRICS if k not in have]
        if missing:  # rows added to metrics.toml since the table was made
            cur.execute("ALTER TABLE readings " + ", ".join(f"ADD COLUMN `{k}` DOUBLE NULL" for k in missing))
            have = self._table_columns(cur)
        if version < SCHEMA_VERSION:
            cur.execute("INSERT IGNORE INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
        self._columns = have

    @staticmethod
    def _table_columns(cur) -> set[str]:
        cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'readings'")
        return {r[0] for r in cur.fetchall()}

    # -- write -------------------------------------------------------------------------------------
    def _head(self, keys: tuple[str, ...]) -> tuple[str, str]:
        """(``INSERT ... VALUES``, ``ON DUPLICATE KEY UPDATE ...``) for readings carrying ``keys``."""
        head = self._heads.get(keys)
        if head is None:
            cols = BASE_COLUMNS + keys
            names = ", ".join(f"`{c}`" for c in cols)
            updates = ", ".join(f"`{c}` = VALUES(`{c}`)" for c in cols if c not in ("source", "device", "ts"))
            head = (f"INSERT INTO readings ({names}) VALUES ", f" ON DUPLICATE KEY UPDATE {updates}")
            self._heads[keys] = head
        return head

    def statements(self, readings: Sequence[Reading]) -> Iterator[str]:
        """Multi-row upserts for ``readings``, grouped by their set of metric keys.

        The values are rendered here rather than by the driver's parameter escaping: every value is a
        float, an int, or a string the envelope already validated against ``[a-z0-9_-]`` (source, device)
        or a fixed list (quality), so rendering is exact and several times faster.
        """
        groups: dict[tuple[str, ...], list[str]] = {}
        for r in readings:
            vals = ",".join([repr(v) if math.isfinite(v) else "NULL" for v in r.metrics.values()])
            seq = "NULL" if r.seq is None else int(r.seq)
            row = (f"({_names(r.source, r.device, r.quality)}{int(r.ts)},{seq},{_sql_float(r.period_s)}"
                   f"{',' if vals else ''}{vals})")
            groups.setdefault(tuple(r.metrics), []).append(row)
        for keys, rows in groups.items():
            head, tail = self._head(keys)
            chunk: list[str] = []
            size = 0
            for row in rows:
                chunk.append(row)
                size += len(row) + 1
                if size >= MAX_STATEMENT_BYTES:
                    yield head + ",".join(chunk) + tail
                    chunk, size = [], 0
            if chunk:
                yield head + ",".join(chunk) + tail

    def write(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        try:
            conn = self.conn
            if self.naive:  # `wattbus bench`'s comparison path: one INSERT and one commit per reading
                for r in readings:
                    with conn.cursor() as cur:
                        for stmt in self.statements([r]):
                            cur.execute(stmt)
                    conn.commit()
                return
            with conn.cursor() as cur:
                for stmt in self.statements(readings):
                    cur.execute(stmt)
            conn.commit()
        except (pymysql.err.MySQLError, ValueError, TypeError, OverflowError) as exc:
            self._drop_connection()  # a half-done transaction is rolled back by the server
            raise _classify(exc, f"mysql {self.describe()}") from exc

    # -- read --------------------------------------------------------------------------------------
    def read(self, source: str, device: str, start_ms: int, end_ms: int) -> Iterator[Reading]:
        """Page through the range by primary key, so a year of minutes streams in bounded memory."""
        if not self._columns:  # look, but never create or migrate on a read (a typo must not make a database)
            try:
                with self.conn.cursor() as cur:
                    self._columns = self._table_columns(cur)
            except pymysql.err.MySQLError as exc:
                self._drop_connection()
                raise SinkError(f"mysql {self.describe()}: {exc}") from exc
            if not self._columns:
                raise SinkError(f"mysql {self.describe()}: no readings table in database {self.database!r}")
        metric_cols = [k for k in METRICS if k in self._columns]
        select = ", ".join(f"`{c}`" for c in ("ts", "seq", "period_s", "quality", *metric_cols))
        sql = (f"SELECT {select} FROM readings WHERE source = %s AND device = %s AND ts >= %s AND ts < %s "
               f"ORDER BY ts LIMIT {READ_PAGE}")
        lo = start_ms
        while True:
            try:
                with self.conn.cursor() as cur:
                    cur.execute(sql, (source, device, lo, end_ms))
                    rows = cur.fetchall()
                self.conn.commit()  # end the read snapshot so the next page sees fresh data
            except pymysql.err.MySQLError as exc:
                self._drop_connection()
                raise SinkError(f"mysql {self.describe()}: {exc}") from exc
            for row in rows:
                metrics = {k: v for k, v in zip(metric_cols, row[4:]) if v is not None}
                yield Reading(source, device, row[0], metrics, row[1], row[2] or 0.0, row[3])
            if len(rows) < READ_PAGE:
                return
            lo = rows[-1][0] + 1

    def count(self, source: str, device: str, start_ms: int = 0, end_ms: int = 2**53) -> int:
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM readings WHERE source = %s AND device = %s AND ts >= %s "
                            "AND ts < %s", (source, device, start_ms, end_ms))
                n = cur.fetchone()[0]
            self.conn.commit()
        except pymysql.err.MySQLError as exc:
            self._drop_connection()
            raise SinkError(f"mysql {self.describe()}: {exc}") from exc
        return n

    def close(self) -> None:
        self._drop_connection()

    # -- rollups: the aggregate consumer's buckets (bus.rollup) --------------------------------------
    _ROLLUP_COLUMNS = KEY_FIELDS + META_FIELDS + VALUE_FIELDS
    _rollups_ready = False

    def _ensure_rollups(self, cur) -> None:
        """Create the ``rollups`` table, or add the values added to ``Bucket`` since it was made."""
        if self._rollups_ready:
            return
        cur.execute("SELECT GET_LOCK('wattbus_schema', 60)")
        try:
            cur.execute(CREATE_ROLLUPS.format(value_columns=",\n    ".join(f"`{k}` DOUBLE NULL"
                                                                          for k in VALUE_FIELDS)))
            cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rollups'")
            have = {r[0] for r in cur.fetchall()}
            missing = [k for k in VALUE_FIELDS if k not in have]
            if missing:
                cur.execute("ALTER TABLE rollups "
                            + ", ".join(f"ADD COLUMN `{k}` DOUBLE NULL" for k in missing))
        finally:
            cur.execute("SELECT RELEASE_LOCK('wattbus_schema')")
        self._rollups_ready = True

    def write_buckets(self, buckets: Sequence[Bucket]) -> None:
        """Upsert in one transaction: committed (and so idempotent on the key) before returning."""
        if not buckets:
            return
        cols = self._ROLLUP_COLUMNS
        names = ", ".join(f"`{c}`" for c in cols)
        updates = ", ".join(f"`{c}` = VALUES(`{c}`)" for c in cols[len(KEY_FIELDS):])
        sql = (f"INSERT INTO rollups ({names}) VALUES ({', '.join(['%s'] * len(cols))}) "
               f"ON DUPLICATE KEY UPDATE {updates}")
        rows = [tuple(getattr(b, c) for c in cols) for b in buckets]
        try:
            conn = self.conn
            with conn.cursor() as cur:
                self._ensure_rollups(cur)
                cur.executemany(sql, rows)
            conn.commit()
        except pymysql.err.MySQLError as exc:
            self._drop_connection()
            self._rollups_ready = False
            raise SinkError(f"mysql {self.describe()}: rollups: {exc}") from exc

    def read_buckets(self, source: str, device: str, period: str, start_ms: int, end_ms: int) -> list[Bucket]:
        cols = self._ROLLUP_COLUMNS
        sql = (f"SELECT {', '.join(f'`{c}`' for c in cols)} FROM rollups WHERE source = %s AND device = %s "
               "AND period = %s AND start >= %s AND start < %s ORDER BY start")
        try:
            with self.conn.cursor() as cur:
                try:
                    cur.execute(sql, (source, device, period, start_ms, min(end_ms, 2**63 - 1)))
                except pymysql.err.ProgrammingError as exc:
                    if exc.args[0] == ER.NO_SUCH_TABLE:  # nothing aggregated yet; a read never creates
                        self.conn.commit()
                        return []
                    raise
                rows = cur.fetchall()
            self.conn.commit()
        except pymysql.err.MySQLError as exc:
            self._drop_connection()
            raise SinkError(f"mysql {self.describe()}: rollups: {exc}") from exc
        return [from_row(dict(zip(cols, row))) for row in rows]


CREATE_ROLLUPS = """
CREATE TABLE IF NOT EXISTS rollups (
    source VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    period VARCHAR(4) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    start BIGINT NOT NULL COMMENT 'epoch ms UTC of the local calendar boundary',
    v INT NOT NULL DEFAULT 1,
    `end` BIGINT NOT NULL,
    label VARCHAR(40) NOT NULL,
    status VARCHAR(16) NOT NULL,
    coverage DOUBLE NOT NULL,
    readings BIGINT NOT NULL,
    currency VARCHAR(8) NULL,
    late BIGINT NOT NULL DEFAULT 0,
    {value_columns},
    PRIMARY KEY (source, device, period, start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""


@lru_cache(maxsize=4096)
def _names(source: str, device: str, quality: str) -> str:
    """The leading string literals of a row. They are validated names (``[a-z0-9_-]``) or a fixed word;
    checked again here because they go into SQL text."""
    for value in (source, device, quality):
        if not (value.isascii() and value.replace("_", "").replace("-", "").isalnum()):
            raise ValueError(f"refusing to store name {value!r}: not a valid wattbus name")
    return f"'{source}','{device}','{quality}',"
