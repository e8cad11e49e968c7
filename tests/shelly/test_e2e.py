"""``wattbus run`` with a shelly producer, a real Mosquitto and the emulator: readings, retained state,
backfill after a restart exactly once, and SIGTERM while the device hangs."""

from __future__ import annotations

import time

import orjson
import pytest
from shelly_support import JUNE_MORNING

from bus import envelope
from bus.clock import EmulatedClock
from producers.shelly.emulator import EmulatedShelly
from tests.conftest import unique
from tests.support.processes import write_config


def readings_of(collector, device: str) -> list[tuple[envelope.Reading, bool]]:
    """(reading, came in a batch) for every reading message of ``device``; each must decode."""
    out = []
    for _, payload, _ in collector.on(f"shelly/{device}/reading"):
        decoded = envelope.decode(payload)  # raises if anything half-baked reached the broker
        batch = b'"readings"' in payload
        out += [(r, batch) for r in decoded]
    return out


def retained(collector, topic: str) -> bytes | None:
    got = collector.on(topic)
    return got[-1][1] if got else None


@pytest.mark.slow
def test_polls_publishes_and_backfills_a_restart_gap_exactly_once(broker, processes, collector_factory, tmp_path):
    dev = unique("mains")
    clock = EmulatedClock(JUNE_MORNING, speed=1.0)
    with EmulatedShelly(role="grid", clock=clock, password="pw") as emu:
        (tmp_path / "shelly.pass").write_text("pw\n")
        cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
            [producer.{dev}]
            type = "shelly"
            host = "{emu.url}"
            role = "grid"
            interval = 1
            password_file = "{tmp_path / 'shelly.pass'}"
            """)
        c = collector_factory(broker, f"shelly/{dev}/#")
        p = processes(cfg, dev)
        c.wait_for(lambda: len(readings_of(c, dev)) >= 3, what="three live readings")
        assert p.terminate() == 0
        c.wait_for(lambda: retained(c, f"shelly/{dev}/status") == b"offline", what="device offline")
        first_run = readings_of(c, dev)
        assert all(not batch for _, batch in first_run)
        r = first_run[0][0]
        assert r.metrics["power_w"] < 0 and r.metrics["energy_export_wh"] > 0  # a June morning exports
        c.wait_for(lambda: retained(c, f"shelly/{dev}/state") is not None, what="retained state")
        last_live = max(r.ts for r, _ in first_run) // 1000

        clock.advance(2 * 3600)  # two hours later, the producer starts again
        p = processes(cfg, dev)
        c.wait_for(lambda: any(b for _, b in readings_of(c, dev)), what="the backfill batch")
        c.wait_for(lambda: len(readings_of(c, dev)) > len(first_run) + 125, what="live readings after it")
        assert p.terminate() == 0
        second_run = readings_of(c, dev)

        back = sorted(r.ts // 1000 for r, batch in second_run if batch)
        first_new_live = min(r.ts for r, b in second_run[len(first_run):] if not b) // 1000
        recorded = [ts + 60 for ts, _, _ in emu.meter.records(0, None)]  # the minutes the device has
        minute_ends = [t for t in recorded if last_live < t < first_new_live]
        assert back == minute_ends, ("every recorded minute of the gap once, nothing outside it",
                                     last_live, first_new_live, back[:2], back[-2:], minute_ends[-2:])
        assert len(back) >= 118
        stamps = [r.ts for r, _ in second_run]
        assert len(stamps) == len(set(stamps)), "no timestamp published twice"
        state = orjson.loads(retained(c, f"shelly/{dev}/state"))
        assert state["pending"] == [] and state["device_id"] == emu.device_id

        # a third start right away: nothing to fill, so no batch
        before = len(second_run)
        p = processes(cfg, dev)
        c.wait_for(lambda: len(readings_of(c, dev)) >= before + 3, what="live readings")
        assert p.terminate() == 0
        assert not any(batch for _, batch in readings_of(c, dev)[before:])


@pytest.mark.slow
def test_sigterm_while_the_device_hangs_exits_cleanly(broker, processes, collector_factory, tmp_path):
    dev = unique("hang")
    with EmulatedShelly(role="solar", clock=EmulatedClock(JUNE_MORNING, speed=1.0), timeout_delay=60.0) as emu:
        cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
            [producer.{dev}]
            type = "shelly"
            host = "{emu.url}"
            role = "solar"
            interval = 1
            timeout = 5
            retries = 3
            """)
        c = collector_factory(broker, f"shelly/{dev}/#", f"wattbus/{dev}/status")
        p = processes(cfg, dev)
        c.wait_for(lambda: len(readings_of(c, dev)) >= 2, what="live readings")
        emu.faults.set_rate("timeout", 1.0)  # from now on every request stalls for a minute
        time.sleep(1.5)
        started = time.monotonic()
        assert p.terminate(timeout=15) == 0
        assert time.monotonic() - started < 10
        c.wait_for(lambda: retained(c, f"wattbus/{dev}/status") == b"offline", what="process offline")
    assert "stopped" in p.output()
    assert all(r.metrics["power_w"] > 0 for r, _ in readings_of(c, dev))  # solar production is positive
