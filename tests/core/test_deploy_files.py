"""The shipped deploy files are valid for the real tools and name only files that exist.

Behaviour is tested in tests/deploy/ (install.sh on a scratch root, the production broker, alerts firing);
this is the quick check that a file did not rot: promtool accepts the rules and config, sh parses the
scripts, every path a file points a user to is in the repository.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROM = DEPLOY / "prometheus"


@pytest.fixture
def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing: ./run test installs Debian's prometheus package")
    return tool


def test_alert_rules_are_valid(promtool):
    text = (PROM / "wattbus-alerts.yml").read_text()
    r = subprocess.run([promtool, "check", "rules", str(PROM / "wattbus-alerts.yml")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(re.findall(r'- alert:', text))} rules found" in r.stdout


def test_prometheus_config_is_valid(promtool):
    r = subprocess.run([promtool, "check", "config", str(PROM / "prometheus.yml")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shell_scripts_parse_and_are_executable():
    for script in (DEPLOY / "install.sh", REPO / "mosquitto/make-user.sh",
                   REPO / "mosquitto/make-test-ca.sh"):
        r = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, f"{script}: {r.stderr}"
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
        assert "mosquitto_passwd -b" not in script.read_text()  # -b takes the password on argv


def test_files_name_only_paths_that_exist():
    for path in (REPO / "mosquitto/mosquitto.prod.conf", DEPLOY / "systemd/wattbus@.service",
                 DEPLOY / "systemd/hardware-spi.conf", DEPLOY / "install.sh", REPO / "mosquitto/tls.conf"):
        text = path.read_text()
        refs = re.findall(r"(?<![/\w.])((?:deploy|mosquitto)/[\w@./-]+\.(?:sh|conf|service|toml|yml|json))",
                          text)
        for ref in refs:
            assert (REPO / ref).exists(), f"{path.name} names {ref}, which does not exist"


def test_the_unit_is_notify_with_a_watchdog_a_credential_and_no_hardware_groups():
    unit = (DEPLOY / "systemd/wattbus@.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "LoadCredential=mqtt.pass:/etc/wattbus/mqtt/%i.pass",
                 "Environment=WATTBUS_MQTT_PASSWORD_FILE=%d/mqtt.pass", "RestartPreventExitStatus=2",
                 "StartLimitBurst=", "MemoryMax=", "PrivateDevices=yes"):
        assert line in unit, line
    assert "SupplementaryGroups" not in unit  # only the adc drop-in gives spi/gpio
    assert "SupplementaryGroups=spi gpio" in (DEPLOY / "systemd/hardware-spi.conf").read_text()


def test_grafana_dashboard_is_json_with_prometheus_queries():
    dash = json.loads((DEPLOY / "grafana/wattbus.json").read_text())
    assert dash["uid"] == "wattbus" and dash["panels"]
    assert all(t["expr"] for p in dash["panels"] for t in p.get("targets", []))


def test_the_example_acl_is_what_wattbus_acl_writes_for_the_example_config():
    """mosquitto/acl is generated: `wattbus -c deploy/wattbus.example.toml acl > mosquitto/acl`."""
    import os
    import sys

    r = subprocess.run([sys.executable, "-m", "wattbus", "-c", "deploy/wattbus.example.toml", "acl"],
                       cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    assert (REPO / "mosquitto/acl").read_text() == r.stdout
