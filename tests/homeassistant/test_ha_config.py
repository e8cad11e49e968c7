"""The homeassistant consumer's config: its sample and demo fragment load; mistakes name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.config import ConfigError, parse_config
from wattbus.plugins import resolve

FOLDER = Path(__file__).resolve().parents[2] / "consumers" / "homeassistant"


def test_sample_and_demo_fragment_load():
    sample = parse_config((FOLDER / "sample.toml").read_text(), Path("sample.toml"), resolve)
    cfg = sample.consumers["homeassistant"]
    assert cfg.discovery == "device" and cfg.relays[0].name == "ev" and cfg.min_interval == 10.0
    demo = (FOLDER / "demo.toml").read_text().replace("${mqtt_port}", "1883")
    assert parse_config(demo, Path("demo.toml"), resolve).consumers["homeassistant"].type == "homeassistant"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("min_intervall = 3", "consumer.ha.min_intervall: unknown key; did you mean `min_interval`?"),
        (
            'discovery = "devices"',
            "consumer.ha.discovery: invalid value 'devices'; expected one of: 'device', 'entity'",
        ),
        ('node_id = "a b"', "consumer.ha.node_id: must be 1-32 letters, digits, _ or -"),
        ('discovery_prefix = "homeassistant/#"', "consumer.ha.discovery_prefix: must be topic levels"),
        ("min_interval = -1", "consumer.ha.min_interval: must be >= 0 seconds"),
        ("max_devices = 0", "consumer.ha.max_devices: must be 1..100000"),
        ('relays = [{name = "Bad Name"}]', "consumer.ha.relays.0.name: 'Bad Name' is not allowed"),
        ('relays = [{name = "ev"}, {name = "ev"}]', "consumer.ha.relays: each relay name may appear once"),
    ],
)
def test_a_mistake_names_file_line_and_key(line, expected):
    text = f'[consumer.ha]\ntype = "homeassistant"\n{line}\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, Path("wattbus.toml"), resolve)
    assert str(err.value).startswith("wattbus.toml:3: " + expected), str(err.value)
