"""End to end through a real broker and real store processes: outages, crashes, restarts, scale-out.

Every test publishes readings as batch envelopes (what the hhpc replay sends), does something unkind in the
middle, and then checks that each sink holds exactly the readings published: none lost, none twice.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import unique
from tests.store.conftest import MONGO_URL, publish, readings, store_config, wait_subscribed, wait_until

SINKS = ["mysql", "influx"] + (["mongo"] if MONGO_URL else [])


@pytest.fixture(params=SINKS)
def sink_url(request) -> str:
    if request.param == "mysql":
        return request.getfixturevalue("mariadb").url(unique("wb"))
    if request.param == "influx":
        return request.getfixturevalue("victoria").url()
    parts = urlsplit(MONGO_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{unique('wattbus_test')}", parts.query, ""))


def stored_in_this_run(proc) -> int:
    return sum(int(n) for n in re.findall(r"stored (\d+) readings in this run", proc.output()))


@pytest.mark.slow
def test_kill_9_of_the_store_while_it_writes_loses_and_doubles_nothing(sink_url, broker, tmp_path, processes,
                                                                       collector_factory, probe_factory):
    name = unique("store")  # a fresh client id: no session left over from another test on this broker
    cfg = store_config(tmp_path, broker, {name: sink_url}, batch_max=1000)
    store = processes(cfg, name)
    pub = collector_factory(broker)
    probe = probe_factory(sink_url)
    wait_subscribed(pub, probe)
    device = unique("house")
    rs = readings(device, 12_000)
    publish(pub, rs[:8000], per_message=250)
    wait_until(lambda: probe.count(device) >= 1000, 30, "the store to be writing")
    store.kill()  # SIGKILL: no flush, no goodbye; whatever was in hand is unacknowledged
    at_kill = probe.count(device)
    publish(pub, rs[8000:], per_message=250)  # queued in the dead store's session
    processes(cfg, name)
    probe.wait_count(device, len(rs), timeout=60)
    assert probe.stored(device) == rs, f"(killed with {at_kill} of 8000 stored)"


@pytest.mark.slow
def test_a_broker_restart_in_the_middle_of_a_replay_loses_nothing(sink_url, own_broker, tmp_path, processes,
                                                                  collector_factory, probe_factory):
    cfg = store_config(tmp_path, own_broker, {"store": sink_url}, batch_max=1000)
    processes(cfg, "store")
    pub = collector_factory(own_broker)
    probe = probe_factory(sink_url)
    wait_subscribed(pub, probe)
    device = unique("house")
    rs = readings(device, 10_000)
    publish(pub, rs[:6000], per_message=200)
    own_broker.restart()  # clean stop: Mosquitto saves queued messages and sessions, then starts again
    pub = collector_factory(own_broker)
    publish(pub, rs[6000:], per_message=200)
    probe.wait_count(device, len(rs), timeout=60)
    assert probe.stored(device) == rs


@pytest.mark.slow
def test_two_copies_in_a_share_group_split_the_stream_and_store_each_reading_once(
        sink_url, broker, tmp_path, processes, collector_factory, probe_factory, victoria):
    name = unique("store")
    cfg = store_config(tmp_path, broker, {name: sink_url}, group=unique("g"), batch_max=1000)
    one = processes(cfg, name)
    two = processes(cfg, name, "--instance", "2")
    for p in (one, two):
        p.wait_output("subscribed to $share/")
    pub = collector_factory(broker)
    probe = probe_factory(sink_url)
    device = unique("house")
    rs = readings(device, 10_000)
    publish(pub, rs, per_message=100)
    probe.wait_count(device, len(rs), timeout=60)
    assert one.terminate() == 0 and two.terminate() == 0
    split = stored_in_this_run(one), stored_in_this_run(two)
    assert sum(split) == len(rs) and min(split) > 0, f"readings stored by each copy: {split}"
    assert probe.stored(device) == rs
    if sink_url.startswith("influx"):  # VictoriaMetrics keeps every write: no second copy of any sample
        assert len(victoria.raw_timestamps("hhpc_quality", device)) == len(rs)


@pytest.mark.slow
@pytest.mark.parametrize("down", ["mysql", "influx"])
def test_a_database_away_for_20_s_loses_nothing_and_never_delays_the_other_sink(
        down, mariadb, victoria, broker, tmp_path, processes, collector_factory, probe_factory):
    urls = {"mysql": mariadb.url(unique("wb")), "influx": victoria.url()}
    server = {"mysql": mariadb, "influx": victoria}[down]
    up = "influx" if down == "mysql" else "mysql"
    names = {k: unique(f"store-{k}-") for k in urls}
    cfg = store_config(tmp_path, broker, {names[k]: u for k, u in urls.items()}, batch_max=1000)
    procs = {k: processes(cfg, names[k]) for k in urls}
    pub = collector_factory(broker)
    health = collector_factory(broker, f"wattbus/{names[down]}/health")
    probes = {k: probe_factory(u) for k, u in urls.items()}
    for p in probes.values():
        wait_subscribed(pub, p)
    device = unique("house")
    rs = readings(device, 6000)
    publish(pub, rs[:2000])
    for p in probes.values():
        p.wait_count(device, 2000, timeout=30)

    server.stop()
    try:
        away = time.monotonic()
        publish(pub, rs[2000:4000])
        probes[up].wait_count(device, 4000, timeout=15)  # the other store goes on as if nothing happened
        procs[down].wait_output("unavailable", timeout=20)
        health.wait_for(lambda: any(h.get("sink_up") is False and h["counters"].get("sink_backlog", 0) > 0
                                    for h in health_docs(health)), 10, "health showing the outage")
        publish(pub, rs[4000:])
        probes[up].wait_count(device, 6000, timeout=15)
        time.sleep(max(0.0, 21 - (time.monotonic() - away)))
    finally:
        server.start()
    probes[down].wait_count(device, 6000, timeout=60)
    for p in probes.values():
        assert p.stored(device) == rs
    out = procs[down].output()
    assert out.count("unavailable") == 1 and out.count("is back") == 1
    assert health_docs(health)[-1].get("sink_up") is True


def health_docs(collector) -> list[dict]:
    import orjson

    return [orjson.loads(payload) for _, payload, _ in collector.on("wattbus/+/health")]


@pytest.mark.slow
def test_with_a_spool_the_store_acknowledges_through_an_outage_and_a_crash_and_loses_nothing(
        mariadb, broker, tmp_path, processes, collector_factory, probe_factory):
    url = mariadb.url(unique("wb"))
    name = unique("store")
    cfg = store_config(tmp_path, broker, {name: url}, batch_max=1000, spool_dir=str(tmp_path / "spool"))
    store = processes(cfg, name)
    pub = collector_factory(broker)
    probe = probe_factory(url)
    wait_subscribed(pub, probe)
    device = unique("house")
    rs = readings(device, 5000)
    publish(pub, rs[:2000])
    probe.wait_count(device, 2000, timeout=30)

    mariadb.stop()
    try:
        publish(pub, rs[2000:])
        wait_until(lambda: spooled(tmp_path / "spool" / name, device) == 3000, 20, "3000 spooled readings")
        store.kill()  # acknowledged and spooled: the broker will not send them again, the spool has them
        store = processes(cfg, name)
        store.wait_output("from an earlier run")
    finally:
        mariadb.start()
    probe.wait_count(device, 5000, timeout=60)
    assert probe.stored(device) == rs
    store.wait_output("spool drained")


def spooled(directory, device: str) -> int:
    """Readings of ``device`` in the spool's complete batch files (read without taking the spool's lock)."""
    import msgspec

    from bus.envelope import Reading

    n = 0
    for f in directory.glob("*.batch"):
        n += sum(r.device == device for r in msgspec.msgpack.decode(f.read_bytes(), type=list[Reading]))
    return n
