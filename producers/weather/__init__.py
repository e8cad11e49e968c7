"""weather producer: current weather and an hourly forecast (temperature, cloud cover, irradiance where the
service gives it, and a PV estimate for the site's panels) from Open-Meteo or OpenWeatherMap.

Current conditions are readings on ``weather/{device}/reading``; the forecast is a reading batch with future
timestamps, retained on ``weather/{device}/forecast`` (never on the reading topic: a forecast is not a
measurement, and its timestamps are outside the plausibility window readings must keep). See README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from bus.config import ConfigError, PluginConfig
from bus.envelope import NAME_PATTERN
from bus.plugin import Plugin
from bus.secrets import SecretError, read_secret


if TYPE_CHECKING:
    from bus.producer import ProducerContext

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
BASE_URLS = {"open-meteo": "https://api.open-meteo.com", "openweathermap": "https://api.openweathermap.org"}


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    """``[producer.NAME] type = "weather"``."""

    provider: Literal["open-meteo", "openweathermap"] = "open-meteo"
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    device: Name | None = None
    """Device name on the bus (default: the section name)."""
    interval: Annotated[float, msgspec.Meta(ge=60, le=86400)] = 900.0
    """Seconds between requests (Open-Meteo's current values change every 15 min)."""
    forecast_hours: Annotated[int, msgspec.Meta(ge=1, le=384)] = 48
    pv_peak_w: Annotated[float, msgspec.Meta(gt=0, le=1e7)] | None = None
    """The panels' peak AC power; set it for ``pv_estimate_w`` in readings and forecast."""
    base_url: str | None = None
    """The service's address (default: the provider's public one; the emulator's for tests and the demo)."""
    api_key_file: str | None = None
    """OpenWeatherMap: the file holding the API key (first line)."""
    api_key_env: str | None = None
    """... or the environment variable holding it."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    retries: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3

    def __post_init__(self) -> None:
        if self.provider == "openweathermap" and not (self.api_key_file or self.api_key_env):
            raise ValueError("`api_key_file`: OpenWeatherMap needs an API key: the file that holds it "
                             "(or `api_key_env`, a variable)")
        if self.api_key_file and self.api_key_env:
            raise ValueError("`api_key_file`: give api_key_file or api_key_env, not both")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"`base_url`: an http:// or https:// URL, got {self.base_url!r}")

    @property
    def url(self) -> str:
        return (self.base_url or BASE_URLS[self.provider]).rstrip("/")

    def api_key(self, section: str) -> str | None:
        try:
            return read_secret(self.api_key_file, self.api_key_env, env_required=True)
        except SecretError as exc:
            key = "api_key_file" if self.api_key_file else "api_key_env"
            raise ConfigError([f"producer.{section}.{key}: {exc}"]) from None


def run(ctx: ProducerContext, cfg: Config) -> None:
    """Fetch current weather and forecast every ``interval`` until ``ctx.stopping`` is set."""
    from .poller import Poller

    Poller(ctx, cfg).run()


def emulator(argv: list[str]) -> int:
    """``wattbus emulate weather``: Open-Meteo and OpenWeatherMap One Call 3.0 on one port
    (``emulator.py``)."""
    from .emulator import main

    return main(argv)


def metric_keys() -> list[str]:
    from .providers import metric_keys as keys  # numpy: only when asked

    return keys()


PLUGIN = Plugin("producer", "weather", Config, run, emulator=emulator,
                demo=Path(__file__).with_name("demo.toml"), metrics=metric_keys)

__all__ = ["Config", "PLUGIN", "run"]
