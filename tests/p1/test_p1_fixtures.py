"""Every real telegram, sent byte for byte by the emulator over a pty and over TCP, read by P1Reader,
comes out as the canonical metrics written in the file (values transcribed from the fixture text)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from p1_helpers import fixture_bytes, read_via

from producers.p1.reader import Decoded


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


# file -> (dsmr, telegram time, metrics, {sub device suffix: (key, value, time)})
EXPECTED = {
    "nl_dsmr50_iskra_mt382_v5.txt": ("5", utc_ms(2017, 1, 2, 18, 20, 2), {   # 170102192002W = CET
        "energy_import_t1_wh": 4426, "energy_import_t2_wh": 2399,                # 1-0:1.8.1/1.8.2
        "energy_export_t1_wh": 2444, "energy_export_t2_wh": 0,
        "energy_import_wh": 6825, "energy_export_wh": 2444,                      # no 1.8.0: t1 + t2
        "tariff": 2, "power_w": 244,                                             # 1.7.0 0.244 kW - 2.7.0 0
        "power_l1_w": 70, "power_l2_w": 32, "power_l3_w": 142,
        "voltage_l1_v": 230.0, "voltage_l2_v": 230.0, "voltage_l3_v": 229.0,
        "current_l1_a": 0.48, "current_l2_a": 0.44, "current_l3_a": 0.86,
        "power_failures": 13, "long_power_failures": 0,
        "voltage_sags_l1": 0, "voltage_sags_l2": 0, "voltage_sags_l3": 0,
        "voltage_swells_l1": 0, "voltage_swells_l2": 0, "voltage_swells_l3": 0,
    }, {"gas": ("gas_m3", 0.107, utc_ms(2017, 1, 2, 15, 10, 5))}),              # 170102161005W; channel 2 empty
    "be_fluvius_emucs_v171.txt": ("5B", utc_ms(2020, 5, 12, 11, 54, 9), {       # 200512135409S = CEST
        "energy_import_t1_wh": 34, "energy_import_t2_wh": 15758,
        "energy_export_t1_wh": 0, "energy_export_t2_wh": 11,
        "energy_import_wh": 15792, "energy_export_wh": 11,
        "tariff": 1, "demand_avg_w": 2351, "demand_peak_month_w": 2589,          # 1-0:1.4.0 / 1-0:1.6.0
        "power_w": 0, "power_l1_w": 0, "power_l2_w": 0, "power_l3_w": 0,
        "voltage_l1_v": 234.7, "voltage_l2_v": 234.7, "voltage_l3_v": 234.7,
        "current_l1_a": 0, "current_l2_a": 0, "current_l3_a": 0,
    }, {"gas": ("gas_m3", 112.384, utc_ms(2020, 5, 12, 11, 45, 58)),            # 0-1:24.2.3, type 003
        "water": ("water_m3", 872.234, utc_ms(2020, 5, 12, 11, 45, 58))}),      # 0-2:24.2.1, type 007
    "lu_smarty_plaintext_decrypted.txt": ("5L", utc_ms(2026, 4, 3, 15, 54, 31), {
        "energy_import_wh": 273764, "energy_export_wh": 112743030,               # meter's own 1.8.0/2.8.0
        "power_w": -897,                                                         # 1.7.0 0 - 2.7.0 0.897 kW
        "power_l1_w": -319, "power_l2_w": -300, "power_l3_w": -277,
        "voltage_l1_v": 231.0, "voltage_l2_v": 229.0, "voltage_l3_v": 230.0,
        "current_l1_a": 1, "current_l2_a": 1, "current_l3_a": 1,
        "power_failures": 1067,
        "voltage_sags_l1": 14, "voltage_sags_l2": 15, "voltage_sags_l3": 12,
        "voltage_swells_l1": 0, "voltage_swells_l2": 0, "voltage_swells_l3": 0,
    }, {"gas": ("gas_m3", 14239.771, utc_ms(2026, 4, 3, 15, 45, 42))}),
    "se_ell5_han.txt": ("5S", utc_ms(2021, 2, 17, 17, 40, 19), {
        "energy_import_wh": 6678394, "energy_export_wh": 0,
        "reactive_energy_import_varh": 21988, "reactive_energy_export_varh": 1020971,
        "power_w": 1727, "power_l1_w": 1023, "power_l2_w": 350, "power_l3_w": 353,
        "reactive_power_var": -308,                                              # per phase: 0 - (9+161+138)
        "voltage_l1_v": 240.3, "voltage_l2_v": 240.1, "voltage_l3_v": 241.3,
        "current_l1_a": 4.2, "current_l2_a": 1.6, "current_l3_a": 1.7,
    }, {}),
    "nl_dsmr22_iskra_v2_2.txt": ("2.2", None, {                                  # no clock, no CRC
        "energy_import_t1_wh": 1001, "energy_import_t2_wh": 1001,
        "energy_export_t1_wh": 1001, "energy_export_t2_wh": 1001,
        "energy_import_wh": 2002, "energy_export_wh": 2002,
        "tariff": 1, "power_w": 1010,                                            # 0001.01 kW
    }, {"gas": ("gas_m3", 1.001, utc_ms(2016, 11, 7, 18, 0, 0))}),              # 161107190000, local CET
    "de_easymeter_q3d_esy5q3da1004.txt": ("Q3D", None, {                         # W and kWh units, no CRC
        "energy_import_wh": 32549506.1662, "power_w": 1688.21,
        "power_l1_w": 557.29, "power_l2_w": 521.62, "power_l3_w": 609.30,
    }, {}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_telegram_through_the_port_gives_the_metrics_in_the_file(name, transport):
    dsmr, ts, metrics, subs = EXPECTED[name]
    raw = fixture_bytes(name)
    # Twice, written in 37-byte pieces: the second copy must come out the same (framing across reads).
    got = read_via(transport, [raw, raw], dsmr, want=2, chunk=37)
    decoded = [g for g in got if isinstance(g, Decoded)]
    assert len(decoded) == 2, got
    for d in decoded:
        s = d.sample
        assert s.ts == ts
        assert s.metrics == pytest.approx(metrics)
        assert set(s.metrics) == set(metrics)
        assert {r.suffix: (r.key, pytest.approx(r.value), r.ts) for r in s.subs} == subs
    # What was read is the telegram as sent, up to the end of its `!CRC` line.
    assert raw.startswith(decoded[0].raw)


def test_gateway_lines_after_an_easymeter_telegram_are_ignored_not_dead_lettered(transport):
    raw = fixture_bytes("de_easymeter_q3d_esy5q3da1004.txt")
    got = read_via(transport, [raw, raw, raw], "Q3D", want=5)
    kinds = [g.reason if not isinstance(g, Decoded) else "telegram" for g in got]
    assert kinds.count("telegram") == 3
    assert set(kinds) <= {"telegram", "trailer"}
