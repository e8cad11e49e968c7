"""The sink reads the API added: SQLite's single-query versions agree with the generic fallbacks."""

from __future__ import annotations

import random

import pytest

from bus.envelope import Reading
from bus.sinks import open_sink
from bus.sinks.base import Sink


@pytest.fixture
def sink(tmp_path):
    s = open_sink(f"sqlite:///{tmp_path}/w.db")
    s.ensure_schema()
    rnd = random.Random(4)
    rows = [Reading("hhpc", "house", 1_700_000_000_000 + i * 60_000,
                    {"power_w": rnd.uniform(0, 3000), "energy_wh": rnd.uniform(0, 50)}, i, 60.0)
            for i in range(600)]
    rows += [Reading("sim", "kili", 1_700_000_000_000 + i * 300_000, {"energy_import_wh": 1000.0 + i * 7.5}, i)
             for i in range(100)]
    rows.append(Reading("hhpc", "house", 1_700_000_000_000 + 600 * 60_000, {}, 600, 60.0, "missing"))
    s.write(rows)
    yield s
    s.close()


@pytest.mark.parametrize(("source", "device", "step_ms"), [("hhpc", "house", 900_000), ("hhpc", "house", 3_600_000),
                                                           ("sim", "kili", 3_600_000), ("hhpc", "nobody", 60_000)])
def test_sqlite_downsampling_agrees_with_the_generic_one(sink, source, device, step_ms):
    start, end = 1_699_999_000_000, 1_700_100_000_000
    fast = sink.read_downsampled(source, device, start, end, step_ms)
    generic = Sink.read_downsampled(sink, source, device, start, end, step_ms)
    assert [r.ts for r in fast] == [r.ts for r in generic]
    for a, b in zip(fast, generic):
        assert a.metrics.keys() == b.metrics.keys()
        for k in a.metrics:
            assert a.metrics[k] == pytest.approx(b.metrics[k])  # gauges averaged, energies summed, counters last


def test_devices_lists_each_stored_device_with_its_last_reading(sink):
    assert sink.devices() == [("hhpc", "house", 1_700_000_000_000 + 600 * 60_000),
                              ("sim", "kili", 1_700_000_000_000 + 99 * 300_000)]
    assert Sink.devices(sink) is None  # a backend without a listing says so
