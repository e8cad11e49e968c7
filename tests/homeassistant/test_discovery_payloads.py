"""Discovery documents at payload level: what HA reads, built from the metrics table and the bucket table."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import rollup
from consumers.homeassistant import discovery as d
from consumers.homeassistant.bridge import STALE, parse_bucket
from consumers.homeassistant.devices import DeviceRegistry, site_id
from schemas import METRICS

OID = "wattbus_p1_mains"


def test_every_metric_becomes_a_sensor_with_the_tables_unit_and_classes():
    for key, m in METRICS.items():
        comp = d.metric_component(OID, key)
        assert comp["platform"] == "sensor"
        assert comp["unique_id"] == comp["object_id"] == f"{OID}_{key}"
        assert comp["value_template"] == "{{ value_json.%s }}" % key
        assert comp.get("unit_of_measurement", "") == m.unit
        assert comp.get("device_class", "") == m.device_class
        want_state_class = "" if m.kind == "interval" else m.state_class
        assert comp.get("state_class", "") == want_state_class, key
        assert "last_reset_value_template" not in comp  # counters are total_increasing: no last_reset


def test_energy_dashboard_sources_have_what_ha_accepts():
    """HA's Energy dashboard takes energy in Wh/kWh/MWh/MJ/GJ and gas in m³, with a total state class."""
    for key in ("energy_import_wh", "energy_export_wh", "energy_import_t1_wh", "energy_export_t2_wh"):
        comp = d.metric_component(OID, key)
        assert (comp["device_class"], comp["state_class"], comp["unit_of_measurement"]) == (
            "energy",
            "total_increasing",
            "Wh",
        )
    gas = d.metric_component(OID, "gas_m3")
    assert (gas["device_class"], gas["state_class"], gas["unit_of_measurement"]) == (
        "gas",
        "total_increasing",
        "m³",
    )
    assert "state_class" not in d.metric_component(OID, "sub1_energy_wh")  # an interval amount is no total


def test_entity_names_are_short_and_unique_per_device():
    names = [d.entity_name(m) for m in METRICS.values()]
    assert len(set(names)) == len(names)
    assert d.entity_name(METRICS["power_w"]) == "Active power"
    assert d.entity_name(METRICS["voltage_l2_v"]) == "RMS voltage of phase L2 to neutral"
    assert d.entity_name(METRICS["tariff"]) == "Active tariff"
    assert max(len(n) for n in names) <= 60


def test_a_device_has_entities_only_for_what_it_sent_in_table_order():
    comps = d.device_components(OID, {"energy_import_wh", "power_w"}, set(), None)
    assert list(comps) == ["power_w", "energy_import_wh", "last_reading"]
    assert comps["last_reading"]["device_class"] == "timestamp"
    assert comps["last_reading"]["entity_category"] == "diagnostic"
    assert d.device_components(OID, set(), set(), None) == {}


def test_todays_bucket_sensors_reset_daily_and_money_needs_a_currency():
    comps = d.device_components(
        "wattbus_site_home", set(), {"solar_wh", "cost", "self_sufficiency_pct"}, None
    )
    assert list(comps) == ["today_solar_wh", "today_self_sufficiency_pct"]  # no currency: no money sensor
    solar = comps["today_solar_wh"]
    assert (solar["device_class"], solar["state_class"], solar["unit_of_measurement"]) == (
        "energy",
        "total",
        "Wh",
    )
    assert solar["last_reset_value_template"] == "{{ value_json.today_start }}"
    pct = comps["today_self_sufficiency_pct"]
    assert pct["state_class"] == "measurement" and "last_reset_value_template" not in pct
    cost = d.device_components("wattbus_site_home", set(), {"cost"}, "EUR")["today_cost"]
    assert (cost["device_class"], cost["state_class"], cost["unit_of_measurement"]) == (
        "monetary",
        "total",
        "EUR",
    )


