"""The run loop against a recording stand-in for the producer context (no broker): device status on SPI
failures, retained state before readings, a voltage shared between circuits of one process."""

import logging
import threading
from collections import Counter

import msgspec
import pytest

from producers.adc import Config
from producers.adc import loop as adc_loop
from producers.adc.loop import build_emulator


class RecordingContext:
    source = "adc"
    name = "adc"

    def __init__(self, rounds: int, state: dict | None = None):
        self.rounds, self.state = rounds, state
        self.stopping = threading.Event()
        self.log = logging.getLogger("test.adc")
        self.bad_input_log = self
        self.counters = self
        self.counts: Counter = Counter()
        self.events: list[tuple] = []
        self.subscriptions: list[str] = []

    # counters / rate-limited log
    def inc(self, name, n=1):
        self.counts[name] += n

    def warning(self, key, msg, *args):
        self.events.append(("warning", key))

    # producer context
    def wait(self, seconds):
        self.rounds -= 1
        if self.rounds <= 0:
            self.stopping.set()
        return self.stopping.is_set()

    def load_state(self, device, timeout=3.0):
        return self.state

    def save_state(self, device, state):
        self.events.append(("state", device, state))

    def publish_reading(self, device, metrics, *, ts=None, period_s=0, quality="ok"):
        self.events.append(("reading", device, metrics))

    def set_device_status(self, device, online):
        self.events.append(("status", device, online))

    def subscribe(self, topic_filter, callback):
        self.subscriptions.append(topic_filter)

    def dead_letter(self, payload, reason, topic=""):
        self.events.append(("dlq", reason))

    def of(self, kind, device=None):
        return [e for e in self.events if e[0] == kind and (device is None or e[1] == device)]


def config(**circuits) -> Config:
    return msgspec.convert({"type": "adc", "spi": "sim", "interval": 1.0, "circuits": circuits,
                            "sim": {"voltage_v": 240.0, "noise_v": 0.001}}, Config)


def test_current_only_circuit_uses_the_voltage_of_a_circuit_in_the_same_process():
    cfg = config(ct={"current_channels": [2], "voltage_from": "adc/mains", "sim": {"current_a": 10.0}},
                 mains={"voltage_channel": 0, "current_channels": [1]})  # ct is read first
    ctx = RecordingContext(rounds=3)
    adc_loop.run(ctx, cfg)
    assert ctx.subscriptions == []                       # no MQTT round trip for our own circuit
    first, *later = [m for _, _, m in ctx.of("reading", "ct")]
    assert first["power_w"] == pytest.approx(230.0 * 10, rel=0.005)   # nominal before mains was read
    assert later[-1]["power_w"] == pytest.approx(240.0 * 10, rel=0.005)


def test_a_remote_voltage_is_subscribed_to():
    cfg = config(ct={"current_channels": [2], "voltage_from": "shelly/pro3em",
                     "voltage_metric": "voltage_l1_v"})
    ctx = RecordingContext(rounds=1)
    adc_loop.run(ctx, cfg)
    assert ctx.subscriptions == ["shelly/pro3em/reading"]


def test_state_is_restored_and_saved_before_each_reading():
    cfg = config(mains={"voltage_channel": 0, "current_channels": [1], "sim": {"current_a": 10.0}})
    ctx = RecordingContext(rounds=3, state={"v": 1, "energy_import_wh": 1000.0, "energy_export_wh": 5.0})
    adc_loop.run(ctx, cfg)
    kinds = [e[0] for e in ctx.events if e[0] in ("state", "reading")]
    assert kinds == ["state", "reading"] * 3
    readings = [m for _, _, m in ctx.of("reading")]
    assert readings[0]["energy_import_wh"] > 1000.0 and readings[0]["energy_export_wh"] == 5.0
    saved = ctx.of("state")[-1][2]
    assert saved["energy_import_wh"] == pytest.approx(readings[-1]["energy_import_wh"], abs=1e-3)


def test_an_unusable_state_is_counted_and_counting_starts_from_zero():
    cfg = config(mains={"voltage_channel": 0, "current_channels": [1]})
    ctx = RecordingContext(rounds=1, state={"energy": "lots"})
    adc_loop.run(ctx, cfg)
    assert ctx.counts["bad_state"] == 1
    assert ctx.of("reading")[0][2]["energy_import_wh"] < 1.0


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
    ctx = RecordingContext(rounds=6)
    adc_loop.run(ctx, cfg)
    statuses = [online for _, _, online in ctx.of("status", "mains")]
    assert statuses == [True, False, True, False]       # start, 3rd failure, recovered, stop
    assert ctx.counts["read_errors"] == 4
    assert len(ctx.of("reading")) == 2


def test_without_spidev_the_producer_says_so_and_exits(monkeypatch, caplog):
    monkeypatch.setitem(__import__("sys").modules, "spidev", None)   # import spidev -> ImportError
    cfg = msgspec.convert({"type": "adc", "spi": "spidev",
                           "circuits": {"mains": {"voltage_channel": 0, "current_channels": [1]}}}, Config)
    ctx = RecordingContext(rounds=1)
    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.ERROR):
        adc_loop.run(ctx, cfg)
    assert exit_.value.code == 1
    assert "spidev" in caplog.text and "wattbus[pi]" in caplog.text
    assert ctx.of("status", "mains") == [("status", "mains", False)]
