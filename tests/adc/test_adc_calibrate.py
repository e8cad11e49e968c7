"""``wattbus calibrate adc CIRCUIT`` against an emulated front end with a known miscalibration: the adapter's
true VCAL, the CT's true ICAL and its phase lead differ from the config; the reference readings are the
emulated truth. The command must find the true values, write them (and nothing else) into the config with a
backup, and show the error before and after."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from producers.adc import Config
from producers.adc.circuit import CircuitRunner
from producers.adc.device import build_emulator
from producers.adc.sampler import Sampler
from tests.support.processes import REPO

TRUE_VCAL, TRUE_ICAL, TRUE_LEAD = 241.0, 87.0, 2.5

CONFIG = """\
# the user's own notes, kept as they are
[mqtt]
host = "127.0.0.1"
port = 1

[producer.meter]
type = "adc"
spi = "sim"   # the emulated chip
chip = "{chip}"

[producer.meter.circuits.mains]
role = "grid"
voltage_channel = 0
current_channels = [1]
voltage_cal = 234.26      # from the formula
current_cal = 90.9
sim = {{ current_a = 10.0, power_factor = {pf}, voltage_cal = 241.0, current_cal = 87.0, phase_deg = 2.5 }}

[producer.meter.circuits.pair]
current_channels = [3, 4]
voltage_from = "adc/mains"
current_cal = [60.0, 60.0]
sim = {{ current_a = [5.0, 2.0], current_cal = [62.0, 57.0] }}

