"""Prometheus that alerts: every rule unit-tested by promtool, and HighVoltage seen firing for real.

The real part: Debian's Prometheus on a free port scrapes a real exporter process (`wattbus run`) fed by the
test broker; a 251 V reading goes on the bus and the alert becomes active in Prometheus's /api/v1/alerts.
The test's copy of the config scrapes every second, evaluates every second and waits 2 s instead of a
minute before firing (`for:`); the rule expressions are the shipped ones.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bus.envelope import encode_reading
from consumers.exporter.collector import PROCESS_HEALTH, LatestValues
from schemas import METRICS
from tests.conftest import unique
from tests.support.ports import free_port, wait_port
from tests.support.processes import write_config

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana" / "wattbus.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing: ./run test installs Debian's prometheus package")
    return tool


def _alerts(text: str) -> list[str]:
    return re.findall(r"(?m)^\s*- alert: (\S+)$", text)


def test_every_alert_rule_passes_its_promtool_unit_tests(promtool):
    r = subprocess.run([promtool, "test", "rules", "wattbus-alerts.test.yml"], cwd=PROM, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = _alerts((PROM / "wattbus-alerts.yml").read_text())
    tested = set(re.findall(r"(?m)^\s*alertname: (\S+)$", (PROM / "wattbus-alerts.test.yml").read_text()))
    assert {"HighVoltage", "WattbusDeviceDown", "WattbusDeviceStale", "WattbusDeadLettersGrowing",
            "WattbusStoreFallingBehind", "WattbusProcessRestarting"} <= set(rules)
    assert set(rules) == tested, f"rules without a unit test: {set(rules) - tested}"


def served_metric_names() -> set[str]:
    """The sample names the exporter's collector serves when every metric of the table and every process
    health field has a value: a name counts as served only if the exporter really produces it."""
    from bus.envelope import decode

    state = LatestValues()
    every_metric = {key: 1.0 for key in METRICS}
    state.update(decode(encode_reading("p1", "all", int(time.time() * 1000), every_metric, seq=1)))
    state.set_process("store", True, ["p1/all"])
    state.set_health("store", {"kind": "consumer", "uptime_s": 5, "inbox": 0, "queued": 0, "sink_up": True,
                               "rss_mb": 30, "counters": {"dead_letters": 1, "sink_backlog": 0}})
    return {s.name for family in state.collect() for s in family.samples}


def test_alert_rules_and_the_dashboard_name_only_metrics_the_exporter_serves(promtool):
    served = served_metric_names()
    assert {f[0] for f in PROCESS_HEALTH} - {n.removesuffix("_total") for n in served} == set()
    exprs = " ".join(re.findall(r"(?m)^\s*expr: (.*)$", (PROM / "wattbus-alerts.yml").read_text()))
    names_in_rules = set(re.findall(r"\b(wattbus_[a-z0-9_]+|up)\b", exprs))
    assert names_in_rules - served - {"up"} == set()

    dashboard = json.loads(GRAFANA.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"]
                if isinstance(v.get("query"), dict)]
    assert len(queries) >= 15
    for q in queries:
        names = set(re.findall(r"\b(wattbus_[a-z0-9_]+)\b", q))
        assert names, f"a query that names no wattbus metric: {q}"
        assert names <= served, f"{q}: {names - served} not served by the exporter"
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"  # works with any Prometheus on import


def test_prometheus_config_is_valid_and_scrapes_node_exporter_and_wattbus(promtool):
    r = subprocess.run([promtool, "check", "config", str(PROM / "prometheus.yml")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (PROM / "prometheus.yml").read_text()
    assert 'targets: ["localhost:9100"]' in text  # node_exporter (Debian's prometheus-node-exporter)
    assert re.search(r'job_name: "wattbus"\n\s+static_configs:\n\s+- targets: \["localhost:3030"\]', text)
    assert 'up{job="wattbus"}' in (PROM / "wattbus-alerts.yml").read_text()


def _get(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


def _ready(port: int) -> bool:
    """Prometheus answers 503 on its query API until `/-/ready` says 200."""
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5).status == 200
    except OSError:  # HTTPError 503 and refused connections alike
        return False


def _until(fn, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@pytest.mark.slow
def test_a_251_volt_reading_makes_high_voltage_fire_in_a_real_prometheus(broker, processes, collector_factory,
                                                                        tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus missing: ./run test installs Debian's prometheus package")
    exporter_port, prom_port = free_port(), free_port()
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [consumer.promexporter]
        type = "exporter"
        listen = "127.0.0.1"
        port = {exporter_port}
        """)
    exporter = processes(cfg, "promexporter")
    exporter.wait_output("serving metrics")

    rules = (PROM / "wattbus-alerts.yml").read_text()
    rules = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 2s", rules)  # the expressions stay the shipped ones
    (tmp_path / "wattbus-alerts.yml").write_text(rules)
    config = (PROM / "prometheus.yml").read_text()
    config = re.sub(r"(?m)^(\s+(?:scrape|evaluation)_interval:) \S+$", r"\1 1s", config)
    config = config.split("scrape_configs:")[0] + (  # only the exporter: nothing on this machine's ports
        f'scrape_configs:\n  - job_name: "wattbus"\n    static_configs:\n'
        f'      - targets: ["127.0.0.1:{exporter_port}"]\n')
    (tmp_path / "prometheus.yml").write_text(config)
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(prom_port, timeout=30)
        _until(lambda: _ready(prom_port), "Prometheus ready (its port opens before the TSDB is loaded)")
        api = f"http://127.0.0.1:{prom_port}/api/v1"
        device = unique("mains")
        pub = collector_factory(broker)

        def send(volts: float) -> None:
            pub.publish(f"adc/{device}/reading",
                        encode_reading("adc", device, int(time.time() * 1000), {"voltage_v": volts}, seq=1))

        def voltage() -> float | None:
            query = urllib.parse.quote(f'wattbus_voltage_volts{{device="{device}"}}')
            res = _get(f"{api}/query?query={query}")["data"]["result"]
            return float(res[0]["value"][1]) if res else None

        def high_voltage() -> list[dict]:
            return [a for a in _get(f"{api}/alerts")["data"]["alerts"]
                    if a["labels"].get("alertname") == "HighVoltage" and a["labels"].get("device") == device]

        send(240.0)
        _until(lambda: voltage() == 240.0, "240 V scraped")
        time.sleep(3)  # two evaluations, longer than `for:`
        assert high_voltage() == []  # 240 V is fine

        send(251.0)
        _until(lambda: voltage() == 251.0, "251 V scraped")
        firing = _until(lambda: [a for a in high_voltage() if a["state"] == "firing"], "HighVoltage firing")
        alert = firing[0]
        assert alert["labels"]["source"] == "adc" and alert["labels"]["severity"] == "warning"
        assert float(alert["value"]) == 251.0
        assert alert["annotations"]["summary"] == f"adc/{device} voltage 251 V is above 250 V"
    finally:
        prom.terminate()
        prom.wait(15)
        log.close()
