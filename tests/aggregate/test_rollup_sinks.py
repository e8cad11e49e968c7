"""Buckets into and out of every sink: SQLite, a real MariaDB, a real VictoriaMetrics (InfluxDB line protocol)
and MongoDB (mongomock here: no Debian package runs a real server; set WATTBUS_TEST_MONGO_URL for one).

Idempotent on (source, device, period, start): writing a bucket again replaces it, and the newest version is
what a read returns.
"""

from __future__ import annotations

import mongomock
import msgspec
import pytest

from bus.rollup import Bucket
from bus.sinks.influx import InfluxSink
from bus.sinks.mongo import MongoSink
from bus.sinks.mysql import MysqlSink
from bus.sinks.sqlite import SqliteSink
from tests.aggregate.conftest import local_ms
from tests.conftest import unique
from tests.store.conftest import MONGO_URL, mariadb, victoria  # noqa: F401  (the servers, as fixtures)

H = 3_600_000


def buckets(device: str) -> list[Bucket]:
    t = local_ms("2024-10-27 02:00")  # the first of the two 02:00 hours
    return [
        Bucket(
            source="shelly",
            device=device,
            period="1h",
            start=t,
            end=t + H,
            label="2024-10-27T02:00+02:00",
            status="complete",
            coverage=1.0,
            readings=60,
            energy_import_wh=812.4,
            energy_export_wh=0.0,
            power_avg_w=812.4,
            power_min_w=120.0,
            power_max_w=2950.0,
            cost=0.2437,
            revenue=0.0,
            currency="EUR",
            last_ts=t + H,
            rev=3,
            demand_peak_w=1200.5,
        ),
        Bucket(
            source="shelly",
            device=device,
            period="1h",
            start=t + H,
            end=t + 2 * H,
            label="2024-10-27T02:00+01:00",
            status="partial",
            coverage=0.5,
            readings=30,
            energy_import_wh=100.25,
            last_ts=t + 2 * H - 1,
            rev=1,
        ),
        Bucket(
            source="shelly",
            device=device,
            period="1d",
            start=local_ms("2024-10-27 00:00"),
            end=local_ms("2024-10-28 00:00"),
            label="2024-10-27",
            status="open",
            coverage=0.08,
            readings=90,
            energy_import_wh=912.65,
            late=2,
            rev=7,
        ),
        Bucket(
            source="shelly",
            device=device,
            period="1w",
            start=local_ms("2024-10-21 00:00"),
            end=local_ms("2024-10-28 00:00"),
            label="2024-W43",
            status="open",
            coverage=0.01,
            readings=90,
        ),
        Bucket(
            source="shelly",
            device=device,
            period="1mo",
            start=local_ms("2024-10-01 00:00"),
            end=local_ms("2024-11-01 00:00"),
            label="2024-10",
            readings=90,
            rev=2,
        ),
        Bucket(
            source="shelly",
            device=device,
            period="1y",
            start=local_ms("2024-01-01 00:00"),
            end=local_ms("2025-01-01 00:00"),
            label="2024",
            readings=90,
            rev=2,
        ),
    ]


def check_round_trip(sink, device: str, flush=lambda: None) -> None:
    assert sink.read_buckets("shelly", device, "1h", 0, 2**62) == []  # nothing yet: empty, no error
    bs = buckets(device)
    sink.write_buckets(bs)
    sink.write_buckets(bs)  # a redelivered write changes nothing
    flush()
    for period in ("1h", "1d", "1w", "1mo", "1y"):
        assert sink.read_buckets("shelly", device, period, 0, 2**62) == [b for b in bs if b.period == period]
    hours = [b for b in bs if b.period == "1h"]
    assert sink.read_buckets("shelly", device, "1h", hours[1].start, hours[1].start + 1) == [hours[1]]
    assert sink.read_buckets("shelly", device, "1h", 0, hours[1].start) == [hours[0]]
    assert sink.read_buckets("shelly", device + "x", "1h", 0, 2**62) == []
    # a newer version of a bucket replaces it
    newer = msgspec.structs.replace(
        hours[1],
        status="complete",
        coverage=1.0,
        readings=60,
        energy_import_wh=300.5,
        cost=0.09,
        currency="EUR",
        rev=2,
    )
    sink.write_buckets([newer])
    flush()
    assert sink.read_buckets("shelly", device, "1h", 0, 2**62) == [hours[0], newer]


def test_sqlite(tmp_path):
    sink = SqliteSink(f"sqlite:///{tmp_path / 'w.db'}")
    sink.ensure_schema()
    check_round_trip(sink, "mains")
    sink.close()


def test_mariadb(mariadb):  # noqa: F811
    sink = MysqlSink(mariadb.url(unique("wb")))
    sink.ensure_schema()
    check_round_trip(sink, "mains")
    pk = mariadb.root_sql(
        f"SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA="
        f"'{sink.database}' AND TABLE_NAME='rollups' AND CONSTRAINT_NAME='PRIMARY' "
        f"ORDER BY ORDINAL_POSITION"
    )
    assert [r[0] for r in pk] == ["source", "device", "period", "start"]
    sink.close()


def test_mariadb_adds_a_value_added_to_the_record_since_the_table_was_made(mariadb):  # noqa: F811
    url = mariadb.url(unique("wb"))
    sink = MysqlSink(url)
    sink.ensure_schema()
    sink.write_buckets(buckets("mains")[:1])
    mariadb.root_sql(f"ALTER TABLE `{sink.database}`.rollups DROP COLUMN battery_charge_wh")
    sink.close()
    again = MysqlSink(url)
    b = msgspec.structs.replace(buckets("mains")[0], battery_charge_wh=5.5)
    again.write_buckets([b])
    assert again.read_buckets("shelly", "mains", "1h", 0, 2**62) == [b]
    again.close()


def test_victoriametrics(victoria):  # noqa: F811
    device = unique("mains")
    sink = InfluxSink(victoria.url())
    check_round_trip(sink, device, flush=victoria.flush)
    assert sink.read_mode == "victoria"
    sink.close()


def test_mongodb():
    url = MONGO_URL or "mongodb://localhost:27017/wattbus"
    client = None if MONGO_URL else mongomock.MongoClient()
    sink = MongoSink(url, client=client)
    sink.ensure_schema()
    check_round_trip(sink, unique("mains"))
    with pytest.raises(Exception):  # the unique key is enforced by the database itself
        sink.db["rollups"].insert_one(msgspec.to_builtins(buckets("x")[0]))
        sink.db["rollups"].insert_one(msgspec.to_builtins(buckets("x")[0]))
    sink.close()