def test_device_document_and_per_entity_documents_say_the_same():
    comps = d.device_components(OID, {"power_w", "gas_m3"}, set(), None)
    block = d.device_block(OID, "p1 mains", "p1")
    shared = d.shared_options(
        ["p1/mains/status", "wattbus/mains/status", "wattbus/ha/status"], "ha/p1/mains/state"
    )
    doc = d.device_document(block, comps, shared)
    assert doc["device"]["identifiers"] == [OID] and doc["origin"]["name"] == "wattbus"
    assert doc["availability_mode"] == "all" and len(doc["availability"]) == 3
    assert doc["state_topic"] == "ha/p1/mains/state"
    assert set(doc["components"]) == {"power_w", "gas_m3", "last_reading"}
    per_entity = d.entity_documents("homeassistant", OID, block, comps, shared)
    assert set(per_entity) == {f"homeassistant/sensor/{OID}/{k}/config" for k in comps}
    one = per_entity[f"homeassistant/sensor/{OID}/gas_m3/config"]
    assert "platform" not in one and one["unique_id"] == doc["components"]["gas_m3"]["unique_id"]
    assert one["availability"] == doc["availability"] and one["device"] == doc["device"]
    assert len(orjson.dumps(doc)) < 8000


def test_a_relay_is_a_switch_for_its_output_and_a_select_for_its_mode():
    comps = d.relay_components(
        "wattbus_relay_ev", d.Relay("ev", "EV charger"), "relay/ev/state", "relay/ev/set"
    )
    out, mode = comps["output"], comps["mode"]
    assert out["platform"] == "switch" and out["command_topic"] == "relay/ev/set"
    assert (out["payload_on"], out["payload_off"], out["state_on"], out["state_off"]) == (
        "on",
        "off",
        "on",
        "off",
    )
    assert mode["platform"] == "select" and mode["options"] == ["auto", "on", "off"]
    assert mode["command_topic"] == "relay/ev/set" and mode["value_template"] == "{{ value_json.mode }}"


def test_site_id_keeps_two_sites_apart():
    assert site_id("") == "" and site_id("home1/") == "home1" and site_id("a/b.c/") == "a_b_c"


# -- the registry -----------------------------------------------------------------------------------------
def registry(**kw) -> DeviceRegistry:
    return DeviceRegistry(
        "wattbus",
        ZoneInfo("Europe/Brussels"),
        max_devices=kw.pop("max_devices", 10),
        include=kw.pop("include", ["*"]),
        exclude=kw.pop("exclude", []),
    )


def test_an_older_reading_never_hides_a_newer_one_and_keys_only_grow():
    reg = registry()
    dev = reg.get("p1", "mains")
    assert reg.apply_reading(dev, 2000, {"power_w": 5.0, "energy_import_wh": 10.0})
    assert not reg.apply_reading(dev, 1000, {"power_w": 1.0, "gas_m3": 3.0})
    assert dev.values["power_w"] == 5.0 and dev.keys == {"power_w", "energy_import_wh"}
    assert reg.apply_reading(dev, 3000, {"power_w": 6.0})
    assert dev.values["energy_import_wh"] == 10.0  # every entity's key stays in the state
    assert dev.values["ts"].startswith("1970-01-01T01:00:03")


def test_the_cap_counts_refused_devices_and_include_exclude_select():
    reg = registry(max_devices=2, exclude=["hhpc/*"])
    assert reg.get("p1", "a") and reg.get("p1", "b")
    assert reg.get("p1", "c") is None and reg.get("p1", "d") is None
    assert reg.over_cap == 2 and len(reg.devices) == 2
    assert registry(exclude=["hhpc/*"]).get("hhpc", "house") is None
    assert registry(include=["shelly/*"]).get("p1", "x") is None
    assert registry().get("p1", "Bad Name") is None


