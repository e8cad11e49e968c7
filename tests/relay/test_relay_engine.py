"""The relay's decisions with the clock in the test's hand: every rule, and what no input may ever break."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.tariff import Window
from consumers.relay import Config
from consumers.relay.engine import Cheapest, Controller, Rules, Surplus

TZ = ZoneInfo("Europe/Brussels")
T0 = datetime(2026, 6, 10, 12, 0, tzinfo=TZ).timestamp()  # a Wednesday noon
SURPLUS = Surplus(on_export_w=2000, off_import_w=500, on_delay_s=300, off_delay_s=600)


def run(ctl: Controller, grid: list[float], step: float = 60.0, start: float = T0) -> list[bool]:
    """Feed one grid reading per step, switch as decided; the relay's state after each step."""
    states = []
    for i, p in enumerate(grid):
        now = start + i * step
        ctl.grid(now, p)
        d = ctl.decide(now)
        ctl.switched(d.on, now)
        states.append(ctl.on)
    return states


def test_surplus_needs_the_enable_delay_and_lets_go_after_the_disable_delay():
    ctl = Controller(Rules(load_w=2000, surplus=SURPLUS), TZ)
    states = run(ctl, [-2500] * 6 + [700] * 11)
    assert states[:5] == [False] * 5 and states[5]  # on after 300 s of export
    assert all(states[5:16]) and not states[16]  # off after 600 s of 700 W import


def test_a_passing_cloud_switches_nothing():
    ctl = Controller(Rules(load_w=2000, surplus=SURPLUS), TZ)
    states = run(ctl, [-2500] * 6 + [900] * 5 + [-400] * 5 + [900] * 5)  # a few minutes of import, twice
    assert states[5:] == [True] * (len(states) - 5)


def test_the_relays_own_load_does_not_count_against_it():
    ctl = Controller(Rules(load_w=2000, surplus=SURPLUS), TZ)
    run(ctl, [-2500] * 6)
    assert ctl.on
    # with the 2 kW load on the grid shows only 300 W import: below off_import_w, so it stays on for good
    assert all(run(ctl, [300] * 60, start=T0 + 360))
    assert ctl.surplus_w() == pytest.approx(1700)  # 2000 W load minus 300 W import


def test_a_load_meter_replaces_the_nominal_load():
    ctl = Controller(Rules(load_w=2000, surplus=SURPLUS), TZ)
    run(ctl, [-2500] * 6)
    ctl.load(T0 + 360, 1200)  # the EV draws less than nominal
    ctl.grid(T0 + 360, -100)
    assert ctl.surplus_w() == pytest.approx(1300)


def test_minimum_on_and_off_times_hold_the_state():
    quick = Surplus(on_export_w=2000, off_import_w=500, on_delay_s=0, off_delay_s=0)
    ctl = Controller(Rules(load_w=2000, surplus=quick, min_on_s=600, min_off_s=900), TZ)
    states = run(ctl, [-2500] + [800] * 12)
    assert states[:10] == [True] * 10 and not states[10]  # on 600 s at least, then off
    states = run(ctl, [-2500] * 16, start=T0 + 13 * 60)
    assert states[:12] == [False] * 12 and states[12]  # off 900 s at least since T0 + 600
    d = Controller(Rules(load_w=2000, surplus=quick, min_on_s=600), TZ)
    run(d, [-2500])
    d.grid(T0 + 60, 800)
    assert "at least 600 s" in d.decide(T0 + 60).reason


def test_the_switch_cap_counts_the_last_hour():
    quick = Surplus(on_export_w=2000, off_import_w=500, on_delay_s=0, off_delay_s=0)
    ctl = Controller(Rules(load_w=2000, surplus=quick, max_switches_per_hour=4), TZ)
    states = run(ctl, [-2500, 800] * 30)  # flapping every minute for an hour
    changes = sum(a != b for a, b in zip([False] + states, states))
    assert changes == 4
    ctl.grid(T0 + 60 * 59, -2500)
    held = ctl.decide(T0 + 60 * 59)
    assert not held.on and held.reason == "switch cap: 4 switchings in the last hour"
    later = T0 + 3600 * 2
    ctl.grid(later, 800 if ctl.on else -2500)
    assert ctl.decide(later).on != ctl.on  # the hour has passed: it may switch again


def test_stale_or_missing_input_is_the_safe_state():
    ctl = Controller(Rules(load_w=2000, surplus=SURPLUS, safe_state=True, stale_after_s=120), TZ)
    assert ctl.decide(T0) .on and "no grid reading yet" in ctl.decide(T0).reason
    ctl.grid(T0, 5000)
    d = ctl.decide(T0 + 121)
    assert d.on and "121 s old" in d.reason
    off = Controller(Rules(load_w=2000, surplus=SURPLUS, stale_after_s=120), TZ)
    run(off, [-2500] * 6)
    assert off.on and not off.decide(T0 + 5 * 60 + 121).on


def test_manual_modes_win_then_expire():
    ctl = Controller(Rules(load_w=2000, surplus=SURPLUS, manual_timeout_s=3600), TZ)
    ctl.command("on", T0)
    assert ctl.decide(T0).on and ctl.manual_until == T0 + 3600
    d = ctl.decide(T0 + 3600)
    assert not d.on and ctl.mode == "auto" and "manual on expired" in d.reason
    ctl.command("off", T0)
    ctl.grid(T0, -9000)
    assert not ctl.decide(T0 + 10).on
    with pytest.raises(ValueError, match="mode must be one of"):
        ctl.command("toggle", T0)


def test_a_restored_manual_mode_only_when_not_expired():
    ctl = Controller(Rules(manual_timeout_s=60), TZ)
    ctl.restore("on", T0 + 30, T0)
    assert ctl.mode == "on"
    late = Controller(Rules(manual_timeout_s=60), TZ)
    late.restore("on", T0 - 1, T0)
    assert late.mode == "auto"


