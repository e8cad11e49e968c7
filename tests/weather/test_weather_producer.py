"""The weather producer against the emulated services over HTTP, on a fake clock: current conditions as
readings, the forecast as a retained batch of future hours with a PV estimate, for both providers; what a
wrong key, a rate limit and garbage do."""

from __future__ import annotations

import numpy as np
import pytest
from weather_support import JUNE, KEY, Forecasts, context, poller

from bus import solar
from bus.clock import EmulatedClock
from bus.config import ConfigError
from producers.weather.emulator import EmulatedWeather

LAT, LON = 50.85, 4.35


def test_open_meteo_current_conditions_and_forecast():
    clock = EmulatedClock(JUNE)
    with EmulatedWeather(clock=clock) as emu:
        ctx, forecasts = context(clock), Forecasts()
        assert poller(ctx, emu, forecasts, pv_peak_w=5000).poll_once()
        sky = emu.sky
    [r] = ctx.readings
    t_cur = JUNE - JUNE % 900                               # Open-Meteo's 15-minute grid
    assert r.ts == t_cur * 1000 and r.period_s == 900 and r.device == "weather"
    assert r.metrics["temperature_c"] == pytest.approx(float(sky.temperature(np.array([t_cur]), LAT, LON)[0]),
                                                       abs=0.05)
    cover = float(sky.cloud_cover(np.array([t_cur]))[0]) * 100
    assert r.metrics["cloud_cover_pct"] == pytest.approx(cover, abs=0.5)
    ghi = float(sky.ghi_mean(np.array([t_cur]), 900, LAT, LON)[0])
    assert r.metrics["irradiance_w_m2"] == pytest.approx(ghi, abs=0.05)
    assert r.metrics["pv_estimate_w"] == pytest.approx(5000 * ghi / 1000, abs=0.1)
    [(topic, points)] = forecasts
    assert topic == "weather/weather/forecast"
    hour = JUNE - JUNE % 3600
    # from the hour in progress (its ts is its end) on
    assert [p.ts for p in points] == [int(hour + 3600 * k) * 1000 for k in range(1, 49)]
    keys = {"temperature_c", "cloud_cover_pct", "irradiance_w_m2", "pv_estimate_w"}
    assert all(p.period_s == 3600 and set(p.metrics) == keys for p in points)
    night = [p for p in points if p.metrics["irradiance_w_m2"] == 0]
    assert night and all(p.metrics["pv_estimate_w"] == 0 for p in night)
    assert max(p.metrics["pv_estimate_w"] for p in points) > 1000


def test_openweathermap_with_the_key_from_a_file(tmp_path):
    key_file = tmp_path / "owm.key"
    key_file.write_text(KEY + "\n")
    clock = EmulatedClock(JUNE)
    with EmulatedWeather(clock=clock, owm_key=KEY) as emu:
        ctx, forecasts = context(clock, "owm"), Forecasts()
        assert poller(ctx, emu, forecasts, provider="openweathermap", api_key_file=str(key_file),
                      pv_peak_w=5000).poll_once()
        sky = emu.sky
    [r] = ctx.readings
    assert r.ts == int(JUNE) * 1000 and r.period_s == 0
    assert r.metrics["cloud_cover_pct"] == round(float(sky.cloud_cover(np.array([int(JUNE)]))[0]) * 100)
    assert "irradiance_w_m2" not in r.metrics                # One Call has none
    cover = r.metrics["cloud_cover_pct"] / 100                # the estimate: clear sky behind the clouds
    clear = float(solar.clear_sky_ghi(solar.cos_zenith(np.array([JUNE]), LAT, LON))[0])
    assert r.metrics["pv_estimate_w"] == pytest.approx(5000 * clear * float(solar.cloud_factor(cover)) / 1000,
                                                       abs=0.05)  # published to 0.1 W
    [(_, points)] = forecasts
    # One Call gives 48 hours from the start of this one: the 47 still ahead
    assert len(points) == 47 and all("temperature_c" in p.metrics and "pv_estimate_w" in p.metrics
                                     for p in points)


def test_a_wrong_key_is_an_auth_failure_not_retried_and_never_logged(tmp_path, caplog):
    key_file = tmp_path / "owm.key"
    key_file.write_text("not-the-key-at-all\n")
    clock = EmulatedClock(JUNE)
    with EmulatedWeather(clock=clock, owm_key=KEY) as emu:
        ctx = context(clock)
        assert not poller(ctx, emu, provider="openweathermap", api_key_file=str(key_file)).poll_once()
        assert emu.requests["/data/3.0/onecall"] == 1
    assert ctx.count("auth_failures") == 1 and ctx.count("retries") == 0
    assert str(key_file) in caplog.text and "not-the-key-at-all" not in caplog.text
    assert ctx.device_status == [("weather", False)]


def test_an_unreadable_key_file_is_a_config_error(tmp_path):
    with EmulatedWeather(clock=EmulatedClock(JUNE)) as emu:
        with pytest.raises(ConfigError, match="api_key_file.*cannot read"):
            poller(context(EmulatedClock(JUNE)), emu, provider="openweathermap",
                   api_key_file=str(tmp_path / "missing.key"))


@pytest.mark.parametrize("fault,counter", [("http500", "http_errors"), ("garbage", "bad_responses"),
                                           ("drop", "transport_errors")])
def test_a_failed_attempt_is_retried_and_the_fetch_still_succeeds(fault, counter):
    clock = EmulatedClock(JUNE)
    with EmulatedWeather(clock=clock) as emu:
        emu.faults.arm(fault, 1)
        ctx = context(clock)
        assert poller(ctx, emu).poll_once()
    assert ctx.count(counter) == 1 and ctx.count("retries") == 1 and len(ctx.readings) == 1


def test_a_rate_limit_waits_for_the_next_interval():
    clock = EmulatedClock(JUNE)
    with EmulatedWeather(clock=clock) as emu:
        emu.faults.arm("ratelimit", 1)
        ctx = context(clock)
        p = poller(ctx, emu, interval=900)
        assert not p.poll_once()
        clock.advance(900)
        assert p.poll_once()
    assert ctx.count("rate_limited") == 1 and ctx.count("retries") == 0
    assert [s for _, s in ctx.device_status] == [False, True]


def test_garbage_every_time_goes_to_the_dlq():
    clock = EmulatedClock(JUNE)
    with EmulatedWeather(clock=clock) as emu:
        emu.faults.arm("garbage", 3)
        ctx = context(clock)
        assert not poller(ctx, emu, retries=3).poll_once()
    [(payload, reason)] = ctx.dead
    assert b"<html>" in payload and "not JSON" in reason and ctx.count("fetch_failures") == 1


def test_the_same_observation_is_published_once_and_the_forecast_follows_the_clock():
    clock = EmulatedClock(JUNE)
    with EmulatedWeather(clock=clock) as emu:
        ctx, forecasts = context(clock), Forecasts()
        p = poller(ctx, emu, forecasts)
        assert p.poll_once()
        clock.advance(300)                        # the same 15-minute slot
        p.poll_once()
        clock.advance(3600)
        assert p.poll_once()
    assert len(ctx.readings) == 2 and ctx.count("stale_readings") == 1
    assert len(forecasts) == 3 and forecasts[-1][1][0].ts > forecasts[0][1][0].ts
