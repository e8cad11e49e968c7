"""``wattbus bench footprint`` and ``wattbus bench latency`` print their tables (figures never asserted)."""

from __future__ import annotations

import re

import pytest

from tests.support.processes import run_cli

pytestmark = pytest.mark.slow


def test_footprint_lists_every_process_of_the_demo_busy_and_idle():
    r = run_cli("bench", "footprint", "--settle", "25", "--window", "3", timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    busy, idle = r.stdout.split("\nidle:")
    rows = dict(re.findall(r"^(\S.{0,32}?)\s+([\d.]+)\s+[\d.]+\s+[\d.]+", busy, re.M))
    for name in ("store", "exporter", "homeassistant", "relays", "aggregate", "api", "house", "mosquitto",
                 "wattbus demo (supervisor)"):
        assert name in rows and float(rows[name]) > 5, f"{name} missing or without memory: {sorted(rows)}"
    assert re.search(r"^total\s+[\d.]+\s+[\d.]+\s+[\d.]+$", busy, re.M)
    assert re.search(r"^replay\s.*\(frozen: no traffic\)$", idle, re.M)  # the traffic sources were stopped
    assert not re.search(r"^store\s.*frozen", idle, re.M)


def test_latency_sees_every_reading_on_metrics_and_in_the_store():
    r = run_cli("bench", "latency", "--devices", "5", "--seconds", "4", timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "20 readings from 5 devices" in r.stdout
    store = re.search(r"^publish -> store committed\s+(\d+)\s", r.stdout, re.M)
    assert store and int(store.group(1)) == 20  # every reading committed
    assert re.search(r"^publish -> /metrics\s+\d+\s+[\d.]+\s+[\d.]+", r.stdout, re.M)
