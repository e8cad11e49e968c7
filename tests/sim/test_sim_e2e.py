"""The sim producer as a real process on a real broker: daily batches, live readings, remote config,
restart."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from producers.sim.config import MeterConfig
from producers.sim.meter import SimMeter
from producers.sim.profile import Site
from tests.conftest import unique, write_config

TZ = ZoneInfo("Europe/Brussels")
SITE = Site(TZ, 50.85, 4.35)  # the site defaults the config below leaves alone


def config(tmp_path, broker, name: str, serial: str, **top) -> object:
    keys = {"interval": 300, "heartbeat": 0.5, "seed": 7} | top
    lines = "\n".join(f"{k} = {orjson.dumps(v).decode()}" for k, v in keys.items())
    return write_config(tmp_path / "wattbus.toml", broker, f"""
[producer.{name}]
type = "sim"
{lines}

[[producer.{name}.meters]]
serial = "{serial}"
solar_kwp = 4.0
""")


def payloads(collector, topic: str) -> list[dict]:
    return [orjson.loads(p) for _, p, _ in collector.on(topic) if p]


def items(messages: list[dict]) -> list[dict]:
    """Readings out of single and batch envelopes, in order."""
    out = []
    for m in messages:
        out += m["readings"] if "readings" in m else [m]
    return out


def expected(serial: str, start: datetime, count: int, state: dict | None = None) -> list[dict]:
    """What the meter must publish, computed in-process from the same config."""
    m = SimMeter(MeterConfig(serial=serial, solar_kwp=4.0), SITE, seed=7, interval_s=300)
    m.restore(state)
    m.begin(start.timestamp())
    t = (m.next_due_s() if state else start.timestamp()) + 300 * (count - 1)
    return [r.item() for r in m.generate(t)]


@pytest.mark.slow
def test_daily_upload_sends_each_day_as_one_batch_at_the_day_change(tmp_path, broker, processes,
                                                                    collector_factory):
    name, serial = unique("sim"), unique("d")
    col = collector_factory(broker, f"sim/{serial}/#")
    cfg = config(tmp_path, broker, name, serial, upload="daily", speed=28800, start="2024-06-01")
    proc = processes(cfg, name)
    col.wait_for(lambda: len(col.on(f"sim/{serial}/reading")) >= 2, 30, "two daily batches")
    proc.terminate()
    first, second = payloads(col, f"sim/{serial}/reading")[:2]
    for batch, day in ((first, date(2024, 6, 1)), (second, date(2024, 6, 2))):
        assert "readings" in batch and len(batch["readings"]) == 288
        stamps = [r["ts"] for r in batch["readings"]]
        assert len(set(stamps)) == 288 and stamps == sorted(stamps)
        assert {datetime.fromtimestamp(ts / 1000, TZ).date() for ts in stamps} == {day}
    # the same day computed again, in this test process, gives identical readings
    got = [{"ts": r["ts"], "metrics": r["metrics"]} for r in first["readings"] + second["readings"]]
    assert got == expected(serial, datetime(2024, 6, 1, tzinfo=TZ), 576)
    beats = payloads(col, f"sim/{serial}/heartbeat")
    assert beats and beats[-1]["upload"] == "daily" and beats[-1]["uptime_s"] > 0
    assert [p for _, p, _ in col.on(f"sim/{serial}/status")][0] == b"online"


@pytest.mark.slow
def test_live_readings_heartbeat_and_remote_config(tmp_path, broker, processes, collector_factory):
    name, serial = unique("sim"), unique("l")
    col = collector_factory(broker, f"sim/{serial}/#", f"wattbus/dlq/{name}")
    cfg = config(tmp_path, broker, name, serial, speed=1200, start="2024-01-15T06:00")
    processes(cfg, name)
    col.wait_for(lambda: len(col.on(f"sim/{serial}/reading")) >= 3, 20, "live readings")
    first = payloads(col, f"sim/{serial}/reading")[0]
    assert "readings" not in first and first["source"] == "sim" and first["device"] == serial
    assert set(first["metrics"]) == {"power_w", "energy_import_wh", "energy_export_wh"}
    col.wait_for(lambda: payloads(col, f"sim/{serial}/heartbeat"), 10, "a heartbeat")
    beat = payloads(col, f"sim/{serial}/heartbeat")[-1]
    assert beat["serial"] == serial and beat["uptime_s"] >= 0 and beat["last_reading_ts"] >= first["ts"]

    def answers() -> list[dict]:
        return payloads(col, f"sim/{serial}/config")

    col.wait_for(lambda: answers(), 10, "the retained config")
    assert answers()[0]["ok"] and answers()[0]["config"]["daily_kwh"] == 10.0

    col.publish(f"sim/{serial}/config/set", orjson.dumps({"daily_kwh": 100, "base_w": 3000}))
    col.wait_for(lambda: len(answers()) >= 2, 10, "the answer to a good change")
    assert answers()[1]["ok"] and answers()[1]["config"]["base_w"] == 3000.0
    seen = len(col.on(f"sim/{serial}/reading"))
    col.wait_for(lambda: len(col.on(f"sim/{serial}/reading")) >= seen + 5, 10, "readings after the change")
    assert all(r["metrics"]["power_w"] > 1400 for r in items(payloads(col, f"sim/{serial}/reading"))[-3:])

    bad = [(b'{"dayly_kwh": 1}', "dayly_kwh: unknown key; expected one of: daily_kwh"),
           (b'{"daily_kwh": "lots"}', "daily_kwh: expected a number > 0"),
           (b"not json", "payload: expected a JSON object")]
    for n, (payload, message) in enumerate(bad, start=3):
        col.publish(f"sim/{serial}/config/set", payload)
        col.wait_for(lambda n=n: len(answers()) >= n, 10, f"the answer to {payload!r}")
        answer = answers()[n - 1]
        assert not answer["ok"] and message in answer["error"]
        assert answer["config"]["base_w"] == 3000.0  # still running the last good config
    dlq = payloads(col, f"wattbus/dlq/{name}")
    assert len(dlq) == 3 and "dayly_kwh" in dlq[0]["reason"]
    readings = items(payloads(col, f"sim/{serial}/reading"))
    for key in ("energy_import_wh", "energy_export_wh"):
        values = [r["metrics"][key] for r in readings]
        assert values == sorted(values)


@pytest.mark.slow
def test_counters_and_remote_config_survive_a_restart(tmp_path, broker, processes, collector_factory):
    name, serial = unique("sim"), unique("r")
    col = collector_factory(broker, f"sim/{serial}/#")
    cfg = config(tmp_path, broker, name, serial, speed=3600, start="2024-06-01T10:00")
    proc = processes(cfg, name)
    col.wait_for(lambda: len(col.on(f"sim/{serial}/reading")) >= 5, 20, "readings")
    col.publish(f"sim/{serial}/config/set", b'{"daily_kwh": 15}')
    col.wait_for(lambda: len(col.on(f"sim/{serial}/config")) >= 2, 10, "the config answer")
    count = len(col.on(f"sim/{serial}/reading"))
    col.wait_for(lambda: len(col.on(f"sim/{serial}/reading")) >= count + 5, 10, "more readings")
    assert proc.terminate() == 0
    before = items(payloads(col, f"sim/{serial}/reading"))
    state = payloads(col, f"sim/{serial}/state")[-1]
    assert state["ts"] == before[-1]["ts"] and state["overrides"] == {"daily_kwh": 15.0}
    assert state["energy_export_wh"] > 0  # it is sunny at 10:00 in June

    n_before = len(col.on(f"sim/{serial}/reading"))
    processes(cfg, name)
    col.wait_for(lambda: len(col.on(f"sim/{serial}/reading")) >= n_before + 5, 20, "readings after restart")
    after = items(payloads(col, f"sim/{serial}/reading"))[len(before):]
    assert after[0]["ts"] == before[-1]["ts"] + 300_000  # no gap, no repeat
    for key in ("energy_import_wh", "energy_export_wh"):
        assert after[0]["metrics"][key] >= before[-1]["metrics"][key]
    assert [{"ts": r["ts"], "metrics": r["metrics"]} for r in after[:5]] == \
        expected(serial, datetime(2024, 6, 1, 10, tzinfo=TZ), 5, state)
    retained = payloads(col, f"sim/{serial}/config")[-1]
    assert retained["config"]["daily_kwh"] == 15.0
