"""The sim section of wattbus.toml: the sample loads, mistakes are named, every key is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.config import ConfigError, parse_config
from producers.sim.config import HELP, PARAM_KEYS, Config
from wattbus.plugins import resolve

HERE = Path(__file__).resolve().parents[2] / "producers" / "sim"


def load(text: str):
    return parse_config(text, Path("wattbus.toml"), resolve)


def test_sample_config_loads():
    app = load((HERE / "sample.toml").read_text())
    cfg = app.producers["meters"]
    assert isinstance(cfg, Config)
    assert [m.serial for m in cfg.meters] == ["kili", "pico"]
    assert cfg.meters[1].upload == "daily" and cfg.meters[0].solar_kwp == 4.0


@pytest.mark.parametrize("body,message", [
    ('[[producer.m.meters]]\nserial = "kili"\ndayly_kwh = 3\n', "producer.m.meters.0.dayly_kwh: unknown key"),
    ('[[producer.m.meters]]\nserial = "kili"\nbase_w = 900\n', "base_w: must be at most 333 W"),
    ('meters = [{serial = "a"}, {serial = "a"}]\n', "serial 'a' appears more than once"),
    ('start = "tomorrow"\n', "wattbus.toml:3: producer.m.start: must be an ISO date"),
    ('upload = "weekly"\n', "producer.m.upload"),
])
def test_mistakes_name_the_key(body, message):
    with pytest.raises(ConfigError) as err:
        load('[producer.m]\ntype = "sim"\n' + body)
    assert message in str(err.value)


def test_every_meter_key_is_explained_in_help_and_readme():
    readme = (HERE / "README.md").read_text()
    for key in PARAM_KEYS:
        assert key in HELP
        assert f"| `{key}` |" in readme