def test_a_new_day_bucket_blanks_yesterdays_totals():
    reg = registry()
    dev = reg.get("site", "home")
    day = 86_400_000
    b1 = rollup.Bucket(
        source="site",
        device="home",
        period="1d",
        start=day,
        end=2 * day,
        label="d1",
        solar_wh=10.0,
        grid_import_wh=4.0,
    )
    b2 = rollup.Bucket(
        source="site", device="home", period="1d", start=2 * day, end=3 * day, label="d2", solar_wh=1.0
    )
    assert reg.apply_bucket(dev, b1) and reg.apply_bucket(dev, b2)
    assert dev.values["today_solar_wh"] == 1.0 and dev.values["today_grid_import_wh"] is None
    assert not reg.apply_bucket(dev, b1)  # yesterday's bucket, published again, does not come back
    assert dev.bucket_fields == {"solar_wh", "grid_import_wh"}


# -- hostile input ----------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_values.map(orjson.dumps)))
def test_any_payload_on_an_agg_topic_is_a_bucket_or_a_reason(payload):
    bucket, reason = parse_bucket("agg/p1/mains/1d", payload, 0)
    assert (bucket is None) == bool(reason)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["power_w", "energy_import_wh", "ts", "today_start", "today_cost"])
        | st.text(max_size=80),
        json_values | st.datetimes().map(str),
        max_size=20,
    )
)
def test_a_hostile_retained_state_restores_only_plain_values(state):
    reg = registry()
    dev = reg.get("p1", "mains")
    dev.keys = {"power_w", "energy_import_wh"}
    reg.restore_state(dev, state)
    assert set(dev.values) <= {"power_w", "energy_import_wh", "ts", "today_start"}
    assert all(isinstance(v, (int, float, str)) or v is None for v in dev.values.values())
    assert all(len(k) <= 64 for k in dev.values)
    orjson.dumps(dev.state())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.integers(), st.none()), max_size=50))
def test_a_hostile_health_device_list_is_bounded(devices):
    reg = registry(max_devices=2)
    reg.set_producer("p", devices)
    assert len(reg.claims) <= 8


def test_buckets_that_do_not_match_their_topic_or_are_old_are_refused():
    day = 86_400_000
    b = rollup.Bucket(
        source="p1",
        device="mains",
        period="1d",
        start=10 * day,
        end=11 * day,
        label="x",
        energy_import_wh=1.0,
    )
    payload = rollup.encode(b)
    assert parse_bucket("agg/p1/mains/1d", payload, 10.5 * day)[0] == b
    assert (
        parse_bucket("agg/p1/other/1d", payload, 10.5 * day)[1]
        == "bucket source/device/period do not match the topic"
    )
    assert parse_bucket("agg/p1/mains/1d", payload, 20 * day) == (None, STALE)
    assert parse_bucket("agg/p1/mains/1d", b'{"v": 1}', 0)[1].startswith("not a bucket")
    assert parse_bucket("agg/p1/mains/1d", b"\xff\xfe", 0)[1].startswith("not a bucket")
    huge = payload.replace(b'"energy_import_wh":1.0', b'"energy_import_wh":1e999')
    got, _ = parse_bucket("agg/p1/mains/1d", huge, 10.5 * day)
    assert got is None or orjson.dumps(got.energy_import_wh) in (b"null", b"1e999")


def test_a_renamed_producer_left_behind_does_not_own_its_devices():
    """Its retained health still names the device and its status says offline for ever."""
    reg = registry()
    dev = reg.get("p1", "mains")
    reg.set_producer("new", ["p1/mains"])
    reg.set_process_status("new", True)
    reg.set_producer("old", ["p1/mains"])  # retained, arrives later at a restart
    reg.set_process_status("old", False)
    assert dev.producer == "new"
    reg.set_process_status("new", False)  # the producer stops: it keeps its device, which goes unavailable
    assert dev.producer == "new"
    reg.set_producer("new", ["p1/mains"])
    assert dev.producer == "new"
