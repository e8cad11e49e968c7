"""``wattbus bench sites``: a few sites bridged into a central broker; every reading arrives, stored once."""

from __future__ import annotations

import re

import pytest

from tests.support.processes import run_cli

pytestmark = pytest.mark.slow

ROW = re.compile(r"^\s*(?P<sites>\d+)\s+(?P<devices>[\d,]+)\s+(?P<sent>[\d,]+)\s+(?P<received>[\d,]+)\s+"
                 r"(?P<lost>[\d,]+)\s+(?P<dup>[\d,]+)\s+[\d,]+(?:\s+[\d.]+){3}\s+(?P<stored>[\d,]+)\s", re.M)


def test_every_reading_of_every_site_reaches_the_central_store_once():
    r = run_cli("bench", "sites", "--sites", "5", "--devices", "2", "--seconds", "5", timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "p99 ms" in r.stdout and "stored" in r.stdout, r.stdout
    rows = [{k: int(v.replace(",", "")) for k, v in m.groupdict().items()} for m in ROW.finditer(r.stdout)]
    assert len(rows) == 1, r.stdout
    row = rows[0]
    assert (row["sites"], row["devices"]) == (5, 10)
    assert row["sent"] == 50  # 10 devices x 5 s
    assert row["received"] == row["sent"] and row["stored"] == row["sent"], r.stdout
    assert row["lost"] == 0 and row["dup"] == 0, r.stdout
