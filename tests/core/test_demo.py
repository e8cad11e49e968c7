"""``wattbus demo``: the config it composes from every plugin's demo.toml, and the whole demo running."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bus.config import ConfigError, parse_config
from producers.registry import PRODUCERS
from tests.support.processes import descendants_of, still_running
from wattbus.demo import Ports, compose
from wattbus.plugins import plugin, plugins, resolve

REPO = Path(__file__).resolve().parents[2]


def fragments() -> list:
    return [(p, p.demo) for p in plugins() if p.demo is not None]


def test_every_fragment_is_merged_with_placeholders_filled_and_the_hardware_set_apart(tmp_path):
    ports = Ports(free=True)
    demo = compose(fragments(), data=tmp_path, mqtt_port=23456, ports=ports)
    app = parse_config(demo.text, tmp_path / "wattbus.toml", resolve)
    assert {c.type for c in app.producers.values()} == set(PRODUCERS), "every producer runs in the demo"
    assert {"store", "exporter"} <= {c.type for c in app.consumers.values()}
    assert app.mqtt.port == 23456 and "${" not in demo.text
    assert str(tmp_path / "hhpc-2024.txt") in demo.text and f"sqlite:///{tmp_path}/wattbus.db" in demo.text
    assert "[emulator." not in demo.text, "the hardware is not part of wattbus.toml"
    assert set(demo.hardware) == {"shelly-mains", "shelly-solar", "p1-fluvius", "fronius", "weather",
                                  "relay-ev"}
    assert all(cmd[1:4] == ["-m", "wattbus", "emulate"] for cmd in demo.hardware.values())
    # --free-ports: one free port per N, the same in every fragment that names it
    mains_port = ports.chosen[8081]
    assert mains_port != 8081 and f"127.0.0.1:{mains_port}" in demo.text
    assert str(mains_port) in demo.hardware["shelly-mains"]
    assert app.consumers["exporter"].port == ports.chosen[3030]


def test_without_free_ports_the_standard_ports_are_used(tmp_path):
    demo = compose(fragments(), data=tmp_path, mqtt_port=1883, ports=Ports(free=False))
    app = parse_config(demo.text, tmp_path / "wattbus.toml", resolve)
    assert app.consumers["exporter"].port == 3030
    assert demo.ports.chosen[3030] == 3030


def test_a_new_plugins_fragment_joins_without_an_edit_and_clashes_are_named(tmp_path):
    extra = tmp_path / "demo.toml"
    extra.write_text('# a later consumer\n[consumer.later]\ntype = "store"\nsink = "${sink}"\n'
                     '[site]\ntimezone = "Europe/Amsterdam"\n')
    demo = compose([*fragments(), (plugin("consumer", "store"), extra)], data=tmp_path, mqtt_port=1,
                   ports=Ports(free=True))
    assert "[consumer.later]" in demo.text and "Europe/Amsterdam" in demo.text
    twice = tmp_path / "twice.toml"
    twice.write_text('[consumer.store]\ntype = "store"\n')
    with pytest.raises(ConfigError, match=r"\[consumer.store\] is defined by .*consumers/store/demo.toml"):
        compose([*fragments(), (plugin("consumer", "store"), twice)], data=tmp_path, mqtt_port=1,
                ports=Ports(free=True))


def test_an_unknown_placeholder_names_the_fragment(tmp_path):
    bad = tmp_path / "demo.toml"
    bad.write_text('[consumer.x]\ntype = "store"\nsink = "${database}"\n')
    with pytest.raises(ConfigError, match=r"demo.toml: unknown placeholder \$\{database\}"):
        compose([(plugin("consumer", "store"), bad)], data=tmp_path, mqtt_port=1, ports=Ports(free=True))


@pytest.mark.slow
def test_the_demo_runs_every_producer_into_the_store_and_onto_metrics(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "demo.log", "wb")
    demo = subprocess.Popen([sys.executable, "-m", "wattbus", "demo", "--free-ports", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True, text=True)
    try:
        banner = []
        while not banner or "Ctrl-C stops everything" not in banner[-1]:
            line = demo.stdout.readline()
            assert line, f"the demo ended early:\n{(tmp_path / 'demo.log').read_text()[-3000:]}"
            banner.append(line)
        urls = [line.split()[-1] for line in banner if re.search(r"\s+http://\S+$", line)]
        metrics_url = next(u for u in urls if u.endswith("/metrics"))
        assert ":3030/" not in metrics_url, "free ports: nothing on the standard ones"
        deadline = time.monotonic() + 120
        missing = set(PRODUCERS)
        while missing and time.monotonic() < deadline:
            time.sleep(1)
            stored, page = _stored_sources(tmp_path / "wattbus.db"), _get(metrics_url)
            missing = {s for s in PRODUCERS if not (s in stored and f'source="{s}"' in page)}
        assert not missing, f"no reading of {sorted(missing)} in the store and on /metrics:\n" \
                            f"{(tmp_path / 'demo.log').read_text()[-4000:]}"
        children = list(descendants_of(demo.pid))
        assert len(children) >= 3 + len(PRODUCERS) + 2, "broker, hardware, producers, consumers"
    finally:
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(40)
    assert code == 0
    assert not still_running(children), "SIGTERM stops every child"


def _stored_sources(db: Path) -> set[str]:
    """The sources with at least one reading in the demo's SQLite store (nothing yet: empty)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return {row[0] for row in conn.execute("SELECT DISTINCT source FROM readings")}
    except sqlite3.Error:
        return set()


def _get(url: str) -> str:
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return ""
