"""Fuzz through the real broker into real store processes (SQLite, MariaDB, VictoriaMetrics) and, in
process, the Mongo sink on mongomock (no MongoDB server here).

Each hypothesis example publishes a list of hostile messages for a fresh device (``tests/fuzz/hostile.py``),
then a sentinel reading; the store handles messages in order, so once the sentinel is stored every message
before it has been handled. Then: the store is alive, it holds exactly the readings the independent judge
keeps (nothing wrong stored, nothing good lost), every message the judge finds something wrong in produced
one dead letter with a reason, and the store's memory is back near where it started.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from bus.consumer import write_isolating
from bus.envelope import Limits, decode_checked, encode_reading
from bus.sinks.mongo import MongoSink
from tests.conftest import unique
from tests.delivery.common import report
from tests.fuzz.hostile import T0, judge, messages
from tests.store.conftest import store_config, wait_subscribed, wait_until

SENTINEL_TS = T0 + 10**10
FUZZ = settings(max_examples=10, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1048576


def close_enough(got: dict[int, dict], want: dict[int, dict], rel_tol: float) -> bool:
    """The same readings and metrics, each value equal to ``rel_tol`` (0: exactly; otherwise a subnormal may
    also read back as 0)."""
    return got.keys() == want.keys() and all(
        got[ts].keys() == m.keys() and all(math.isclose(got[ts][k], float(v), rel_tol=rel_tol, abs_tol=1e-300 if rel_tol else 0)
                                           for k, v in m.items())
        for ts, m in want.items())


class Fuzzer:
    def __init__(self, url, broker, tmp_path, processes, collector_factory, probe_factory, rel_tol=0.0):
        self.rel_tol = rel_tol
        self.name = unique("fuzzstore")
        self.store = processes(store_config(tmp_path, broker, {self.name: url}, batch_max=500), self.name)
        self.pub = collector_factory(broker, f"wattbus/dlq/{self.name}")
        self.probe = probe_factory(url)
        wait_subscribed(self.pub, self.probe)
        self.rss0 = rss_mb(self.store.proc.pid)
        self.totals = dict(messages=0, stored=0, dlq=0, lost=0, wrong=0)

    def run(self, device: str, msgs) -> None:
        now = int(time.time() * 1000)
        before = len(self.pub.on(f"wattbus/dlq/{self.name}"))
        want: dict[int, dict] = {}
        dead = 0
        for m in msgs:
            v = judge(m.topic, m.payload, now)
            want.update(v.stored)
            dead += v.dead_letter
            self.pub.publish(m.topic, m.payload)
        sentinel = encode_reading("hhpc", device, SENTINEL_TS, {"power_w": 1.0})
        self.pub.publish(f"hhpc/{device}/reading", sentinel)
        wait_until(lambda: SENTINEL_TS in {r.ts for r in self.probe.stored(device)}, 60, "the sentinel")
        self.pub.wait_for(lambda: len(self.pub.on(f"wattbus/dlq/{self.name}")) - before >= dead, 10,
                          f"{dead} dead letters")
        got = {r.ts: r.metrics for r in self.probe.stored(device) if r.ts != SENTINEL_TS}
        letters = [orjson.loads(p) for _, p, _ in self.pub.on(f"wattbus/dlq/{self.name}")[before:]]
        self.totals["messages"] += len(msgs)
        self.totals["stored"] += len(got)
        self.totals["dlq"] += len(letters)
        self.totals["lost"] += len(set(want) - set(got))
        self.totals["wrong"] += len(set(got) - set(want))
        assert self.store.alive(), self.store.output()[-3000:]
        assert close_enough(got, want, self.rel_tol), (got, want)
        assert len(letters) == dead and all(d["reason"] for d in letters)

    def finish(self, what: str) -> None:
        time.sleep(1)
        rss = rss_mb(self.store.proc.pid)
        report(what, **self.totals, rss_start_mb=round(self.rss0), rss_end_mb=round(rss))
        assert rss < self.rss0 + 30, f"RSS grew from {self.rss0:.0f} to {rss:.0f} MB"
        assert self.store.terminate() == 0


PLACEHOLDER = "fzplaceholder"
"""The device the strategy writes into its messages; each example swaps in a fresh name, so examples never see
each other's readings while the strategy itself stays deterministic (hypothesis replays it when shrinking)."""


def _fuzz(url, what, broker, tmp_path, processes, collector_factory, probe_factory, rel_tol=0.0):
    fz = Fuzzer(url, broker, tmp_path, processes, collector_factory, probe_factory, rel_tol)

    @FUZZ
    @given(msgs=messages(PLACEHOLDER, max_size=10))
    def example(msgs):
        device = unique("fz")
        fz.run(device, [replace(m, topic=m.topic.replace(PLACEHOLDER, device),
                                payload=m.payload.replace(PLACEHOLDER.encode(), device.encode())) for m in msgs])

    example()
    fz.finish(what)


@pytest.mark.slow
def test_fuzz_into_sqlite(broker, tmp_path, processes, collector_factory, probe_factory):
    _fuzz(f"sqlite:///{tmp_path / 'fz.db'}", "fuzz: SQLite store", broker, tmp_path, processes,
          collector_factory, probe_factory)


@pytest.mark.slow
def test_fuzz_into_mariadb(mysql_url, broker, tmp_path, processes, collector_factory, probe_factory):
    _fuzz(mysql_url, "fuzz: MariaDB store", broker, tmp_path, processes, collector_factory, probe_factory)


@pytest.mark.slow
def test_fuzz_into_victoriametrics(influx_url, broker, tmp_path, processes, collector_factory, probe_factory):
    # VictoriaMetrics keeps 12 significant decimal digits of a value (its documented precision), and
    # reads a subnormal back as 0
    _fuzz(influx_url, "fuzz: VictoriaMetrics store", broker, tmp_path, processes, collector_factory,
          probe_factory, rel_tol=1e-11)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages("mongofz", max_size=10))
def test_fuzz_into_mongo_on_mongomock(msgs):
    """The consumer's path in process (decode, check, write with isolation) into the Mongo sink."""
    import mongomock

    sink = MongoSink("mongodb://localhost/wattbus", client=mongomock.MongoClient())
    sink.ensure_schema()
    now = int(time.time() * 1000)
    want: dict[int, dict] = {}
    for m in msgs:
        want.update(judge(m.topic, m.payload, now).stored)
        try:
            got = decode_checked(m.payload, Limits(), now)
        except ValueError:
            continue
        if m.topic.split("/")[:2] != [got.source, got.device]:
            continue
        write_isolating(sink.write, got.readings, lambda r, why: pytest.fail(f"mongomock refused {r}: {why}"))
    stored = {r.ts: r.metrics for r in sink.read("hhpc", "mongofz", 0, 2**42)}
    assert stored == {ts: {k: float(v) for k, v in m.items()} for ts, m in want.items()}
