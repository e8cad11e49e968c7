"""The producer loop (P1Service) against the emulator, with the shared recording stand-in for the bus
context: what it publishes, how it reports bad input, how it survives a lost connection."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import msgspec
import pytest
from p1_helpers import fixture_bytes

from producers.p1 import Config
from producers.p1.emulator import DISCONNECT, Emulator, bad_crc, generated_frames, noise, truncated
from producers.p1.service import P1Service
from tests.support.context import RecordingContext

T0 = datetime(2024, 11, 5, 9, 0, 0, tzinfo=timezone.utc)


def recording(name: str) -> RecordingContext:
    """The shared recording context (tests/support/context.py) as a p1 producer named ``name``."""
    return RecordingContext("p1", name)


def config(**kw) -> Config:
    return msgspec.convert({"type": "p1", **kw}, Config)


def start(ctx: RecordingContext, cfg: Config) -> threading.Thread:
    t = threading.Thread(target=P1Service(ctx, cfg).run, daemon=True)
    t.start()
    return t


def stop(ctx: RecordingContext, thread: threading.Thread) -> None:
    ctx.stopping.set()
    thread.join(10)
    assert not thread.is_alive(), "the producer must return once stopping is set"


def test_a_dsmr5_meter_becomes_one_reading_per_interval_plus_a_gas_device():
    frames = [f for _, f in zip(range(65), generated_frames("5", "Europe/Brussels", start=T0, step=1.0))]
    with Emulator(frames, period=0.005) as emu:
        emu.start_tcp()
        ctx = recording("house")
        t = start(ctx, config(port=emu.url, dsmr="5", interval=10))
        ctx.wait_for(emu.done.is_set, what="all telegrams sent")
        ctx.wait_for(lambda: len(ctx.of("house")) >= 7, what="7 readings")
        stop(ctx, t)
    main = ctx.of("house")
    t0 = int(T0.timestamp() * 1000)
    # Telegrams at T0 .. T0+64 s: readings at T0, +10 .. +60, and the rest flushed at stop (+64).
    assert [r.ts - t0 for r in main] == [0, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 64_000]
    assert all(r.period_s == 10 for r in main[1:-1])
    imports = [r.metrics["energy_import_wh"] for r in main]
    assert imports == sorted(imports)
    for m in (r.metrics for r in main):
        assert m["energy_import_wh"] == m["energy_import_t1_wh"] + m["energy_import_t2_wh"]
        assert m["tariff"] in (1, 2) and "power_w" in m and "voltage_l1_v" in m
    gas = ctx.of("house_gas")
    assert len(gas) == 1                       # one 5-minute capture in this minute: published once
    assert gas[0].ts == t0 and set(gas[0].metrics) == {"gas_m3"}
    assert ("house", True) in ctx.device_status and ("house_gas", True) in ctx.device_status
    assert ctx.device_status[-2:] == [("house", False), ("house_gas", False)]
    assert ctx.counters.get("telegrams") == 65 and ctx.counters.get("rejected") == 0


def test_corrupt_input_is_counted_dead_lettered_and_skipped():
    good = fixture_bytes("nl_dsmr50_iskra_mt382_v5.txt")
    later = good.replace(b"170102192002W", b"170102192012W")
    from producers.p1.decode import crc16
    body = later[:later.rindex(b"!") + 1]
    later = body + f"{crc16(body):04X}\r\n".encode()
    frames = [good, noise(33), bad_crc(later), truncated(later), later]
    with Emulator(frames, period=0.01) as emu:
        emu.start_tcp()
        ctx = recording("nl")
        t = start(ctx, config(port=emu.url, interval=0))
        ctx.wait_for(lambda: len(ctx.of("nl")) >= 2, what="2 readings")
        stop(ctx, t)
    assert [r.ts for r in ctx.of("nl")] == [1483381202000, 1483381212000]
    c = ctx.counters
    assert (c.get("rejected_noise"), c.get("rejected_bad_crc"), c.get("rejected_truncated")) == (1, 1, 1)
    assert c.get("rejected") == 3 == c.get("dead_letters")
    reasons = [reason.split(":")[0] for _, reason in ctx.dead]
    assert reasons == ["noise", "bad_crc", "truncated"]
    assert ctx.dead[1][0] == bad_crc(later)


def test_a_dropped_connection_goes_offline_reconnects_and_goes_on():
    frames = [f for _, f in zip(range(10), generated_frames("5B", start=T0, step=1.0))]
    frames = frames[:5] + [DISCONNECT] + frames[5:]
    with Emulator(frames, period=0.01, down_s=0.2) as emu:
        emu.start_tcp()
        ctx = recording("be")
        t = start(ctx, config(port=emu.url, dsmr="5B", interval=0))
        ctx.wait_for(lambda: len(ctx.of("be")) >= 10, what="all 10 telegrams")
        stop(ctx, t)
    main = [s for s in ctx.device_status if s[0] == "be"]
    assert main == [("be", True), ("be", False), ("be", True), ("be", False)]
    assert ctx.counters.get("reconnects") == 1
    assert len({r.ts for r in ctx.of("be")}) == 10   # nothing lost, nothing twice
    assert {r.metrics["water_m3"] for r in ctx.of("be_water")}    # Belgian water meter on channel 2


def test_a_meter_that_is_not_there_yet_is_retried_with_backoff_until_it_appears():
    with socket.socket() as s:      # a free port with nobody listening (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = recording("late")
    t = start(ctx, config(port=f"tcp://127.0.0.1:{port}", dsmr="5", interval=0))
    ctx.wait_for(lambda: ctx.counters.get("connect_failures") >= 1, what="a failed attempt")
    assert ctx.device_status == [("late", False)]
    frames = [f for _, f in zip(range(3), generated_frames("5", start=T0, step=1.0))]
    with Emulator(frames, period=0.01) as emu:
        emu.start_tcp(port=port)
        ctx.wait_for(lambda: len(ctx.of("late")) >= 3, what="readings once the meter is there")
        stop(ctx, t)
    assert ctx.device_status[:2] == [("late", False), ("late", True)]


def test_reconnects_through_the_serial_symlink_after_an_unplug(tmp_path):
    link = str(tmp_path / "ttyP1")
    gen = generated_frames("5", start=T0, step=1.0)
    unplug = threading.Event()

    def frames():
        while not unplug.is_set():      # until the producer is reading
            yield next(gen)
        yield DISCONNECT
        for _ in range(150):
            yield next(gen)

    with Emulator(frames(), period=0.02, down_s=0.3) as emu:
        emu.start_pty(link=link)
        ctx = recording("usb")
        t = start(ctx, config(port=link, dsmr="5", interval=0))
        ctx.wait_for(lambda: ctx.of("usb"), what="a first reading")
        unplug.set()
        ctx.wait_for(lambda: ctx.counters.get("reconnects") == 1, what="the unplug")
        last_before = max(r.ts for r in ctx.of("usb"))
        ctx.wait_for(lambda: max(r.ts for r in ctx.of("usb")) > last_before + 5000, what="telegrams after the unplug")
        stop(ctx, t)
    assert [s for s in ctx.device_status if s[0] == "usb"][:3] == [("usb", True), ("usb", False), ("usb", True)]


def test_host_clock_for_meters_without_one_and_when_asked():
    raw = fixture_bytes("de_easymeter_q3d_esy5q3da1004.txt")
    with Emulator([raw] * 3, period=0.01) as emu:
        emu.start_tcp()
        ctx = recording("q3d")
        before = int(time.time() * 1000)
        t = start(ctx, config(port=emu.url, dsmr="Q3D", interval=0))
        ctx.wait_for(lambda: len(ctx.of("q3d")) >= 3, what="3 readings")
        stop(ctx, t)
    assert all(before <= r.ts <= int(time.time() * 1000) for r in ctx.of("q3d"))
    assert ctx.counters.get("ignored_lines") >= 2 and ctx.counters.get("rejected") == 0

    with Emulator([fixture_bytes("nl_dsmr50_iskra_mt382_v5.txt")], period=0.01) as emu:
        emu.start_tcp()
        ctx = recording("nl")
        before = int(time.time() * 1000)
        t = start(ctx, config(port=emu.url, dsmr="5", interval=0, meter_clock=False))
        ctx.wait_for(lambda: ctx.of("nl") and ctx.of("nl_gas"), what="a reading and a gas reading")
        stop(ctx, t)
    assert before <= ctx.of("nl")[0].ts <= int(time.time() * 1000)   # not the meter's 2017
    assert ctx.of("nl_gas")[0].ts == ctx.of("nl")[0].ts


@pytest.mark.parametrize("bad, key", [
    ({"dsmr": "6"}, "dsmr"), ({"power": "max"}, "power"), ({"interval": -1}, "interval"),
    ({"port": "tcp://nohost"}, "port"), ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"role": "meter"}, "role"), ({"baud": 9600}, "baud"), ({"device": "Bad Name"}, "device"),
])
def test_config_errors_name_the_key(bad, key):
    with pytest.raises(msgspec.ValidationError, match=key):
        config(**bad)


def test_the_sample_config_is_valid():
    import tomllib
    from pathlib import Path

    import producers.p1

    raw = tomllib.loads((Path(producers.p1.__file__).with_name("sample.toml")).read_text())
    for section in raw["producer"].values():
        assert isinstance(msgspec.convert(section, Config), Config)


def test_the_emulator_command_serves_generated_telegrams_over_tcp():
    import subprocess
    import sys

    from producers.p1.obis import VERSIONS
    from producers.p1.reader import Decoded, P1Reader

    proc = subprocess.Popen([sys.executable, "-m", "wattbus", "emulate", "p1", "--tcp", "127.0.0.1:0",
                             "--dsmr", "5B", "--period", "0.05", "--step", "1", "--start", "2025-03-30T00:59:58Z"],
                            stdout=subprocess.PIPE, text=True)
    try:
        kind, where = proc.stdout.readline().split()
        assert kind == "tcp"
        reader = P1Reader(f"tcp://{where}", VERSIONS["5B"], ZoneInfo("Europe/Brussels"), poll=0.1)
        reader.open()
        got: list = []
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            got += [r for r in reader.poll_once() if isinstance(r, Decoded)]
        reader.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    stamps = [r.sample.ts for r in got]
    assert len(stamps) >= 4 and all(b - a == 1000 for a, b in zip(stamps, stamps[1:]))  # 1 s apart, across 02:00
