"""``wattbus bench relay`` prints, per day of each kind and in total, both rules' figures (never asserted)."""

from __future__ import annotations

import re

from tests.support.processes import run_cli


def test_bench_relay_prints_every_day_for_both_rules_and_the_ratios():
    r = run_cli("bench", "relay", "--days", "1", timeout=120)
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^(\S+ \S+ \S+)\s+(controller|naive)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
                      r.stdout, re.M)
    kinds = {label.split(" ", 1)[1] for label, *_ in rows}
    assert kinds == {"sim sunny", "sim cloudy", "sim broken", "hhpc broken"}
    assert sorted(rule for _, rule, *_ in rows) == ["controller"] * 4 + ["naive"] * 4
    assert re.search(r"^total\s+controller\s+\d+", r.stdout, re.M)
    assert "controller / naive: switchings" in r.stdout and "solar energy used" in r.stdout
