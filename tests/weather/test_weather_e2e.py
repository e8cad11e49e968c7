"""``wattbus run`` with a weather producer against the emulated Open-Meteo and a real Mosquitto: a reading on
the reading topic, the forecast retained on the forecast topic (a late subscriber gets it at once, it decodes
as a reading batch of hours ahead), and nothing of the forecast on the reading topic."""

from __future__ import annotations

import time

import pytest

from bus import envelope
from bus.clock import HostClock
from producers.weather.emulator import EmulatedWeather
from tests.conftest import unique
from tests.support.processes import write_config

pytestmark = pytest.mark.timeout(90)


def test_reading_and_retained_forecast_through_the_broker(broker, processes, collector_factory, tmp_path):
    name = unique("weather")
    with EmulatedWeather(clock=HostClock()) as emu:
        cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
            [producer.{name}]
            type = "weather"
            base_url = "{emu.url}"
            latitude = 50.85
            longitude = 4.35
            pv_peak_w = 6000
            interval = 60
            forecast_hours = 24
            """)
        live = collector_factory(broker, f"weather/{name}/#")
        p = processes(cfg, name)
        live.wait_for(lambda: live.on(f"weather/{name}/forecast") and live.on(f"weather/{name}/reading"),
                      what="a reading and a forecast")
        assert p.terminate() == 0
    [(_, payload, _)] = live.on(f"weather/{name}/reading")
    [r] = envelope.decode(payload)
    assert set(r.metrics) == {"temperature_c", "cloud_cover_pct", "irradiance_w_m2", "pv_estimate_w"}
    late = collector_factory(broker, f"weather/{name}/forecast")     # subscribes after the fact
    late.wait_for(lambda: late.on(f"weather/{name}/forecast"), what="the retained forecast")
    [(_, forecast, retained)] = late.on(f"weather/{name}/forecast")
    assert retained
    points = envelope.decode(forecast)
    now_ms = time.time() * 1000
    assert len(points) == 24 and now_ms < points[0].ts <= now_ms + 3600_000   # the hour in progress, 23 more
    assert all(p.source == "weather" and p.device == name and p.period_s == 3600 for p in points)
    assert all(0 <= p.metrics["pv_estimate_w"] <= 6000 for p in points)
