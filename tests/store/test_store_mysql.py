"""The MySQL/MariaDB sink against a real, private MariaDB: schema, migration, idempotence, reading back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bus.envelope import Reading
from bus.sinks.mysql import MysqlSink
from bus.sinks.base import SinkError
from schemas import METRICS
from tests.store.conftest import T0, readings

README = Path(__file__).resolve().parents[2] / "consumers" / "store" / "README.md"


def db_name(url: str) -> str:
    return url.split("/")[3].split("?")[0]


def test_first_start_creates_the_database_the_table_and_records_the_version(mariadb, mysql_url):
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    sink.close()
    db = db_name(mysql_url)
    cols = {r[0] for r in mariadb.root_sql(
        f"SELECT COLUMN_NAME FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA='{db}' AND TABLE_NAME='readings'")}
    assert set(METRICS) <= cols
    assert {"source", "device", "ts", "ts_utc", "seq", "period_s", "quality"} <= cols
    pk = [r[0] for r in mariadb.root_sql(
        f"SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA='{db}' "
        f"AND TABLE_NAME='readings' AND CONSTRAINT_NAME='PRIMARY' ORDER BY ORDINAL_POSITION")]
    assert pk == ["source", "device", "ts"]
    assert mariadb.root_sql(f"SELECT version FROM `{db}`.schema_version") == [(1,)]
    charset = mariadb.root_sql(f"SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
                               f"WHERE SCHEMA_NAME='{db}'")
    assert charset == [("utf8mb4",)]


def test_a_metric_added_to_the_table_becomes_a_column_at_the_next_start(mariadb, mysql_url):
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    db = db_name(mysql_url)
    # a table made before gas_m3 and water_m3 were rows of metrics.toml
    mariadb.root_sql(f"ALTER TABLE `{db}`.readings DROP COLUMN gas_m3, DROP COLUMN water_m3")
    sink.close()
    again = MysqlSink(mysql_url)
    again.ensure_schema()
    again.write([Reading("p1", "meter", T0, {"gas_m3": 1234.567, "power_w": 300.0})])
    got = [r.metrics for r in again.read("p1", "meter", T0, T0 + 1)]
    assert got == [{"power_w": 300.0, "gas_m3": 1234.567}]
    assert mariadb.root_sql(f"SELECT version FROM `{db}`.schema_version") == [(1,)]
    again.close()


def test_readings_come_back_exactly_and_a_rewrite_changes_nothing(mysql_url):
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    rs = readings("house", 3000)
    sink.write(rs)
    sink.write(rs[1000:2000])  # redelivery
    assert sink.count("hhpc", "house") == 3000 and sink.count("hhpc", "house", rs[10].ts, rs[20].ts) == 10
    assert list(sink.read("hhpc", "house", T0, T0 + 3000 * 60_000)) == rs
    assert list(sink.read("hhpc", "house", rs[10].ts, rs[20].ts)) == rs[10:20]
    assert list(sink.read("hhpc", "other", T0, T0 + 3000 * 60_000)) == []
    sink.close()


def test_the_last_copy_of_a_reading_wins(mysql_url):
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    sink.write([Reading("hhpc", "house", T0, {"power_w": 1.0}, 1, 60.0, "estimated")])
    sink.write([Reading("hhpc", "house", T0, {"power_w": 2.0}, 1, 60.0, "ok")])
    latest = Reading("hhpc", "house", T0, {"power_w": 2.0}, 1, 60.0, "ok")
    assert list(sink.read("hhpc", "house", T0, T0 + 1)) == [latest]
    sink.close()


def test_ts_utc_is_the_utc_time_of_ts_whatever_the_session_time_zone(mariadb, mysql_url):
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    sink.write([Reading("hhpc", "house", 1734199080123, {"power_w": 1.0})])
    sink.close()
    db = db_name(mysql_url)
    rows = mariadb.root_sql("SET time_zone = '+05:00'", f"SELECT CAST(ts_utc AS CHAR) FROM `{db}`.readings")
    assert rows == [("2024-12-14 17:58:00.123",)]


def test_the_readme_daily_energy_query_runs_and_adds_up(mariadb, mysql_url):
    """The example SQL in the README is real: it gives the kWh of each day of one device."""
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    # two days of 1 kW for 60 s readings: 24 kWh a day
    sink.write([Reading("hhpc", "house", T0 + 60_000 * (i + 1), {"power_w": 1000.0}, i, 60.0)
                for i in range(2 * 1440)])
    sink.close()
    sql = re.search(r"```sql\n(-- daily kWh.*?)```", README.read_text(), re.S).group(1)
    rows = mariadb.root_sql(f"USE `{db_name(mysql_url)}`", sql)
    got = [(str(day), round(float(kwh), 3)) for day, kwh in rows]
    assert got == [("2024-01-01", 24.0), ("2024-01-02", 24.0)]


def test_the_password_comes_from_a_file_or_the_environment_never_the_url(mariadb, mysql_url, monkeypatch):
    with pytest.raises(ValueError, match="password"):
        MysqlSink(f"mysql://wattbus:{mariadb.password}@127.0.0.1:{mariadb.port}/x")
    monkeypatch.setenv("WATTBUS_MYSQL_PASSWORD", mariadb.password)
    sink = MysqlSink(f"mysql://wattbus@127.0.0.1:{mariadb.port}/{db_name(mysql_url)}")
    sink.ensure_schema()
    sink.close()
    monkeypatch.setenv("WATTBUS_MYSQL_PASSWORD", "wrong")
    bad = MysqlSink(f"mysql://wattbus@127.0.0.1:{mariadb.port}/{db_name(mysql_url)}")
    with pytest.raises(SinkError, match="Access denied"):
        bad.ensure_schema()
    assert "wrong" not in bad.describe() and mariadb.password not in MysqlSink(mysql_url).describe()


def test_a_database_that_is_down_raises_sink_error_and_the_sink_recovers(mariadb, mysql_url):
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    sink.write(readings("house", 10))
    mariadb.stop()
    try:
        with pytest.raises(SinkError):
            sink.write(readings("house", 20))
    finally:
        mariadb.start()
    sink.write(readings("house", 20))  # reconnects by itself
    assert sink.count("hhpc", "house") == 20
    sink.close()


def test_unknown_url_options_are_named(mariadb):
    with pytest.raises(ValueError, match="passwordfile"):
        MysqlSink(f"mysql://wattbus@127.0.0.1:{mariadb.port}/x?passwordfile=/tmp/x")


def test_a_schema_newer_than_this_wattbus_is_refused(mariadb, mysql_url):
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    mariadb.root_sql(f"INSERT INTO `{db_name(mysql_url)}`.schema_version (version) VALUES (99)")
    with pytest.raises(SinkError, match="newer"):
        MysqlSink(mysql_url).ensure_schema()
    sink.close()


def test_the_connection_is_utf8mb4_and_utc(mysql_url):
    sink = MysqlSink(mysql_url)
    sink.ensure_schema()
    with sink.conn.cursor() as cur:
        cur.execute("SELECT @@character_set_connection, @@time_zone")
        assert cur.fetchone() == ("utf8mb4", "+00:00")
    sink.close()


def test_reading_never_creates_a_database(mariadb, mysql_url):
    sink = MysqlSink(mysql_url)
    with pytest.raises(SinkError):
        list(sink.read("hhpc", "house", 0, 2**53))
    sink.close()
    assert mariadb.root_sql(f"SHOW DATABASES LIKE '{db_name(mysql_url)}'") == []