def test_schedule_windows_in_local_time():
    window = msgspec.convert({"days": "mon-fri", "from": "06:00", "to": "07:00"}, Window)
    ctl = Controller(Rules(windows=(window,)), TZ)
    wed_6_30 = datetime(2026, 6, 10, 6, 30, tzinfo=TZ).timestamp()
    sat_6_30 = datetime(2026, 6, 13, 6, 30, tzinfo=TZ).timestamp()
    assert ctl.decide(wed_6_30).on and ctl.decide(wed_6_30).reason == "schedule window"
    assert not ctl.decide(sat_6_30).on


def test_the_cheapest_hours_of_the_night_from_hourly_prices():
    # 22:00-07:00, prices fall to their lowest at 02:00-05:00
    night = datetime(2026, 6, 10, 22, 0, tzinfo=TZ).timestamp()
    prices = {int(night + h * 3600) * 1000: p for h, p in enumerate([30, 28, 25, 20, 12, 10, 11, 19, 27])}

    def price_at(ts_ms: int) -> float | None:
        return prices.get(ts_ms - ts_ms % 3_600_000)

    ctl = Controller(Rules(cheapest=Cheapest(hours=3, start=22 * 60, end=7 * 60)), TZ, price_at)
    on_hours = [h for h in range(9) if ctl.decide(night + h * 3600 + 600).on]
    assert on_hours == [4, 5, 6]  # 02:00, 03:00, 04:00 local
    assert not ctl.decide(night - 3600).on  # outside the window


def test_unknown_prices_are_never_chosen():
    ctl = Controller(Rules(cheapest=Cheapest(hours=2, start=0, end=0)), TZ, lambda ts: None)
    assert not any(ctl.decide(T0 + h * 3600).on for h in range(24))


@settings(max_examples=200, deadline=None)
@given(grid=st.lists(st.floats(-20_000, 20_000), min_size=1, max_size=400),
       step=st.floats(1, 600), cap=st.integers(1, 8), min_on=st.floats(0, 1800), min_off=st.floats(0, 1800))
def test_no_input_can_break_the_cap_or_the_minimum_times(grid, step, cap, min_on, min_off):
    quick = Surplus(on_export_w=1000, off_import_w=0, on_delay_s=0, off_delay_s=0)
    ctl = Controller(Rules(load_w=1000, surplus=quick, max_switches_per_hour=cap, min_on_s=min_on,
                           min_off_s=min_off, stale_after_s=10 ** 6), TZ)
    switches: list[float] = []
    last = None
    for i, p in enumerate(grid):
        now = T0 + i * step
        ctl.grid(now, p)
        d = ctl.decide(now)
        assert isinstance(d.reason, str) and d.reason
        if d.on != ctl.on:
            if last is not None:
                assert now - last >= (min_on if ctl.on else min_off)
            switches.append(now)
            last = now
        ctl.switched(d.on, now)
    for i, t in enumerate(switches):
        assert sum(1 for u in switches[:i] if u > t - 3600) < cap


@pytest.mark.parametrize("relay, message", [
    ({"output": {"kind": "mqtt", "command_topic": "x"}, "surplus": {}}, "set it, or set `load_w`"),
    ({"output": {"kind": "mqtt", "command_topic": "x"}, "load_w": -5}, "`load_w` must be 0..1000000"),
    ({"output": {"kind": "mqtt", "command_topic": "x"}, "min_on": 1e9}, "`min_on` must be 0..604800"),
    ({"output": {"kind": "mqtt", "command_topic": "x"}, "load": "mains"}, "expected \"source/device\""),
    ({"output": {"kind": "mqtt", "command_topic": "x"}, "cheapest": {"hours": 10, "from": "22:00",
                                                                     "to": "07:00"}}, "at most the window's 9 h"),
    ({"output": {"kind": "mqtt", "command_topic": "x"}, "cheapest": {"hours": 2, "from": "25:00"}}, "`from`"),
    ({"output": {"kind": "mqtt", "command_topic": "x"}, "safe_state": "maybe"}, "Invalid enum value 'maybe'"),
    ({"output": {"kind": "mqtt", "command_topic": "x"}, "max_switches_per_hour": -1}, "0..3600"),
    ({}, "missing required field `output`"),
])
def test_bad_relay_configs_name_the_key(relay, message):
    with pytest.raises((msgspec.ValidationError, ValueError), match=message):
        msgspec.convert({"type": "relay", "grid": "shelly/mains", "relay": {"ev": relay}}, Config)


def test_surplus_without_a_grid_meter_and_no_relays_are_refused():
    with pytest.raises(msgspec.ValidationError, match="needs `grid`"):
        msgspec.convert({"type": "relay", "relay": {"ev": {"load_w": 1, "surplus": {},
                                                           "output": {"kind": "mqtt", "command_topic": "x"}}}},
                        Config)
    with pytest.raises(msgspec.ValidationError, match="at least one relay"):
        msgspec.convert({"type": "relay"}, Config)


def test_check_config_names_file_line_and_key_of_a_bad_relay(tmp_path):
    from tests.support.processes import run_cli

    cfg = tmp_path / "wattbus.toml"
    cfg.write_text('[consumer.relays]\ntype = "relay"\ngrid = "shelly/mains"\n\n'
                   '[consumer.relays.relay.ev]\nload_w = 2000\nmin_off = -3\n'
                   'output = {kind = "tasmota", topic = "ev"}\n')
    r = run_cli("-c", str(cfg), "check-config")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(cfg) in r.stderr and "min_off" in r.stderr and "0..604800 seconds" in r.stderr
