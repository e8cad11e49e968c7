"""The MongoDB sink with mongomock (plain layout), and a real server when WATTBUS_TEST_MONGO_URL is set.

mongomock has no time-series collections, so the time-series write path (ask what is stored, insert the
rest) is exercised here on a collection without a unique index, where a careless insert would duplicate.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import mongomock
import pytest

from bus.sinks.mongo import MongoSink, to_date, to_ms
from bus.sinks.base import SinkError
from tests.conftest import unique
from tests.store.conftest import MONGO_URL, T0, readings


def mock_sink(query: str = "", client=None) -> MongoSink:
    return MongoSink(f"mongodb://127.0.0.1:1/wattbus{query}", client=client or mongomock.MongoClient())


def test_dates_are_exact_to_the_millisecond():
    for ts in (0, T0, 1734199080123, 32503679999999):
        assert to_ms(to_date(ts)) == ts


def test_without_time_series_support_a_plain_collection_with_a_unique_key_is_made():
    sink = mock_sink()
    sink.ensure_schema()
    assert sink.layout == "plain"
    index = sink.coll.index_information()["source_device_ts"]
    assert index["unique"] and [k for k, _ in index["key"]] == ["meta.source", "meta.device", "ts"]
    assert sink.db["wattbus_meta"].find_one({"_id": "schema"})["version"] == 1


def test_plain_readings_come_back_exactly_and_a_rewrite_changes_nothing():
    sink = mock_sink()
    sink.ensure_schema()
    rs = readings("house", 300)
    sink.write(rs)
    sink.write(rs[100:200] + readings("house", 5, start=T0 + 300 * 60_000, seq0=300))  # redelivery + new
    assert sink.count("hhpc", "house") == 305
    assert list(sink.read("hhpc", "house", T0, T0 + 300 * 60_000)) == rs
    assert list(sink.read("hhpc", "house", rs[10].ts, rs[20].ts)) == rs[10:20]
    doc = sink.coll.find_one({"ts": to_date(rs[0].ts)}, {"_id": 0})
    assert doc == {"ts": to_date(rs[0].ts), "meta": {"source": "hhpc", "device": "house"}, "seq": 0,
                   "period_s": 60.0, "quality": "ok", "metrics": rs[0].metrics}


def test_the_time_series_path_inserts_only_what_is_not_stored_yet():
    client = mongomock.MongoClient()
    db = client["wattbus"]
    db.create_collection("readings")  # no unique index: duplicates would stay
    db["wattbus_meta"].insert_one({"_id": "schema", "version": 1, "layout": "timeseries"})
    sink = mock_sink(client=client)
    sink.ensure_schema()
    assert sink.layout == "timeseries"
    rs = readings("house", 200) + readings("shed", 50)
    sink.write(rs[:120])
    sink.write(rs)  # a crash after the first 120 went in: redelivered whole
    sink.write(rs[150:] + rs[150:])  # a message repeated inside one batch
    assert sink.count("hhpc", "house") + sink.count("hhpc", "shed") == 250
    assert list(sink.read("hhpc", "house", 0, 2**42)) == rs[:200]
    assert list(sink.read("hhpc", "shed", 0, 2**42)) == rs[200:]


def test_read_returns_a_repeated_timestamp_once():
    client = mongomock.MongoClient()
    client["wattbus"].create_collection("readings")
    client["wattbus"]["wattbus_meta"].insert_one({"_id": "schema", "version": 1, "layout": "timeseries"})
    sink = mock_sink(client=client)
    sink.ensure_schema()
    r = readings("house", 1)[0]
    sink.coll.insert_many([MongoSink.document(r), MongoSink.document(r)])  # two racing writers did this
    assert list(sink.read("hhpc", "house", 0, 2**42)) == [r]


def test_url_options_and_secrets():
    with pytest.raises(ValueError, match="password"):
        MongoSink("mongodb://me:secret@127.0.0.1/wattbus")
    with pytest.raises(ValueError, match="timeseries"):
        MongoSink("mongodb://127.0.0.1/wattbus?timeseries=maybe")
    sink = MongoSink("mongodb://me@127.0.0.1/energy?collection=minutes&authSource=admin&timeseries=off")
    assert (sink.database, sink.collection_name, sink.timeseries) == ("energy", "minutes", "off")
    assert "authSource=admin" in sink._uri and "collection" not in sink._uri


def test_an_unreachable_server_raises_sink_error():
    sink = MongoSink(f"mongodb://127.0.0.1:{_closed_port()}/wattbus?serverSelectionTimeoutMS=300")
    with pytest.raises(SinkError, match="mongodb"):
        sink.write(readings("house", 3))
    sink.close()


def mongo_url(database: str, query: str) -> str:
    """WATTBUS_TEST_MONGO_URL (e.g. mongodb://127.0.0.1:27017) with its database and options replaced."""
    parts = urlsplit(MONGO_URL)
    options = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", options, ""))


def _closed_port() -> int:
    from tests.support.ports import free_port

    return free_port()


@pytest.mark.skipif(not MONGO_URL, reason="set WATTBUS_TEST_MONGO_URL to test against a real MongoDB")
@pytest.mark.parametrize("layout", ["auto", "off"])
def test_real_server_idempotent_in_either_layout(layout):
    db = unique("wattbus_test")
    sink = MongoSink(mongo_url(db, f"timeseries={layout}"))
    try:
        sink.ensure_schema()
        server = tuple(int(x) for x in sink.client.server_info()["version"].split(".")[:2])
        assert sink.layout == ("timeseries" if layout == "auto" and server >= (5, 0) else "plain")
        rs = readings("house", 2000)
        sink.write(rs)
        sink.write(rs[500:1500])
        assert sink.count("hhpc", "house") == 2000
        assert list(sink.read("hhpc", "house", 0, 2**42)) == rs
    finally:
        sink.client.drop_database(db)
        sink.close()

