"""``wattbus bench scale``: copies of the store in one $share group split the stream and lose nothing."""

from __future__ import annotations

import re

import pytest

from tests.support.processes import run_cli

pytestmark = pytest.mark.slow


def test_two_copies_in_a_group_store_every_reading_once():
    r = run_cli("bench", "scale", "--readings", "6000", "--batch", "100", "--copies", "1,2", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = re.findall(r"^\s+(\d)\s+([\d,]+)\s+([\d.]+)x\s+([\d,]+)\s+([\d,]+)$", r.stdout, re.M)
    assert [c for c, *_ in rows] == ["1", "2"]
    assert all(lost == "0" and twice == "0" for *_, lost, twice in rows), r.stdout
