"""Config mistakes in an adc section are reported with the key and what is expected."""

from pathlib import Path

import pytest

from bus.config import ConfigError, parse_config
from wattbus.plugins import resolve

SAMPLE = Path(__file__).resolve().parents[2] / "producers" / "adc" / "sample.toml"


def parse(body: str):
    return parse_config(body, Path("wattbus.toml"), resolve)


def test_the_sample_config_is_valid():
    app = parse(SAMPLE.read_text())
    cfg = app.producers["adc"]
    assert set(cfg.circuits) == {"mains", "solar", "heatpump"}
    assert cfg.steps == 600 and cfg.step_ns == 333_333


BASE = """
[producer.adc]
type = "adc"
spi = "sim"
[producer.adc.circuits.mains]
voltage_channel = 0
"""


@pytest.mark.parametrize("extra, words", [
    ("current_channels = [8]", ["current_channels", "<= 7"]),
    ("current_channels = [1, 2]\ncurrent_cal = [90.9]", ["current_cal", "one per channel"]),
    ("current_channels = [0]", ["voltage_channel", "current_channels"]),
    ("current_channels = [1]\nvoltage_from = \"adc/other\"", ["voltage_from", "voltage_channel"]),
    ("current_channels = [1]\nsim = { power_factor = 1.5 }", ["power_factor", "-1..1"]),
    ("current_channels = [1]\nsample_rate = 3", ["sample_rate", "unknown key"]),
])
def test_mistakes_name_the_key(extra, words):
    with pytest.raises(ConfigError) as err:
        parse(BASE + extra + "\n")
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_channel_cannot_be_voltage_in_one_circuit_and_current_in_another():
    with pytest.raises(ConfigError) as err:
        parse(BASE + "current_channels = [1]\n[producer.adc.circuits.pv]\ncurrent_channels = [0]\n")
    assert "voltage and as a current" in str(err.value)


def test_spi_mode_must_be_one_the_chip_speaks():
    with pytest.raises(ConfigError) as err:
        parse(BASE.replace('spi = "sim"', 'spi = "sim"\nspi_mode = 1') + "current_channels = [1]\n")
    assert "spi_mode" in str(err.value)


def test_the_chip_is_one_of_the_two_and_its_clock_limit_holds():
    app = parse(BASE.replace('spi = "sim"', 'spi = "sim"\nchip = "mcp3008"\nmax_speed_hz = 3600000')
                + "current_channels = [1]\n")
    assert app.producers["adc"].chip == "mcp3008"
    with pytest.raises(ConfigError) as err:
        parse(BASE.replace('spi = "sim"', 'spi = "sim"\nmax_speed_hz = 3600000') + "current_channels = [1]\n")
    assert "max_speed_hz" in str(err.value) and "MCP3208" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse(BASE.replace('spi = "sim"', 'spi = "sim"\nchip = "mcp3004"') + "current_channels = [1]\n")
    assert "chip" in str(err.value) and "mcp3008" in str(err.value)
