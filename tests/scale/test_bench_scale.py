"""``wattbus bench scale``: copies of the store in one $share group split the stream and lose nothing."""

from __future__ import annotations

import re

import pytest

from tests.support.processes import run_cli

pytestmark = pytest.mark.slow


ROW = re.compile(r"^\s+(\d)\s+([\d,]+)\s+([\d.]+)x\s+([\d,]+)\s+([\d,]+)$", re.M)


def test_two_copies_store_every_reading_once_and_split_aggregates_keep_their_buckets():
    r = run_cli("bench", "scale", "--readings", "6000", "--batch", "100", "--copies", "1,2",
                "--agg-devices", "3", timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    store, agg = r.stdout.split("\naggregate:")
    rows = ROW.findall(store)
    assert [c for c, *_ in rows] == ["1", "2"]
    assert all(lost == "0" and twice == "0" for *_, lost, twice in rows), r.stdout
    rows = ROW.findall(agg)  # 3 devices over 2 copies: every year bucket whole, every day as with one copy
    assert [c for c, *_ in rows] == ["1", "2"]
    assert all(lost == "0" and unlike == "0" for *_, lost, unlike in rows), r.stdout