[producer.meter.sim]
voltage_v = 230.0
noise_v = 0.0005
"""


def calibrate(path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "wattbus", "-c", str(path), "calibrate", "adc", *args],
                          input=stdin, capture_output=True, text=True, timeout=120, env=env)


def setup(tmp_path: Path, chip: str = "mcp3208", pf: float = 1.0) -> Path:
    path = tmp_path / "wattbus.toml"
    path.write_text(CONFIG.format(chip=chip, pf=pf))
    return path


def circuit(path: Path) -> dict:
    return tomllib.loads(path.read_text())["producer"]["meter"]["circuits"]["mains"]


def reading(path: Path, table: str = "mains"):
    """A reading with the config as it now stands, on the same emulated front end."""
    cfg = msgspec.convert(tomllib.loads(path.read_text())["producer"]["meter"], Config)
    emu = build_emulator(cfg, realtime=False)
    emu.open(0, 0)
    runner = CircuitRunner(table, cfg.circuits[table], cfg)
    return runner.measure(Sampler(emu, cfg.chip), cfg.steps, cfg.step_ns).analysis


@pytest.mark.parametrize("chip", ["mcp3208", "mcp3008"])
def test_reference_readings_given_as_options_find_the_true_calibration(tmp_path, chip):
    path = setup(tmp_path, chip)
    original = path.read_text()
    before = reading(path)
    assert abs(before.vrms / 230 - 1) > 0.02 and abs(before.irms[0] / 10 - 1) > 0.03   # miscalibrated

    r = calibrate(path, "mains", "--voltage", "230", "--current", "10", "--resistive", "--yes")
    assert r.returncode == 0, r.stderr
    c = circuit(path)
    assert c["voltage_cal"] == pytest.approx(TRUE_VCAL, rel=0.002)
    assert c["current_cal"] == pytest.approx(TRUE_ICAL, rel=0.003)
    assert c["phase_deg"] == pytest.approx(TRUE_LEAD, abs=0.1)
    # what the user sees: before and after, each against the reference
    assert re.search(r"voltage\s+230\.00 V\s+\S+ V \(-2\.\d\d %\)\s+\S+ V \([+-]0\.[01]\d %\)",
                     r.stdout), r.stdout
    assert re.search(r"current ch 1\s+10\.000 A\s+\S+ A \(\+4\.\d\d %\)\s+\S+ A \([+-]0\.[0-2]\d %\)",
                     r.stdout)
    assert re.search(r"phase error\s+0\.00 deg\s+\+2\.[45]\d deg\s+[+-]0\.0\d deg", r.stdout), r.stdout
    # the backup is the file as it was; only the three keys changed, the user's comments stayed
    backups = list(tmp_path.glob("wattbus.toml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == original
    text = path.read_text()
    assert "# the user's own notes, kept as they are" in text and "# the emulated chip" in text
    assert tomllib.loads(text)["producer"]["meter"]["circuits"]["pair"] == \
        tomllib.loads(original)["producer"]["meter"]["circuits"]["pair"]
    after = reading(path)
    assert after.vrms == pytest.approx(230, rel=0.005) and after.irms[0] == pytest.approx(10, rel=0.005)
    assert after.real_power[0] == pytest.approx(2300, rel=0.005)


def test_interactive_walk_through_on_stdin(tmp_path):
    path = setup(tmp_path)
    answers = "\n".join(["",        # Press Enter when the load is on
                         "230,0",   # voltmeter (a decimal comma is fine)
                         "ten",     # not a number: asked again
                         "10",      # ammeter on channel 1
                         "y",       # the load is resistive
                         "y"]) + "\n"   # write
    r = calibrate(path, "mains", stdin=answers)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "a positive number, please" in r.stdout
    c = circuit(path)
    assert c["voltage_cal"] == pytest.approx(TRUE_VCAL, rel=0.002)
    assert c["current_cal"] == pytest.approx(TRUE_ICAL, rel=0.003)
    assert c["phase_deg"] == pytest.approx(TRUE_LEAD, abs=0.1)


def test_declining_or_a_dry_run_writes_nothing(tmp_path):
    path = setup(tmp_path)
    original = path.read_text()
    r = calibrate(path, "mains", "--voltage", "230", "--dry-run")
    assert r.returncode == 0 and "voltage_cal = 241" in r.stdout and "dry run" in r.stdout
    r = calibrate(path, "mains", "--voltage", "230", stdin="n\n")
    assert r.returncode == 1 and "Not written" in r.stdout
    r = calibrate(path, "mains", "--voltage", "230", stdin="")   # no answer at all: no
    assert r.returncode == 1
    assert path.read_text() == original and not list(tmp_path.glob("*.bak"))


def test_a_reference_power_reading_calibrates_the_current(tmp_path):
    path = setup(tmp_path)
    r = calibrate(path, "mains", "--voltage", "230", "--power", "2300", "--yes")
    assert r.returncode == 0, r.stderr
    c = circuit(path)
    assert c["current_cal"] == pytest.approx(TRUE_ICAL, rel=0.005)   # via cos(2.5 deg) = 0.999: still close
    assert "phase_deg" not in c


def test_a_load_that_is_not_resistive_leaves_the_phase_alone(tmp_path):
    path = setup(tmp_path, pf=0.8)
    r = calibrate(path, "mains", "--resistive", "--yes")
    assert "not a resistive load" in r.stdout
    assert "phase_deg" not in circuit(path)
    assert r.returncode == 0 and "Nothing to change" in r.stdout


def test_a_current_only_circuit_with_two_cts(tmp_path):
    path = setup(tmp_path)
    r = calibrate(path, "pair", "--current", "5", "2", "--yes")
    assert r.returncode == 0, r.stderr
    pair = tomllib.loads(path.read_text())["producer"]["meter"]["circuits"]["pair"]
    assert pair["current_cal"] == [pytest.approx(62.0, rel=0.004), pytest.approx(57.0, rel=0.004)]
    r = calibrate(path, "pair", "--power", "100")
    assert r.returncode != 0 and "--current" in r.stderr


def test_an_unknown_circuit_names_the_ones_there_are(tmp_path):
    path = setup(tmp_path)
    r = calibrate(path, "kitchen", "--voltage", "230")
    assert r.returncode == 2
    assert "kitchen" in r.stderr and "mains" in r.stderr and "pair" in r.stderr
    assert "Traceback" not in r.stderr


def test_wattbus_calibrate_lists_what_can_be_calibrated(tmp_path):
    path = setup(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "wattbus", "-c", str(path), "calibrate"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 2 and "adc" in r.stdout
    r = subprocess.run([sys.executable, "-m", "wattbus", "-c", str(path), "calibrate", "shelly", "mains"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "invalid choice" in r.stderr
