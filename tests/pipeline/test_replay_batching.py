"""A paced replay sends ``batch`` readings per message whenever that many are due, and a slow one each alone."""

from __future__ import annotations

import time
from datetime import date

import orjson
import pytest

from producers.hhpc.generate import generate_year
from tests.conftest import unique
from tests.support.processes import write_config

pytestmark = pytest.mark.slow


def _replay(broker, processes, collector_factory, tmp_path, *, speed: float, batch: int, seconds: float):
    dataset = tmp_path / "day.txt"
    generate_year(2024, dataset, seed=5, start=date(2024, 3, 4), end=date(2024, 3, 5))
    device = unique("replay")
    c = collector_factory(broker, f"hhpc/{device}/reading")
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.{device}]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        speed = {speed}
        batch = {batch}
        """)
    processes(cfg, device)
    c.wait_for(lambda: len(c.on(f"hhpc/{device}/reading")) >= 2, timeout=20, what="two messages")
    time.sleep(seconds)
    sizes, seqs = [], []
    for _, payload, _ in c.on(f"hhpc/{device}/reading"):
        body = orjson.loads(payload)
        items = body.get("readings", [body])
        sizes.append(len(items))
        seqs += [r["seq"] for r in items]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no reading lost or repeated"
    return sizes


def test_a_fast_paced_replay_fills_its_batches(broker, processes, collector_factory, tmp_path):
    # an hour a second: 60 readings due every second, batch = 60 -> about one message a second, not 60
    sizes = _replay(broker, processes, collector_factory, tmp_path, speed=3600, batch=60, seconds=3)
    full = sizes[1:-1]  # the first and the last may be partial
    assert full and sum(full) / len(full) >= 40, sizes


def test_a_slow_replay_sends_each_reading_when_it_is_due(broker, processes, collector_factory, tmp_path):
    # a minute a second: one reading due a second; holding it for a batch would only delay it
    sizes = _replay(broker, processes, collector_factory, tmp_path, speed=60, batch=60, seconds=2)
    assert set(sizes) == {1}, sizes
