"""Poison never blocks: readings a database refuses are isolated, dead-lettered with the database's reason,
and everything else is stored and acknowledged; an outage (the database's fault) is retried, never
dead-lettered.

The refusals are real where a real server can refuse: a SQLite trigger and a MariaDB CHECK constraint (what
an administrator's own rules look like to wattbus) in front of real store processes on the real broker. A
valid reading cannot make VictoriaMetrics refuse a line, and InfluxDB 2 and MongoDB have no Debian package:
the Influx sink is pointed at a small HTTP server answering the way InfluxDB 2 does (400 for a line it
refuses), the Mongo sink at mongomock with a collection that refuses documents like a validator would.
"""

from __future__ import annotations

import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mongomock
import orjson
import pytest
from pymongo.errors import BulkWriteError

from bus.consumer import write_isolating
from bus.envelope import Reading
from bus.sinks.base import DataError, SinkError
from bus.sinks.influx import InfluxSink
from bus.sinks.mongo import MongoSink
from bus.sinks.sqlite import SqliteSink
from tests.conftest import unique
from tests.delivery.common import report
from tests.store.conftest import T0, publish, readings, store_config, wait_subscribed

FUSE_W = 50_000.0


def poisoned(device: str, n: int, bad: set[int]) -> list[Reading]:
    """``n`` readings; those at the indexes in ``bad`` draw more than the main fuse allows."""
    rs = readings(device, n)
    for i in bad:
        rs[i].metrics["power_w"] = FUSE_W + 1000.0 + i
        rs[i].quality = "ok"
    return rs


def dead_letters(collector, process: str) -> list[dict]:
    return [orjson.loads(p) for _, p, _ in collector.on(f"wattbus/dlq/{process}")]


def _through_a_store(url, refuse, broker, tmp_path, processes, collector_factory, probe_factory, reason: str):
    name = unique("store")
    cfg = store_config(tmp_path, broker, {name: url}, batch_max=1000)
    store = processes(cfg, name)
    pub = collector_factory(broker, f"wattbus/dlq/{name}")
    probe = probe_factory(url)
    wait_subscribed(pub, probe)  # the table exists now: the database's own rule can be added
    refuse()
    device = unique("house")
    bad = {5, 321, 977}
    rs = poisoned(device, 1000, bad)
    publish(pub, rs, per_message=250)
    later = readings(device, 150, start=T0 + 1000 * 60_000)
    publish(pub, later, per_message=50)
    probe.wait_count(device, 1000 - len(bad) + 150, timeout=60)
    pub.wait_for(lambda: len(dead_letters(pub, name)) >= len(bad), 20, "a dead letter per refused reading")
    got = probe.stored(device)
    letters = dead_letters(pub, name)
    report("database refuses 3 of 1000 readings", sent=1150, stored=len(got), lost=1150 - len(bad) - len(got),
           duplicated=len(got) - len({r.ts for r in got}), dlq=len(letters))
    assert got == [r for i, r in enumerate(rs) if i not in bad] + later
    assert sorted(orjson.loads(d["payload"])["ts"] for d in letters) == sorted(rs[i].ts for i in bad)
    assert all(reason in d["reason"] and "refused" in d["reason"] for d in letters)
    assert store.alive() and "unavailable" not in store.output()  # never taken for an outage
    assert store.terminate() == 0


@pytest.mark.slow
def test_sqlite_refusing_three_readings_stores_the_rest_and_dead_letters_them(
        broker, tmp_path, processes, collector_factory, probe_factory):
    db = tmp_path / "w.db"

    def refuse():
        with sqlite3.connect(db) as conn:
            conn.execute(f"CREATE TRIGGER fuse BEFORE INSERT ON readings WHEN NEW.power_w > {FUSE_W} "
                         "BEGIN SELECT RAISE(ABORT, 'power_w over the main fuse'); END")

    _through_a_store(f"sqlite:///{db}", refuse, broker, tmp_path, processes, collector_factory, probe_factory,
                     "power_w over the main fuse")


@pytest.mark.slow
def test_mariadb_refusing_three_readings_stores_the_rest_and_dead_letters_them(
        mariadb, mysql_url, broker, tmp_path, processes, collector_factory, probe_factory):
    database = mysql_url.split("/")[3].split("?")[0]

    def refuse():
        mariadb.root_sql(f"ALTER TABLE `{database}`.readings ADD CONSTRAINT fuse CHECK "
                         f"(power_w IS NULL OR power_w <= {FUSE_W})")

    _through_a_store(mysql_url, refuse, broker, tmp_path, processes, collector_factory, probe_factory,
                     "CONSTRAINT `fuse` failed")


# -- the sinks' sorting of errors, in process ------------------------------------------------------------
def test_sqlite_sorts_its_errors_into_the_datas_and_the_databases(tmp_path):
    sink = SqliteSink(f"sqlite:///{tmp_path / 'w.db'}")
    sink.ensure_schema()
    sink.db.execute("CREATE TRIGGER fuse BEFORE INSERT ON readings WHEN NEW.power_w > 50000 "
                    "BEGIN SELECT RAISE(ABORT, 'over the fuse'); END")
    with pytest.raises(DataError, match="over the fuse"):
        sink.write(poisoned("house", 3, {1}))
    sink.db.execute("DROP TABLE readings")
    with pytest.raises(SinkError) as exc:  # a table gone is the database's state, not the data's fault
        sink.write(readings("house", 3))
    assert not isinstance(exc.value, DataError)


