"""The store writer through an outage: without a spool it refuses (the broker holds), with one it spools."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from bus.runtime import Counters
from bus.sinks.base import SinkError
from consumers.store.spool import Spool, SpoolFull
from bus.sinks.sqlite import SqliteSink
from consumers.store.writer import StoreWriter
from tests.store.conftest import readings, wait_until


class Ctx:
    """What StoreWriter uses of a ConsumerContext."""

    def __init__(self, log: logging.Logger):
        self.name, self.instance = "store", ""
        self.log = log
        self.counters = Counters()
        self.stopping = threading.Event()
        self.health_fns: list = []
        self.published: list = []

    def add_health(self, fn) -> None:
        self.health_fns.append(fn)

    def health(self) -> dict:
        doc = {"counters": self.counters.snapshot()}
        for fn in self.health_fns:
            doc.update(fn())
        return doc

    def publish(self, topic, payload, retain=False, qos=1):
        self.published.append((topic, payload, retain))

    def poison(self, reading, reason) -> None:
        self.published.append(("wattbus/dlq/store", reason, False))


class Switchable(SqliteSink):
    """A real SQLite sink that can be 'taken down': then every call fails like an unreachable server."""

    def __init__(self, url: str):
        super().__init__(url)
        self.up = True
        self.calls = 0

    def write(self, rs):
        self.calls += 1
        if not self.up:
            raise SinkError("connection refused")
        super().write(rs)


@pytest.fixture
def ctx():
    c = Ctx(logging.getLogger("wattbus.test-store"))
    yield c
    c.stopping.set()


def make_writer(ctx, tmp_path, spool: bool) -> tuple[StoreWriter, Switchable]:
    w = StoreWriter(ctx, f"sqlite:///{tmp_path / 'w.db'}", spool_dir=tmp_path / "spool" if spool else None)
    w.sink = Switchable(w.sink.url)
    return w, w.sink


def test_spool_keeps_batches_in_order_across_a_reopen(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    a, b = readings("house", 3), readings("shed", 2)
    s.append(a)
    s.append(b)
    assert (len(s), s.readings) == (2, 5)
    s.close()
    again = Spool(tmp_path, 1 << 20)
    path, got = again.oldest()
    assert got == a
    again.remove(path)
    assert again.oldest()[1] == b
    again.remove(again.oldest()[0])
    assert again.oldest() is None and again.bytes == 0


def test_a_full_spool_refuses_and_a_second_process_cannot_share_it(tmp_path):
    s = Spool(tmp_path, 2000)
    s.append(readings("house", 5))
    with pytest.raises(SpoolFull):
        s.append(readings("house", 100))
    with pytest.raises(RuntimeError, match="in use"):
        Spool(tmp_path, 2000)


def test_an_unreadable_spool_file_is_set_aside_not_fatal(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    s.append(readings("house", 3))
    s.close()
    (tmp_path / "0000000000000007.batch").write_bytes(b"\x00garbage")
    (tmp_path / "0000000000000008.tmp").write_bytes(b"half")  # a crash mid-write
    again = Spool(tmp_path, 1 << 20)
    assert len(again) == 1 and [p.name for p in again.corrupt] == ["0000000000000007.corrupt"]
    assert not (tmp_path / "0000000000000008.tmp").exists()


def test_without_a_spool_an_outage_refuses_batches_and_is_logged_once(ctx, tmp_path, caplog):
    w, sink = make_writer(ctx, tmp_path, spool=False)
    w.start()
    sink.up = False
    caplog.set_level(logging.INFO)
    for _ in range(3):  # the runtime's retries
        with pytest.raises(SinkError):
            w.write(readings("house", 10))
    assert ctx.published[-1][0] == "wattbus/store/health" and ctx.published[-1][2]  # retained, at once
    assert ctx.published[-1][1]["sink_up"] is False and ctx.published[-1][1]["counters"]["sink_backlog"] == 10
    sink.up = True
    w.write(readings("house", 10))
    assert ctx.published[-1][1]["sink_up"] is True and ctx.published[-1][1]["counters"]["sink_backlog"] == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("is back" in m for m in messages) == 1
    assert sink.count("hhpc", "house") == 10
    w.close()


def test_with_a_spool_an_outage_is_acknowledged_to_disk_and_written_later_in_order(ctx, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    w, sink = make_writer(ctx, tmp_path, spool=True)
    w.start()
    w.write(readings("house", 100)[:40])
    sink.up = False
    rs = readings("house", 100)
    w.write(rs[40:70])  # returns: spooled, the runtime acknowledges
    w.write(rs[70:80])
    assert ctx.counters.get("spooled") == 40
    assert w.spool.readings == 40 and ctx.counters.get("sink_backlog") == 40
    sink.up = True
    w.write(rs[80:])  # behind the spooled batches, so it goes to the spool as well
    wait_until(lambda: len(w.spool) == 0, 10, "the spool to drain")
    assert list(sink.read("hhpc", "house", 0, 2**42)) == rs
    assert w.write(readings("house", 1)) is None and len(w.spool) == 0  # direct again
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert any("spool drained" in m for m in messages)
    w.close()


def test_what_was_spooled_before_a_restart_is_written_at_the_next_start(ctx, tmp_path):
    w, sink = make_writer(ctx, tmp_path, spool=True)
    w.start()
    sink.up = False
    rs = readings("house", 50)
    w.write(rs)
    ctx.stopping.set()
    w.close()
    ctx2 = Ctx(logging.getLogger("wattbus.test-store2"))
    w2, sink2 = make_writer(ctx2, tmp_path, spool=True)
    w2.start()
    try:
        wait_until(lambda: sink2.count("hhpc", "house") == 50, 10, "the spool of the last run to be written")
        assert list(sink2.read("hhpc", "house", 0, 2**42)) == rs
    finally:
        ctx2.stopping.set()
        w2.close()


def test_a_full_spool_falls_back_to_not_acknowledging(ctx, tmp_path):
    w = StoreWriter(ctx, f"sqlite:///{tmp_path / 'w.db'}", spool_dir=tmp_path / "spool", spool_max_bytes=3000)
    w.sink = sink = Switchable(w.sink.url)
    w.start()
    sink.up = False
    w.write(readings("house", 10))
    with pytest.raises(SpoolFull):
        w.write(readings("house", 200, seq0=10))
    sink.up = True
    deadline = time.monotonic() + 10
    while True:  # what the runtime does: retry the refused batch until it goes
        try:
            w.write(readings("house", 200))
            break
        except SpoolFull:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    wait_until(lambda: len(w.spool) == 0, 10, "the spool to drain")
    assert sink.count("hhpc", "house") == 200
    w.close()


def test_a_database_that_comes_back_empty_gets_its_schema_again(ctx, tmp_path):
    w, sink = make_writer(ctx, tmp_path, spool=False)
    w.start()
    w.write(readings("house", 5))
    with sink.db:
        sink.db.execute("DROP TABLE readings")  # restored from an old backup, or a new server
    with pytest.raises(Exception):
        w.write(readings("house", 10))  # refused once: the runtime retries
    w.write(readings("house", 10))
    assert sink.count("hhpc", "house") == 10
    w.close()
