"""`wattbus acl`: what each kind of process is given, read from the config (the broker tests are in
test_identity.py; these pin the per-plugin rules that the demo does not exercise)."""

from __future__ import annotations

import re
from pathlib import Path

from bus.config import parse_config
from tests.support.processes import run_cli
from wattbus.acl import process_table, render_acl
from wattbus.plugins import resolve


def acl_for(text: str, tmp_path: Path) -> str:
    return render_acl(parse_config(text, tmp_path / "w.toml", resolve))


def rules(acl: str, user: str) -> set[str]:
    section = re.search(rf"(?ms)^user {user}\n(.*?)(?:\n\n|\Z)", acl)
    assert section, f"no section for user {user}"
    return set(section.group(1).strip().splitlines())


def test_a_producer_gets_its_devices_its_process_topics_and_what_it_listens_to(tmp_path):
    acl = acl_for("""
[producer.board]
type = "adc"
spi = "sim"
[producer.board.circuits.mains]
voltage_channel = 0
current_channels = [1]
[producer.board.circuits.pv]
device = "solar"
voltage_from = "p1/meter"
current_channels = [2]
""", tmp_path)
    assert rules(acl, "board") == {
        "topic write adc/mains/reading", "topic write adc/mains/status", "topic readwrite adc/mains/state",
        "topic write adc/solar/reading", "topic write adc/solar/status", "topic readwrite adc/solar/state",
        "topic read p1/meter/reading",  # the voltage of a current-only circuit comes from another device
        "topic write wattbus/board/status", "topic readwrite wattbus/board/health",
        "topic write wattbus/dlq/board"}  # its own health: written, and read back at its next start


def test_p1_gets_its_gas_and_water_devices_and_shelly_its_own_mqtt_topics_outside_the_prefix(tmp_path):
    acl = acl_for("""
[mqtt]
topic_prefix = "home1/"
[producer.meter]
type = "p1"
port = "tcp://127.0.0.1:2323"
[producer.grid]
type = "shelly"
mode = "mqtt"
mqtt_prefix = "shellypro3em-abc"
[producer.nameless]
type = "shelly"
mode = "mqtt"
host = "192.168.1.20"
""", tmp_path)
    meter = rules(acl, "meter")
    for device in ("meter", "meter_gas", "meter_water"):
        assert f"topic write home1/p1/{device}/reading" in meter
    grid = rules(acl, "grid")
    assert {"topic read shellypro3em-abc/status/+", "topic read shellypro3em-abc/events/rpc",
            "topic write home1/shelly/grid/reading"} <= grid
    assert not any("home1/shellypro3em" in r for r in grid)  # the device's topics are not the site's
    assert "# NOTE nameless: shelly device nameless: set `mqtt_prefix`" in acl


def test_consumers_read_what_they_consume_and_shared_subscriptions_are_checked_on_their_filter(tmp_path):
    acl = acl_for("""
[consumer.store_sql]
type = "store"
sink = "sqlite:///w.db"
group = "sql"
topics = ["$share/x/hhpc/+/reading", "sim/+/reading"]
[consumer.exporter]
type = "exporter"
""", tmp_path)
    assert rules(acl, "store_sql") >= {"topic read hhpc/+/reading", "topic read sim/+/reading"}
    assert not any(r.startswith("topic read +/") for r in rules(acl, "store_sql"))
    assert "topic read wattbus/+/health" in rules(acl, "exporter")
    assert not any(r.startswith(("topic write +", "topic readwrite +")) for r in rules(acl, "exporter"))


def test_processes_sharing_one_username_get_one_merged_section(tmp_path):
    acl = acl_for("""
[mqtt]
username = "wattbus"
[producer.a]
type = "hhpc"
[producer.b]
type = "hhpc"
""", tmp_path)
    assert acl.count("\nuser wattbus\n") == 1
    assert {"topic write hhpc/a/reading", "topic write hhpc/b/reading"} <= rules(acl, "wattbus")


