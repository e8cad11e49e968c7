"""The shipped Prometheus config and alert rules are valid for the real promtool."""

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture
def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing: ./run test installs Debian's prometheus package")
    return tool


def test_alert_rules_are_valid(promtool):
    r = subprocess.run([promtool, "check", "rules", str(DEPLOY / "wattbus-alerts.yml")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 rules found" in r.stdout


def test_prometheus_config_is_valid(promtool):
    r = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