def test_bisecting_writes_each_good_reading_and_hands_over_each_bad_one(tmp_path):
    sink = SqliteSink(f"sqlite:///{tmp_path / 'w.db'}")
    sink.ensure_schema()
    sink.db.execute("CREATE TRIGGER fuse BEFORE INSERT ON readings WHEN NEW.power_w > 50000 "
                    "BEGIN SELECT RAISE(ABORT, 'over the fuse'); END")
    bad = {0, 17, 18, 999, 4095}
    rs = poisoned("house", 4096, bad)
    calls: list[int] = []
    refused: list[tuple[int, str]] = []

    def write(batch):
        calls.append(len(batch))
        sink.write(batch)

    n = write_isolating(write, rs, lambda r, why: refused.append((r.ts, why)))
    assert n == len(bad) and sorted(ts for ts, _ in refused) == sorted(rs[i].ts for i in bad)
    assert all("over the fuse" in why for _, why in refused)
    assert list(sink.read("hhpc", "house", 0, 2**42)) == [r for i, r in enumerate(rs) if i not in bad]
    assert len(calls) < 2 * len(bad) * 13  # about 2·log2(n) writes per bad reading, not one per reading


def test_an_outage_in_the_middle_of_bisecting_is_not_taken_for_poison(tmp_path):
    """A database that goes away while a batch is being split raises out (retried whole, nothing dropped)."""
    rs = poisoned("house", 64, {3})
    state = {"calls": 0}

    def write(batch):
        state["calls"] += 1
        if state["calls"] > 2:
            raise SinkError("connection refused")
        if any(r.metrics.get("power_w", 0) > FUSE_W for r in batch):
            raise DataError("over the fuse")

    refused = []
    with pytest.raises(SinkError):
        write_isolating(write, rs, lambda r, why: refused.append(r))
    assert refused == []


class _InfluxLike(BaseHTTPRequestHandler):
    """Answers /api/v2/write like InfluxDB 2: 204, or 400 when a line carries power_w over the fuse."""

    lines: list[bytes] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        refused = [ln for ln in body.splitlines() if b"power_w=" in ln
                   and float(ln.split(b"power_w=")[1].split(b",")[0].split(b" ")[0]) > FUSE_W]
        if refused:
            msg = orjson.dumps({"code": "invalid", "message": "partial write: field out of range, dropped=1"})
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        type(self).lines.extend(body.splitlines())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_influx_400_is_the_datas_fault_and_is_bisected():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _InfluxLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink = InfluxSink(f"influx://127.0.0.1:{server.server_port}?org=home&bucket=energy&timeout=5")
        rs = poisoned("house", 500, {42, 43})
        refused = []
        assert write_isolating(sink.write, rs, lambda r, why: refused.append((r.ts, why))) == 2
        assert [ts for ts, _ in refused] == [rs[42].ts, rs[43].ts]
        assert "HTTP 400" in refused[0][1] and "out of range" in refused[0][1]
        stored_ts = {int(ln.rsplit(b" ", 1)[1]) for ln in _InfluxLike.lines}
        assert stored_ts == {r.ts for i, r in enumerate(rs) if i not in (42, 43)}
        sink.close()
    finally:
        server.shutdown()
    down = InfluxSink(f"influx://127.0.0.1:{server.server_port}?org=home&bucket=energy&timeout=2")
    with pytest.raises(SinkError) as exc:  # nobody listening any more: the server's fault
        down.write(readings("house", 2))
    assert not isinstance(exc.value, DataError)


def test_mongo_per_document_refusals_are_the_datas_fault():
    client = mongomock.MongoClient()
    sink = MongoSink("mongodb://localhost/wattbus?timeseries=off", client=client)
    sink.ensure_schema()
    coll = sink.db[sink.collection_name]
    real_insert = type(coll).insert_many

    def insert_many(self, docs, ordered=True, **kw):
        docs = list(docs)
        bad = [i for i, d in enumerate(docs) if d["metrics"].get("power_w", 0) > FUSE_W]
        if bad:  # what a server with a $jsonSchema validator answers (code 121)
            try:
                good = [d for i, d in enumerate(docs) if i not in bad]
                if good:
                    real_insert(self, good, ordered=False)
            except BulkWriteError:  # stored by an earlier try already (duplicate keys)
                pass
            errors = [{"index": i, "code": 121, "errmsg": "Document failed validation"} for i in bad]
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": [], "nInserted": 0})
        return real_insert(self, docs, ordered=ordered, **kw)

    type(coll).insert_many = insert_many
    try:
        rs = poisoned("house", 300, {7})
        refused = []
        assert write_isolating(sink.write, rs, lambda r, why: refused.append((r.ts, why))) == 1
        assert refused[0][0] == rs[7].ts and "failed validation" in refused[0][1]
        stored = [r.ts for r in sink.read("hhpc", "house", 0, 2**42)]
        assert stored == [r.ts for i, r in enumerate(rs) if i != 7]
    finally:
        type(coll).insert_many = real_insert
