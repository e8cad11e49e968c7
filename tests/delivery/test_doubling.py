"""Two copies of one process, no ``--instance``: distinct client ids by themselves, no knocking each other
off."""

from __future__ import annotations

import re
import time
from datetime import datetime

import orjson
import pytest

from tests.conftest import unique
from tests.delivery.common import report, stored, wait_until, write_dataset
from tests.store.conftest import publish, readings, store_config
from tests.support.processes import WattbusProcess, write_config


def _second(cfg, name, tmp_path, started: list):
    """A second copy, logging to its own file (the fixture's copies would share one)."""
    (tmp_path / "copy2").mkdir(exist_ok=True)
    p = WattbusProcess(cfg, name, log_dir=tmp_path / "copy2").start()
    started.append(p)
    return p


@pytest.fixture
def request_cleanup():
    lists: list[list] = []
    yield lists.append
    for started in lists:
        for p in started:
            p.kill()


def _client_id(proc) -> str:
    """The client id of the latest start logged in ``proc``'s log file."""
    found = re.findall(r"client id (\S+)", proc.output())
    assert found, proc.output()
    return found[-1]


@pytest.mark.slow
def test_two_copies_of_a_store_in_a_group_get_their_own_ids_and_split_the_stream(
        broker, tmp_path, processes, collector_factory, request_cleanup):
    db = tmp_path / "w.db"
    name = unique("store")
    cfg = store_config(tmp_path, broker, {name: f"sqlite:///{db}"}, group=unique("g"), batch_max=500)
    one = processes(cfg, name)
    one.wait_output("subscribed to $share/")
    started: list = []
    request_cleanup(started)
    two = _second(cfg, name, tmp_path, started)
    two.wait_output("subscribed to $share/")
    assert {_client_id(one), _client_id(two)} == {f"wattbus-{name}", f"wattbus-{name}-2"}
    pub = collector_factory(broker)
    device = unique("house")
    rs = readings(device, 4000)
    publish(pub, rs, per_message=50)
    wait_until(lambda: stored(db, device)[0] >= len(rs), 60, "every reading stored")
    assert one.terminate() == 0 and two.terminate() == 0
    split = [sum(int(n) for n in re.findall(r"stored (\d+) readings in this run", p.output()))
             for p in (one, two)]
    rows, distinct, keys = stored(db, device)
    report("two store copies, no --instance", sent=len(rs), stored=rows, duplicated=rows - distinct,
           by_copy=split[0], by_copy_2=split[1])
    assert keys == [r.ts for r in rs] and sum(split) == len(rs) and min(split) > 0
    assert "lost connection" not in one.output() + two.output()
    # the first copy's slot is free again: a restart gets the same id, hence its own session back
    again = processes(cfg, name)
    again.wait_output("subscribed to $share/")
    assert _client_id(again) == f"wattbus-{name}"


@pytest.mark.slow
def test_two_copies_of_a_producer_do_not_knock_each_other_off_and_report_their_memory(
        broker, tmp_path, processes, collector_factory, request_cleanup):
    name = unique("twin")
    dataset = write_dataset(tmp_path / "hhpc.txt", datetime(2024, 1, 1), 600)
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.{name}]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "live"
        interval = 0.5
        """)
    c = collector_factory(broker, f"wattbus/{name}/health")
    one = processes(cfg, name)
    one.wait_output("live:")
    started: list = []
    request_cleanup(started)
    two = _second(cfg, name, tmp_path, started)
    two.wait_output("live:")
    time.sleep(4)  # long enough for a few rounds of mutual take-overs, were the ids the same
    assert _client_id(one) != _client_id(two)
    assert "lost connection" not in one.output() + two.output()
    wait_until(lambda: len(c.on(f"wattbus/{name}/health")) >= 2, 10, "health from both")
    for _, payload, _ in c.on(f"wattbus/{name}/health"):
        doc = orjson.loads(payload)
        assert 0 < doc["rss_mb"] <= doc["rss_peak_mb"]
