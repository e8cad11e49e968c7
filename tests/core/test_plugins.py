"""The plugin contract (``bus/plugin.py``) holds for every registered plugin: a plugin is one folder and one
registry line, and everything else finds it through the registries."""

from __future__ import annotations

import importlib
from pathlib import Path

import orjson
import pytest

from bus import envelope
from bus.plugin import Plugin
from consumers.registry import CONSUMERS
from producers.registry import PRODUCERS
from schemas import METRICS, reading_schema
from tests.support.processes import run_cli
from wattbus.plugins import plugin, plugin_module, plugins

REGISTERED = [("producer", t) for t in PRODUCERS] + [("consumer", t) for t in CONSUMERS]
IDS = [f"{k}:{t}" for k, t in REGISTERED]


def folder(kind: str, ptype: str) -> Path:
    return Path(plugin_module(kind, ptype).__file__).parent


@pytest.mark.parametrize("kind,ptype", REGISTERED, ids=IDS)
def test_each_registered_package_describes_itself(kind, ptype):
    p = plugin(kind, ptype)
    assert isinstance(p, Plugin) and (p.kind, p.type) == (kind, ptype)
    assert p.run is plugin_module(kind, ptype).run, "wattbus run calls the package's run: the same one"
    for name in ("README.md", "sample.toml", "demo.toml"):
        assert (folder(kind, ptype) / name).is_file(), f"{kind} {ptype}: one folder holds its {name}"
    assert p.demo == folder(kind, ptype) / "demo.toml"


@pytest.mark.parametrize("kind,ptype", REGISTERED, ids=IDS)
def test_each_sample_config_passes_check_config(kind, ptype, tmp_path):
    sample = folder(kind, ptype) / "sample.toml"
    r = run_cli("-c", str(sample), "check-config", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


@pytest.mark.parametrize("p", [p for p in plugins() if p.metrics], ids=lambda p: p.type)
def test_every_metric_a_plugins_tables_name_is_a_row_of_the_metrics_table(p):
    keys = set(p.metrics())
    assert keys, f"{p.type}: its tables name no metric"
    assert keys <= set(METRICS), f"{p.type}: not in schemas/metrics.toml: {sorted(keys - set(METRICS))}"


def test_the_producer_registry_is_the_one_list_of_sources():
    assert envelope.SOURCES == tuple(PRODUCERS)
    assert reading_schema()["$defs"]["source"]["enum"] == list(PRODUCERS)
    for source in PRODUCERS:
        doc = {"v": 1, "source": source, "device": "d", "ts": 1, "metrics": {}}
        assert envelope.decode(orjson.dumps(doc))[0].source == source
    with pytest.raises(envelope.EnvelopeError, match="source"):
        envelope.decode(orjson.dumps({"v": 1, "source": "store", "device": "d", "ts": 1, "metrics": {}}))


def test_a_package_with_only_config_and_run_is_still_a_plugin(tmp_path, monkeypatch):
    """A consumer added the minimal way (``Config``, ``run``, ``demo.toml``) is described all the same."""
    pkg = tmp_path / "minimal_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from bus.config import PluginConfig\n"
        "class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):\n    port: int = 4000\n"
        "def run(ctx, cfg):\n    pass\n")
    (pkg / "demo.toml").write_text('[consumer.minimal]\ntype = "minimal"\nport = ${port:4000}\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    from bus.plugin import describe

    p = describe("consumer", "minimal", importlib.import_module("minimal_plugin"))
    assert p.demo == pkg / "demo.toml"
    assert p.links(p.config(type="minimal", port=4123)) == {"minimal": "http://localhost:4123/"}


def test_emulate_and_bench_list_what_the_registries_offer():
    r = run_cli("emulate")
    assert r.returncode == 2
    assert all(t in r.stderr for t in ("shelly", "p1", "hhpc"))
    r = run_cli("bench")
    assert r.returncode == 2 and "replay" in r.stderr and "adc" in r.stderr
