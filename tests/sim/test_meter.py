"""The simulated meter without MQTT: counters, live and daily upload, restart, remote config."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from producers.sim.config import MeterConfig
from producers.sim.meter import SimMeter
from producers.sim.profile import Site

SITE = Site(ZoneInfo("Europe/Brussels"), 50.85, 4.35)
START = datetime(2024, 6, 1, tzinfo=SITE.tz).timestamp()


def meter(upload: str = "live", **params) -> SimMeter:
    m = SimMeter(MeterConfig(serial="kili", **params), SITE, seed=1, interval_s=300, default_upload=upload)
    return m


def run_for(m: SimMeter, start: float, seconds: float, tick: float = 300.0):
    """Step the meter like the loop does, once per ``tick`` of simulated time; all uploads in order."""
    uploads = []
    t = start
    while t <= start + seconds:
        uploads += m.step(t)
        t += tick
    return uploads


def readings(uploads):
    return [r for up in uploads for r in up.readings]


def test_counters_never_decrease_and_power_is_signed_like_a_grid_meter():
    m = meter(solar_kwp=5.0, ev_kw=7.4, ev_sessions_per_week=7)
    m.begin(START)
    rs = readings(run_for(m, START, 7 * 86400, tick=3600))
    imp = np.array([r.import_wh for r in rs])
    exp = np.array([r.export_wh for r in rs])
    assert len(rs) == 7 * 288 + 1
    assert np.all(np.diff(imp) >= 0) and np.all(np.diff(exp) >= 0)
    power = np.array([r.power_w for r in rs])
    assert power.min() < -1000 and power.max() > 5000  # exports at noon, charges the car at night
    ts = np.array([r.ts_ms for r in rs])
    assert np.all(np.diff(ts) == 300_000)
    # exporting readings push the export counter, importing ones the import counter
    d_exp = np.diff(exp)
    assert d_exp[power[1:] < -500].min() > 0


def test_live_publishes_each_reading_and_daily_one_batch_per_local_day():
    live = meter("live")
    live.begin(START)
    ups = run_for(live, START, 86400)
    assert all(not u.batch and len(u.readings) == 1 for u in ups) and len(ups) == 289

    daily = meter("daily")
    daily.begin(START)
    ups = run_for(daily, START, 2 * 86400 + 3600)
    assert [u.batch for u in ups] == [True, True]
    for up, day in zip(ups, (1, 2)):
        local = [datetime.fromtimestamp(r.ts_ms / 1000, SITE.tz) for r in up.readings]
        assert {x.date().day for x in local} == {day}
        assert len({r.ts_ms for r in up.readings}) == 288
        assert local[0].hour == 0 and local[0].minute == 0 and local[-1].strftime("%H:%M") == "23:55"
    # both modes report the same readings
    again = meter("live")
    again.begin(START)
    live_items = [r.item() for r in readings(run_for(again, START, 2 * 86400 - 1))]
    assert [r.item() for r in readings(ups)] == live_items


def test_same_day_twice_gives_identical_readings():
    a, b = meter("daily", solar_kwp=4.0), meter("daily", solar_kwp=4.0)
    a.begin(START)
    b.begin(START)
    day_a = run_for(a, START, 86400 + 300)
    day_b = run_for(b, START, 86400 + 300, tick=1234.5)  # a different loop cadence changes nothing
    assert [r.item() for r in readings(day_a)] == [r.item() for r in readings(day_b)]


@pytest.mark.parametrize("upload", ["live", "daily"])
def test_a_restarted_meter_continues_exactly_where_the_uploads_stopped(upload):
    original = meter(upload, solar_kwp=4.0, ev_kw=7.4)
    original.begin(START)
    first = run_for(original, START, 86400 + 6 * 3600)  # mid-way through day two
    state = original.state()
    later = readings(run_for(original, START + 86400 + 6 * 3600 + 300, 2 * 86400))

    restarted = meter(upload, solar_kwp=4.0, ev_kw=7.4)
    restarted.restore(state)
    restarted.begin(START + 10 * 86400)  # the configured start is ignored once counters exist
    resumed = readings(run_for(restarted, START + 86400 + 6 * 3600 + 300, 2 * 86400))
    assert first and [r.item() for r in resumed][-100:] == [r.item() for r in later][-100:]
    if upload == "daily":
        # the unsent part of day two was regenerated and goes up with the rest of that day
        assert len(resumed) == len(later) and resumed[0].ts_ms == later[0].ts_ms
    assert resumed[0].import_wh >= readings(first)[-1].import_wh


def test_a_long_gap_is_counted_but_only_backfill_days_are_published():
    m = SimMeter(MeterConfig(serial="kili"), SITE, seed=1, interval_s=300, backfill_s=3600)
    m.begin(START)
    m.step(START)
    ups = m.step(START + 86400, catch_up=True)
    assert len(ups) == 1 and ups[0].batch and len(ups[0].readings) == 12
    assert m.skipped == 288 - 12
    ref = meter()
    ref.begin(START)
    full = readings(run_for(ref, START, 86400))
    assert ups[0].readings[-1].import_wh == pytest.approx(full[-1].import_wh, rel=1e-12)


def test_remote_update_changes_the_profile_and_bad_input_is_refused_with_the_key():
    m = meter("daily")
    m.begin(START)
    run_for(m, START, 3 * 3600)
    assert m.describe()["daily_kwh"] == 10.0 and m.describe()["upload"] == "daily"
    m.update({"daily_kwh": 20, "solar_kwp": 3})
    assert m.describe()["daily_kwh"] == 20.0 and m.overrides == {"daily_kwh": 20.0, "solar_kwp": 3.0}
    bad = [({"daily_kwh": -1}, "daily_kwh: expected a number > 0"),
           ({"dayly_kwh": 3}, "dayly_kwh: unknown key; expected one of: daily_kwh"),
           ({"appliances": "yes"}, "appliances: expected true or false (kettle"),
           ({"upload": "hourly"}, "upload: expected \"live\" or \"daily\""),
           ({"base_w": 5000}, "base_w: must be at most 667 W for daily_kwh = 20"),
           ([1, 2], "payload: expected a JSON object")]
    for request, message in bad:
        with pytest.raises(ValueError) as err:
            m.update(request)
        assert message in str(err.value)
    assert m.describe()["daily_kwh"] == 20.0  # nothing changed by the refused requests
    m.update({"daily_kwh": None})  # null: back to the file's value
    assert m.describe()["daily_kwh"] == 10.0 and m.overrides == {"solar_kwp": 3.0}
    # overrides are part of the state and come back after a restart
    again = meter("daily")
    again.restore(m.state())
    assert again.describe() == m.describe()


def test_switching_daily_to_live_sends_what_was_pending():
    m = meter("daily")
    m.begin(START)
    run_for(m, START, 3 * 3600)
    assert len(m.pending) == 37
    ups = m.update({"upload": "live"})
    assert len(ups) == 1 and ups[0].batch and len(ups[0].readings) == 37
    assert [u.batch for u in m.step(START + 3 * 3600 + 600)] == [False, False]
