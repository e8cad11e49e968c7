"""``wattbus run`` with an aggregate consumer on a real Mosquitto: a real Shelly producer's late backfill
filling a partial hour, hostile input, live prices on MQTT, config errors, a clean stop, exports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest

from bus import rollup
from bus.clock import EmulatedClock
from bus.envelope import encode_batch, encode_reading
from bus.sinks.sqlite import SqliteSink
from producers.shelly.emulator import EmulatedShelly
from tests.aggregate.conftest import local_ms
from tests.conftest import unique
from tests.support.processes import run_cli, write_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shelly"))
from shelly_support import JUNE_MORNING  # noqa: E402

H = 3_600_000


def buckets_on(collector, topic: str) -> list[rollup.Bucket]:
    return [rollup.decode(p) for _, p, _ in collector.on(topic)]


def agg_config(tmp_path, broker, body: str = "", **keys) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    return write_config(
        tmp_path / "wattbus.toml",
        broker,
        f"""
        [consumer.agg]
        type = "aggregate"
        sink = "sqlite:///{tmp_path / "w.db"}"
        batch_wait = 0.02
        """
        + "".join(f"        {line}\n" for line in extra.splitlines())
        + body,
    )


@pytest.mark.slow
def test_a_late_shelly_backfill_fills_a_partial_hour(broker, processes, collector_factory, tmp_path):
    dev = unique("mains")
    clock = EmulatedClock(JUNE_MORNING, 1.0)  # 10:00 in Brussels
    with EmulatedShelly(role="grid", clock=clock) as emu:
        cfg = agg_config(
            tmp_path,
            broker,
            f"""
            [producer.{dev}]
            type = "shelly"
            host = "{emu.url}"
            role = "grid"
            interval = 1
            retries = 1
            """,
        )
        c = collector_factory(broker, f"agg/shelly/{dev}/1h")
        agg = processes(cfg, "agg")
        agg.wait_output("subscribed to")
        p = processes(cfg, dev)
        ten = JUNE_MORNING * 1000
        c.wait_for(
            lambda: any(b.readings >= 3 for b in buckets_on(c, f"agg/shelly/{dev}/1h") if b.start == ten),
            what="the 10:00 bucket counting live readings",
        )
        assert p.terminate() == 0
        clock.advance(2 * 3600)  # the producer comes back two hours later
        # the first attempt to read the device's records fails: the backfill comes a poll later, after the
        # aggregate has seen the gap
        emu.faults.arm("http500", 1, method="EMData.GetRecords")
        p = processes(cfg, dev)
        eleven = ten + H
        c.wait_for(
            lambda: any(
                b.status == "complete" for b in buckets_on(c, f"agg/shelly/{dev}/1h") if b.start == eleven
            ),
            timeout=60,
            what="the 11:00 hour complete",
        )
        assert p.terminate() == 0
        versions = [b for b in buckets_on(c, f"agg/shelly/{dev}/1h") if b.start == eleven]
        statuses = [b.status for b in versions]
        assert "partial" in statuses and statuses.index("partial") < statuses.index("complete")
        partial = versions[statuses.index("partial")]
        final = versions[-1]
        assert partial.coverage == 0.0 and final.coverage == 1.0 and final.readings == 60
        # the hour's energy is what the device counted between 11:00 and 12:00, before and after the backfill
        imp = lambda t: sum(emu.meter.truth[t][0])  # noqa: E731
        exp = lambda t: sum(emu.meter.truth[t][1])  # noqa: E731
        t11, t12 = JUNE_MORNING + 3600, JUNE_MORNING + 7200
        assert final.energy_import_wh == pytest.approx(imp(t12) - imp(t11), abs=0.01)
        assert final.energy_export_wh == pytest.approx(exp(t12) - exp(t11), abs=0.01)
        assert final.rev > partial.rev
        stored = SqliteSink(f"sqlite:///{tmp_path / 'w.db'}").read_buckets(
            "shelly", dev, "1h", eleven, eleven + 1
        )
        assert stored[0].status == "complete" and stored[0].energy_export_wh == final.energy_export_wh


@pytest.mark.slow
def test_hostile_readings_go_to_the_dlq_and_the_consumer_goes_on(
    broker, processes, collector_factory, tmp_path
):
    dev = unique("plug")
    cfg = agg_config(tmp_path, broker)
    dlq = collector_factory(broker, "wattbus/dlq/agg", "agg/#")
    agg = processes(cfg, "agg")
    agg.wait_output("subscribed to")
    t = local_ms("2024-06-03 10:00")
    future = 32_000_000_000_000  # year 2984: valid in the envelope, but far ahead of any clock
    dlq.publish(f"shelly/{dev}/reading", encode_reading("shelly", dev, future, {"power_w": 100.0}))
    # values no meter gives: huge, negative counters, a 31-day period
    dlq.publish(
        f"shelly/{dev}/reading",
        encode_batch(
            "shelly",
            dev,
            [
                {"ts": t + 60_000, "metrics": {"power_w": 1e300, "energy_import_wh": -5.0}},
                {"ts": t + 120_000, "metrics": {"energy_import_wh": 1e15}, "period_s": 31 * 86400.0},
                {"ts": t + 180_000, "metrics": {"energy_import_wh": 10.0, "power_w": 100.0}},
            ],
        ),
    )
    dlq.publish(
        f"shelly/{dev}/reading", b'{"v":1,"source":"shelly","device":"' + dev.encode() + b'","ts":"x"}'
    )
    dlq.publish(
        f"shelly/{dev}/reading",
        encode_batch(
            "shelly",
            dev,
            [
                {"ts": t + 240_000 + k * 60_000, "metrics": {"energy_import_wh": 10.0 + k, "power_w": 60.0}}
                for k in range(20)
            ],
        ),
    )
    dlq.wait_for(lambda: len(dlq.on("wattbus/dlq/agg")) >= 2, what="two dead letters")
    reasons = [orjson.loads(p)["reason"] for _, p, _ in dlq.on("wattbus/dlq/agg")]
    assert any("ahead of this host's clock" in r for r in reasons) and any("schema" in r for r in reasons)
    dlq.wait_for(
        lambda: any(
            b.energy_import_wh == pytest.approx(19.0) for b in buckets_on(dlq, f"agg/shelly/{dev}/1h")
        ),
        what="the good readings aggregated after the bad ones",
    )
    assert agg.alive()
    assert agg.terminate() == 0


@pytest.mark.slow
def test_dynamic_prices_published_on_mqtt_price_the_buckets(broker, processes, collector_factory, tmp_path):
    dev = unique("grid")
    topic = f"prices/{unique('belpex')}"
    site_name = unique("home")
    cfg = agg_config(
        tmp_path,
        broker,
        f"""
        [tariff]
        currency = "EUR"
        [tariff.import]
        dynamic_topic = "{topic}"
        dynamic_unit = "MWh"
        dynamic_markup = 0.01
        """,
        grid=[f"p1/{dev}"],
        site=site_name,
    )
    c = collector_factory(broker, f"agg/p1/{dev}/1h", f"agg/site/{site_name}/1h")
    t = local_ms("2024-06-03 10:00")
    # a day-ahead list, retained as suppliers' bridges publish it: 10:00 at 100 EUR/MWh, 11:00 at 200
    c.publish(
        topic, orjson.dumps([{"start": t, "price": 100.0}, {"start": t + H, "price": 200.0}]), retain=True
    )
    agg = processes(cfg, "agg")
    agg.wait_output("subscribed to")
    c.publish(
        f"p1/{dev}/reading",
        encode_batch(
            "p1",
            dev,
            [{"ts": t + k * 900_000, "metrics": {"energy_import_wh": 1000.0 + 250.0 * k}} for k in range(9)],
        ),
    )
    c.wait_for(
        lambda: any(
            b.start == t + H and b.cost is not None and b.status != "open"
            for b in buckets_on(c, f"agg/p1/{dev}/1h")
        ),
        what="the 11:00 hour priced",
    )
    hours = {b.start: b for b in buckets_on(c, f"agg/p1/{dev}/1h")}
    assert hours[t].cost == pytest.approx(1.0 * (0.100 + 0.01))  # 1 kWh at 100 EUR/MWh + 1 cent
    assert hours[t + H].cost == pytest.approx(1.0 * (0.200 + 0.01))
    assert hours[t].currency == "EUR"
    c.wait_for(
        lambda: any(b.start == t and b.cost for b in buckets_on(c, f"agg/site/{site_name}/1h")),
        what="the site's 10:00 hour priced",
    )
    site = {b.start: b for b in buckets_on(c, f"agg/site/{site_name}/1h")}
    assert site[t].cost == pytest.approx(0.11) and site[t].grid_import_wh == 1000.0
    assert agg.terminate() == 0
    c.publish(topic, b"", retain=True)


def test_a_bad_aggregate_section_is_a_config_error_naming_file_line_and_key(tmp_path):
    cfg = tmp_path / "wattbus.toml"
    cfg.write_text('[consumer.agg]\ntype = "aggregate"\ngrid = ["shelly/mains"]\nsolar = ["mains"]\n')
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{cfg}:4: consumer.agg.solar:" in r.stderr and '"source/device"' in r.stderr
    cfg.write_text('[consumer.agg]\ntype = "aggregate"\ngrace = "a week"\n')
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "consumer.agg.grace" in r.stderr and "duration" in r.stderr
    cfg.write_text('[consumer.agg]\ntype = "aggregate"\nsolar = ["shelly/solar"]\n')
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "consumer.agg.grid" in r.stderr
    cfg.write_text(
        '[consumer.agg]\ntype = "aggregate"\ngrid = ["p1/meter"]\nsolar = ["shelly/solar"]\n'
        "[tariff.import]\nprice = 0.3\n"
    )
    assert run_cli("-c", str(cfg), "check-config").returncode == 0


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_export_reads_the_buckets_back(
    broker, processes, collector_factory, tmp_path
):
    dev = unique("house")
    cfg = agg_config(tmp_path, broker)
    c = collector_factory(broker, "wattbus/agg/status", f"agg/hhpc/{dev}/1d")
    agg = processes(cfg, "agg")
    agg.wait_output("subscribed to")
    t = local_ms("2024-06-03 00:00")
    c.publish(
        f"hhpc/{dev}/reading",
        encode_batch(
            "hhpc",
            dev,
            [
                {"ts": t + k * 60_000, "period_s": 60.0, "metrics": {"energy_wh": 2.0, "power_w": 120.0}}
                for k in range(1, 2 * 1440 + 1)
            ],
        ),
    )
    c.wait_for(
        lambda: any(
            b.readings == 1440 and b.status == "complete" for b in buckets_on(c, f"agg/hhpc/{dev}/1d")
        ),
        what="a complete day",
    )
    assert agg.terminate() == 0
    c.wait_for(
        lambda: c.on("wattbus/agg/status") and c.on("wattbus/agg/status")[-1][1] == b"offline",
        what="offline status",
    )
    r = run_cli(
        "-c",
        str(cfg),
        "export",
        "--source",
        "hhpc",
        "--device",
        dev,
        "--period",
        "1d",
        "--from",
        "2024-06-03",
        "--to",
        "2024-06-05",
    )
    assert r.returncode == 0, r.stderr
    days = [rollup.decode(line.encode()) for line in r.stdout.splitlines()]
    assert [d.label for d in days] == ["2024-06-03", "2024-06-04"]
    assert days[0].energy_import_wh == pytest.approx(2880.0) and days[0].readings == 1440
    r = run_cli(
        "-c",
        str(cfg),
        "export",
        "--source",
        "hhpc",
        "--device",
        dev,
        "--period",
        "1h",
        "--from",
        "2024-06-03T10:00",
        "--to",
        "2024-06-03T12:00",
        "--format",
        "csv",
    )
    lines = r.stdout.splitlines()
    assert (
        r.returncode == 0
        and len(lines) == 3
        and lines[0].startswith("v,source,device,period,start,end,label")
    )
    assert "2024-06-03T10:00+02:00" in lines[1] and ",120.0," in lines[1]


def test_the_sample_and_the_demo_fragment_are_valid_configs_and_the_readme_names_every_key():
    import msgspec

    from bus.config import load_config, parse_config
    from consumers.aggregate import Config
    from wattbus.plugins import resolve

    folder = Path(__file__).resolve().parents[2] / "consumers" / "aggregate"
    sample = load_config(folder / "sample.toml", resolve)
    assert sample.consumers["aggregate"].grid == ["shelly/mains"] and sample.tariff.capacity_min_kw == 2.5
    demo = (folder / "demo.toml").read_text().replace("${sink}", "sqlite:///demo/wattbus.db")
    app = parse_config(demo, folder / "demo.toml", resolve)
    assert app.consumers["aggregate"].sink == "sqlite:///demo/wattbus.db" and app.tariff is not None
    readme = (folder / "README.md").read_text()
    for key in msgspec.structs.fields(Config):
        if key.name != "type":
            assert f"`{key.name}`" in readme, key.name