def test_process_table_names_the_hardware_each_unit_needs(tmp_path):
    app = parse_config("""
[producer.adc]
type = "adc"
spi = "spidev"
[producer.adc.circuits.mains]
voltage_channel = 0
current_channels = [1]
[producer.meter]
type = "p1"
[producer.dongle]
type = "p1"
port = "tcp://10.0.0.2:23"
""", tmp_path / "w.toml", resolve)
    assert process_table(app) == ("adc\tproducer\tadc\tadc\tspi\n"
                                  "meter\tproducer\tp1\tmeter\tserial\n"
                                  "dongle\tproducer\tp1\tdongle\t-\n")


def test_acl_command_writes_the_file_only_when_it_changes_and_reports_bad_input(tmp_path):
    cfg = tmp_path / "w.toml"
    cfg.write_text('[producer.house]\ntype = "hhpc"\n')
    out = tmp_path / "acl"
    assert run_cli("-c", str(cfg), "acl", "-o", str(out)).returncode == 0
    assert oct(out.stat().st_mode & 0o777) == "0o640"
    mtime = out.stat().st_mtime_ns
    assert run_cli("-c", str(cfg), "acl", "-o", str(out)).returncode == 0
    assert out.stat().st_mtime_ns == mtime
    bad = run_cli("-c", str(cfg), "acl", "--extra", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "cannot read --extra" in bad.stderr and "Traceback" not in bad.stderr
    cfg.write_text('[producer.house]\ntype = "hhpcc"\n')
    broken = run_cli("-c", str(cfg), "acl")
    assert broken.returncode == 2 and "producer.house.type" in broken.stderr


def test_home_assistant_topics_stay_outside_the_site_prefix_and_aggregate_reads_dynamic_prices(tmp_path):
    """The rows of consumers registered by other changes, checked on stand-in configs with their fields."""
    from types import SimpleNamespace

    from wattbus.acl import process_access

    app = parse_config('[mqtt]\ntopic_prefix = "home1/"\n', tmp_path / "w.toml", resolve)
    ha = process_access("consumer", "ha", SimpleNamespace(type="homeassistant", discovery_prefix="hass",
                                                           ha_status_topic="hass/status"), app)
    assert ha.raw_write == ["hass/#"] and "hass/status" in ha.raw_read
    assert "ha/#" in ha.write and "homeassistant/#" not in ha.write + ha.raw_write
    app.tariff = SimpleNamespace(import_=SimpleNamespace(dynamic_topic="prices/belpex"),
                                 export=SimpleNamespace(dynamic_topic=None))
    agg_cfg = SimpleNamespace(type="aggregate", topics=["$share/a/+/+/reading"])
    agg = process_access("consumer", "agg", agg_cfg, app)
    assert agg.read == ["+/+/reading", "agg/#", "prices/belpex", "wattbus/agg/health"]
    assert agg.write == ["agg/#", "wattbus/agg/status", "wattbus/agg/health", "wattbus/dlq/agg"]
    api = process_access("consumer", "api", SimpleNamespace(type="api"), app)
    assert "sim/+/config/set" in api.write and api.read[0] == "#"


def test_a_relay_reads_only_its_meters_and_commands_and_reaches_only_its_devices(tmp_path):
    acl = acl_for("""
        [mqtt]
        topic_prefix = "home1/"
        username = "relays"
        [consumer.relays]
        type = "relay"
        grid = "p1/mains"
        [consumer.relays.relay.ev]
        load_w = 2000
        load = "shelly/ev"
        output = {kind = "tasmota", topic = "ev-charger"}
        [consumer.relays.relay.boiler]
        output = {kind = "shelly_mqtt", prefix = "shellypro1-boiler"}
        [consumer.relays.relay.pump]
        output = {kind = "mqtt", command_topic = "pump/set", state_topic = "pump/state"}
        """.replace("\n        ", "\n"), tmp_path)
    got = rules(acl, "relays")
    for line in ("topic read home1/p1/mains/reading", "topic read home1/shelly/ev/reading",
                 "topic read home1/relay/ev/set", "topic readwrite home1/relay/ev/state",
                 "topic write cmnd/ev-charger/#", "topic read stat/ev-charger/#",
                 "topic write shellypro1-boiler/rpc", "topic read wattbus-relay-boiler/rpc",
                 "topic write pump/set", "topic read pump/state"):
        assert line in got, f"{line!r} not in {sorted(got)}"
    assert not any("+/+/reading" in r or "relay/#" in r for r in got)
