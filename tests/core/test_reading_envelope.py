"""The envelope decoder agrees with the published JSON schema and with the metrics table."""

import fastjsonschema
import orjson
import pytest

from bus.envelope import EnvelopeError, Limits, decode, decode_checked, encode_batch, encode_reading
from schemas import METRICS, reading_schema

GOOD = [
    {"v": 1, "source": "hhpc", "device": "house", "ts": 1734199080000, "seq": 17, "period_s": 60,
     "quality": "ok", "metrics": {"power_w": 2278.0, "voltage_v": 236.74, "sub3_energy_wh": 17.0}},
    {"v": 1, "source": "p1", "device": "meter", "ts": 1, "metrics": {}},
    {"v": 1, "source": "sim", "device": "kili", "boot": 5,
     "readings": [{"ts": 10, "seq": 1, "metrics": {"power_w": 1}}, {"ts": 20, "metrics": {}, "quality": "missing"}]},
]
BAD = [
    ({"v": 2, "source": "hhpc", "device": "house", "ts": 1, "metrics": {}}, "$.v"),
    ({"v": 1, "source": "nope", "device": "house", "ts": 1, "metrics": {}}, "$.source"),
    ({"v": 1, "source": "hhpc", "device": "House!", "ts": 1, "metrics": {}}, "$.device"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": "yesterday", "metrics": {}}, "$.ts"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": -5, "metrics": {}}, "$.ts"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 1, "metrics": {"power_w": "high"}}, "metrics"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 1, "metrics": {}, "extra": 1}, "extra"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 1, "quality": "great", "metrics": {}}, "quality"),
    ({"v": 1, "source": "hhpc", "device": "house", "readings": []}, "readings"),
    ({"v": 1, "source": "hhpc", "device": "house", "readings": [{"metrics": {}}]}, "ts"),
    # every number a sink stores is bounded (the probes: seq past int64, 1e308 W, year 3000+)
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 1, "seq": 2**63, "metrics": {}}, "$.seq"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 1, "boot": 2**63, "metrics": {}}, "$.boot"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 32503680000001, "metrics": {}}, "$.ts"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 1, "metrics": {"power_w": 1e308}}, "power_w"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 1, "metrics": {"power_w": -1.0000001e15}},
     "power_w"),
    ({"v": 1, "source": "hhpc", "device": "house", "ts": 1, "period_s": 31622401, "metrics": {}}, "period_s"),
    ({"v": 1, "source": "hhpc", "device": "house\n", "ts": 1, "metrics": {}}, "$.device"),
    ({"v": 1, "source": "hhpc", "device": "house", "readings": [{"ts": 1, "seq": 2**63 + 5, "metrics": {}}]},
     "seq"),
]


@pytest.fixture(scope="module")
def schema_validate():
    return fastjsonschema.compile(reading_schema())


@pytest.mark.parametrize("doc", GOOD)
def test_good_envelopes_pass_both_validators(doc, schema_validate):
    schema_validate(doc)
    readings = decode(orjson.dumps(doc))
    assert all(r.source == doc["source"] and r.device == doc["device"] for r in readings)


@pytest.mark.parametrize("doc,where", BAD)
def test_bad_envelopes_fail_both_validators_with_a_reason(doc, where, schema_validate):
    with pytest.raises(fastjsonschema.JsonSchemaException):
        schema_validate(doc)
    with pytest.raises(EnvelopeError) as exc:
        decode(orjson.dumps(doc))
    assert where.split(".")[-1] in str(exc.value)


def test_the_largest_values_in_bounds_pass_both_validators(schema_validate):
    doc = {"v": 1, "source": "hhpc", "device": "h" * 64, "ts": 32503680000000, "seq": 2**63 - 1,
           "boot": 32503680000000, "period_s": 31622400, "metrics": {"power_w": 1e15, "voltage_v": -1e15}}
    schema_validate(doc)
    assert decode(orjson.dumps(doc))[0].seq == 2**63 - 1


def test_plausibility_rejects_single_readings_of_a_batch_with_their_reason():
    now = 1_734_199_080_000
    items = [{"ts": now - 60_000, "metrics": {"power_w": 5.0}},
             {"ts": 0, "metrics": {}},                                      # a clock never set
             {"ts": now + 86_400_000, "metrics": {}},                       # a day ahead
             {"ts": now, "metrics": {"energy_import_wh": -3.0}},            # a counter below 0
             {"ts": now, "seq": 2**63, "metrics": {}},                      # past int64
             {"ts": now, "metrics": {"power_kw": 1.0}}]                     # not in the metrics table
    got = decode_checked(encode_batch("hhpc", "house", items), Limits(), now)
    assert [r.ts for r in got.readings] == [now - 60_000]
    reasons = {r.index: r.reason for r in got.rejected}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "min_ts" in reasons[1] and "ahead" in reasons[2] and "negative" in reasons[3]
    assert "seq" in reasons[4] and "power_kw" in reasons[5]
    sim = decode_checked(encode_batch("sim", "kili", [items[2]]), Limits(), now)
    assert len(sim.readings) == 1  # a simulated clock may run ahead: exempt from the bound relative to now


def test_unknown_metric_key_is_rejected_naming_the_key():
    with pytest.raises(EnvelopeError, match="power_kw"):
        decode(encode_reading("hhpc", "house", 1, {"power_kw": 2.2}))


def test_malformed_json_is_rejected():
    with pytest.raises(EnvelopeError, match="malformed JSON"):
        decode(b'{"v": 1, "source": ')


def test_batch_round_trip_keeps_order_and_fields():
    raw = encode_batch("hhpc", "house", [{"ts": i, "seq": i, "period_s": 60, "metrics": {"power_w": float(i)}}
                                         for i in range(1, 4)], boot=9)
    readings = decode(raw)
    assert [(r.ts, r.seq, r.metrics["power_w"], r.period_s) for r in readings] == [
        (1, 1, 1.0, 60), (2, 2, 2.0, 60), (3, 3, 3.0, 60)]


def test_metrics_table_has_the_fixed_keys_and_complete_rows():
    fixed = ("power_w reactive_power_var apparent_power_va voltage_v current_a power_factor frequency_hz "
             "power_l1_w voltage_l1_v current_l1_a power_l3_w current_n_a energy_import_wh energy_export_wh "
             "energy_import_t1_wh energy_import_t2_wh energy_export_t1_wh energy_export_t2_wh tariff gas_m3 "
             "energy_wh sub1_energy_wh sub2_energy_wh sub3_energy_wh demand_avg_w demand_peak_month_w").split()
    assert set(fixed) <= set(METRICS)
    for m in METRICS.values():
        assert m.kind in ("gauge", "counter", "interval")
        assert m.prom_type in ("gauge", "counter")
        assert m.state_class in ("measurement", "total", "total_increasing")
        assert (m.prom_type == "counter") == m.prom_name.endswith("_total"), m.key
        assert m.description
