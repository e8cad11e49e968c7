"""The pieces with exact answers: Go's float format for gethpc, local times, config errors."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.envelope import Reading
from consumers.api.seed import gethpc_body, go_float
from consumers.api.timerange import BadParameter, parse_day, parse_instant, parse_step
from tests.support.processes import run_cli

TZ = ZoneInfo("Europe/Brussels")


@pytest.mark.parametrize(("value", "text"), [
    (2.0, "2"), (0.0, "0"), (-0.0, "0"), (0.288, "0.288"), (242.41, "242.41"), (1e21, "1e+21"), (1e-7, "1e-7"),
    (123456789.0, "123456789"), (0.000001, "0.000001"), (-3.5, "-3.5"), (1e20, "100000000000000000000"),
])
def test_go_float_writes_what_encoding_json_writes(value, text):
    assert go_float(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_reads_back_exactly(value):
    assert float(go_float(value)) == value


def test_gethpc_body_in_winter_time_and_missing_sub_meters():
    r = Reading("hhpc", "house", 1734195480000, {"power_w": 2278.0, "reactive_power_var": 50.0,
                                                 "voltage_v": 236.74, "current_a": 9.6})
    assert gethpc_body(r, TZ) == (b'{"timestamp":"2024-12-14 17:58:00","gapower":2.278,"grpower":0.05,'
                                  b'"voltage":236.74,"gintens":9.6,"sm1":0,"sm2":0,"sm3":0}\n')


def test_local_dates_follow_the_site_time_zone():
    assert parse_instant("from", "2024-03-31", TZ) == 1711839600000  # 00:00 CET
    assert parse_instant("from", "2024-03-31T03:00", TZ) == 1711846800000  # 03:00 CEST, an hour after 01:00 UTC
    assert parse_instant("from", "1711846800000", TZ) == 1711846800000
    day, start, end = parse_day("day", "2024-10-27", TZ, 0)
    assert (end - start) == 25 * 3_600_000
    assert parse_step("15m") == 900_000 and parse_step("90") == 90_000 and parse_step(None) is None


@pytest.mark.parametrize("bad", ["yesterday", "2024-02-30", "31/12/2024", "99999999999999999", "1969-12-31",
                                 "2024-12-14T25:00", ""])
def test_a_bad_time_names_the_parameter_and_the_expected_form(bad):
    with pytest.raises(BadParameter) as err:
        parse_instant("to", bad, TZ) if bad else parse_day("day", "x", TZ, 0)
    assert str(err.value).startswith(("to:", "day:"))


@pytest.mark.parametrize(("section", "key"), [
    ('listen = "pi.local"', "listen"), ("port = 0", "port"), ('grid = ["mains"]', "grid"),
    ("workers = 0", "workers"), ('cors_origins = ["evil"]', "cors_origins"), ("lisen = 1", "lisen"),
])
def test_config_mistakes_exit_2_naming_the_key(tmp_path, section, key):
    cfg = tmp_path / "wattbus.toml"
    cfg.write_text(f'[consumer.api]\ntype = "api"\n{section}\n')
    out = run_cli("-c", str(cfg), "check-config")
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"consumer.api.{key}" in out.stderr and "Traceback" not in out.stderr


def test_an_unreadable_token_file_is_a_config_error(tmp_path):
    cfg = tmp_path / "wattbus.toml"
    cfg.write_text(f'[mqtt]\nport = 1\n[consumer.api]\ntype = "api"\nport = 1\n'
                   f'token_file = "{tmp_path}/missing.token"\n')
    out = run_cli("-c", str(cfg), "run", "api", timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "consumer.api.token_file: cannot read" in out.stderr and "Traceback" not in out.stderr
