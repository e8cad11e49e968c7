"""The run loop against the shared recording stand-in for the producer context (no broker): device status on
SPI failures, retained state before readings, a voltage shared between circuits of one process."""

import logging

import msgspec
import pytest

from producers.adc import Config
from producers.adc import loop as adc_loop
from producers.adc.device import build_emulator
from tests.support.context import RecordingContext


def recording(rounds: int, state: dict | None = None) -> RecordingContext:
    """The shared recording context as the adc producer "adc", stopping after ``rounds`` loop waits."""
    return RecordingContext("adc", "adc", states={"mains": state} if state else None, stop_after_waits=rounds)


def config(**circuits) -> Config:
    return msgspec.convert({"type": "adc", "spi": "sim", "interval": 1.0, "circuits": circuits,
                            "sim": {"voltage_v": 240.0, "noise_v": 0.001}}, Config)


def test_current_only_circuit_uses_the_voltage_of_a_circuit_in_the_same_process():
    cfg = config(ct={"current_channels": [2], "voltage_from": "adc/mains", "sim": {"current_a": 10.0}},
                 mains={"voltage_channel": 0, "current_channels": [1]})  # ct is read first
    ctx = recording(rounds=3)
    adc_loop.run(ctx, cfg)
    assert ctx.subscriptions == {}                       # no MQTT round trip for our own circuit
    first, *later = [r.metrics for r in ctx.of("ct")]
    assert first["power_w"] == pytest.approx(230.0 * 10, rel=0.005)   # nominal before mains was read
    assert later[-1]["power_w"] == pytest.approx(240.0 * 10, rel=0.005)


def test_a_remote_voltage_is_subscribed_to():
    cfg = config(ct={"current_channels": [2], "voltage_from": "shelly/pro3em",
                     "voltage_metric": "voltage_l1_v"})
    ctx = recording(rounds=1)
    adc_loop.run(ctx, cfg)
    assert list(ctx.subscriptions) == ["shelly/pro3em/reading"]


def test_state_is_restored_and_saved_before_each_reading():
    cfg = config(mains={"voltage_channel": 0, "current_channels": [1], "sim": {"current_a": 10.0}})
    ctx = recording(rounds=3, state={"v": 1, "energy_import_wh": 1000.0, "energy_export_wh": 5.0})
    adc_loop.run(ctx, cfg)
    kinds = [kind for kind, _, _ in ctx.kinds("state", "reading")]
    assert kinds == ["state", "reading"] * 3, "each state goes out before the reading with the same totals"
    readings = [r.metrics for r in ctx.of("mains")]
    assert readings[0]["energy_import_wh"] > 1000.0 and readings[0]["energy_export_wh"] == 5.0
    saved = ctx.states["mains"]
    assert saved["energy_import_wh"] == pytest.approx(readings[-1]["energy_import_wh"], abs=1e-3)


def test_no_state_piles_up_while_the_broker_is_away_and_the_latest_goes_out_at_stop():
    cfg = config(mains={"voltage_channel": 0, "current_channels": [1], "sim": {"current_a": 10.0}})
    ctx = recording(rounds=3)
    ctx.is_connected = False
    adc_loop.run(ctx, cfg)
    assert len(ctx.of("mains")) == 3 and [k for k, _, _ in ctx.kinds("state")] == ["state"]
    assert ctx.states["mains"]["energy_import_wh"] == pytest.approx(
        ctx.of("mains")[-1].metrics["energy_import_wh"], abs=1e-3)


def test_an_unusable_state_is_counted_and_counting_starts_from_zero():
    cfg = config(mains={"voltage_channel": 0, "current_channels": [1]})
    ctx = recording(rounds=1, state={"energy": "lots"})
    adc_loop.run(ctx, cfg)
    assert ctx.count("bad_state") == 1
    assert ctx.of("mains")[0].metrics["energy_import_wh"] < 1.0


def test_spi_failures_take_the_device_offline_and_back(monkeypatch):
    cfg = config(mains={"voltage_channel": 0, "current_channels": [1]})
    emu = build_emulator(cfg, realtime=False)
    real_xfer2 = emu.xfer2
    failing = {"windows": 4}

    def flaky(data, *args):
        if failing["windows"] > 0:
            failing["windows"] -= 1
            raise OSError(5, "Input/output error")
        return real_xfer2(data, *args)

    emu.xfer2 = flaky
    emu.open(0, 0)
    monkeypatch.setattr(adc_loop, "open_device", lambda cfg: emu)
    ctx = recording(rounds=6)
    adc_loop.run(ctx, cfg)
    statuses = [online for _, _, online in ctx.kinds("status", device="mains")]
    assert statuses == [True, False, True, False]       # start, 3rd failure, recovered, stop
    assert ctx.count("read_errors") == 4
    assert len(ctx.of("mains")) == 2


def test_without_spidev_the_producer_says_so_and_exits(monkeypatch, caplog):
    monkeypatch.setitem(__import__("sys").modules, "spidev", None)   # import spidev -> ImportError
    cfg = msgspec.convert({"type": "adc", "spi": "spidev",
                           "circuits": {"mains": {"voltage_channel": 0, "current_channels": [1]}}}, Config)
    ctx = recording(rounds=1)
    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.ERROR):
        adc_loop.run(ctx, cfg)
    assert exit_.value.code == 1
    assert "spidev" in caplog.text and "wattbus[pi]" in caplog.text
    assert ctx.device_status == [("mains", False)]


def test_a_window_the_host_disturbed_too_much_is_sampled_again_and_never_published(monkeypatch):
    """The maths flags a window in which some part of the mains cycle was never sampled (``clean`` False; what
    makes one is tested in test_adc_power): the loop samples again, up to three windows, and publishes nothing
    rather than a guess when all three were disturbed. Here the maths' verdict is forced for the first four
    windows; everything else is the real loop on the emulator."""
    import dataclasses

    from producers.adc.circuit import CircuitRunner

    real = CircuitRunner.analyse
    disturbed = {"left": 4}

    def analyse(self, window):
        a = real(self, window)
        if disturbed["left"] > 0:
            disturbed["left"] -= 1
            return dataclasses.replace(a, clean=False)
        return a

    monkeypatch.setattr(CircuitRunner, "analyse", analyse)
    cfg = config(mains={"voltage_channel": 0, "current_channels": [1], "sim": {"current_a": 10.0}})
    ctx = recording(rounds=3)
    adc_loop.run(ctx, cfg)
    assert ctx.count("unusable_readings") == 1          # first reading: three disturbed windows, skipped
    assert ctx.count("resampled_windows") == 3           # 2 for the first reading, 1 for the second
    readings = [r.metrics for r in ctx.of("mains")]
    assert len(readings) == 2
    assert readings[0]["power_w"] == pytest.approx(240.0 * 10 * 0.95, rel=0.005)
