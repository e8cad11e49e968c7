"""The sim producer's config: site-wide clock settings plus one parameter set per simulated meter.

``MeterParams`` is also what a meter accepts on ``sim/{serial}/config/set`` at run time, so the file
and the remote path share one validator; ``HELP`` says in words what each key expects, for the error a
remote sender gets back (msgspec's own messages do not show the offending value).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from bus.config import PluginConfig
from bus.envelope import NAME_PATTERN

NonNeg = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Hour = Annotated[float, msgspec.Meta(ge=0, lt=24)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
Upload = Literal["live", "daily"]


class MeterParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How one simulated household behaves; every key can be changed live over MQTT."""

    daily_kwh: Positive = 10.0
    base_w: NonNeg = 150.0
    morning_peak_hour: Hour = 7.5
    evening_peak_hour: Hour = 19.0
    weekend_factor: Positive = 1.15
    weekend_shift_h: Annotated[float, msgspec.Meta(ge=-6, le=6)] = 1.5
    season_amplitude: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.25
    day_variation: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.15
    noise: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    appliances: bool = True
    solar_kwp: NonNeg = 0.0
    cloudiness: Share = 0.7
    ev_kw: NonNeg = 0.0
    ev_sessions_per_week: Annotated[float, msgspec.Meta(ge=0, le=7)] = 3.0
    ev_kwh: Positive = 15.0
    upload: Upload | None = None

    def __post_init__(self) -> None:
        if self.base_w * 24 > 0.8 * self.daily_kwh * 1000:
            raise ValueError(f"`base_w` must be at most {0.8 * self.daily_kwh * 1000 / 24:.0f} W for "
                             f"daily_kwh = {self.daily_kwh:g} (the always-on load can use at most 80 % "
                             f"of the day's energy); got {self.base_w:g}")


HELP: dict[str, str] = {
    "daily_kwh": "a number > 0 (average household consumption in kWh per day, EV excluded)",
    "base_w": "a number >= 0 (always-on load in W, at most 80 % of daily_kwh spread over 24 h)",
    "morning_peak_hour": "a local hour 0 <= h < 24 (where the weekday morning peak sits, e.g. 7.5)",
    "evening_peak_hour": "a local hour 0 <= h < 24 (where the evening peak sits, e.g. 19)",
    "weekend_factor": "a number > 0 (a weekend day's energy relative to a weekday's)",
    "weekend_shift_h": "hours -6..6 (how much later the weekend morning peak comes)",
    "season_amplitude": "a share 0 <= a < 1 (winter uses 1 + a, summer 1 - a times the average)",
    "day_variation": "a share 0..1 (day-to-day spread of the daily energy, log-normal sigma)",
    "noise": "a share 0..1 (minute-to-minute spread of the household's activity)",
    "appliances": "true or false (kettle, oven, washing machine... switching events)",
    "solar_kwp": "a number >= 0 (PV peak power in kWp; 0 = no solar)",
    "cloudiness": "a share 0..1 (average cloud cover; 0 = always clear sky)",
    "ev_kw": "a number >= 0 (EV charger power in kW; 0 = no EV)",
    "ev_sessions_per_week": "a number 0..7 (EV charging sessions per week, at most one a day)",
    "ev_kwh": "a number > 0 (average energy of one EV charging session in kWh)",
    "upload": "\"live\" or \"daily\" (each reading as it happens, or the previous day as one batch)",
}


class MeterConfig(MeterParams, kw_only=True, forbid_unknown_fields=True):
    """One meter in the file: its serial (the device name on the bus) and its parameters."""

    serial: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    """``[producer.NAME] type = "sim"``; meters in ``[[producer.NAME.meters]]`` tables."""

    role: Literal["grid"] = "grid"
    interval: Annotated[float, msgspec.Meta(ge=1)] = 300.0
    upload: Upload = "live"
    speed: Positive = 1.0
    start: str | None = None
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0
    heartbeat: Positive = 60.0
    backfill_days: NonNeg = 2.0
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    meters: Annotated[list[MeterConfig], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [MeterConfig(serial="sim1")])

    def __post_init__(self) -> None:
        if self.start is not None:
            try:
                datetime.fromisoformat(self.start)
            except ValueError:
                raise ValueError(f"`start` must be an ISO date or date-time like \"2024-06-01\" or "
                                 f"\"2024-06-01T06:00\" (local in site.timezone); got {self.start!r}"
                                 ) from None
        serials = [m.serial for m in self.meters]
        dupes = sorted({s for s in serials if serials.count(s) > 1})
        if dupes:
            raise ValueError(f"`meters`: serial {dupes[0]!r} appears more than once; serials must be unique")


PARAM_KEYS: tuple[str, ...] = MeterParams.__struct_fields__


def params_of(meter: MeterParams) -> dict[str, Any]:
    """The parameter keys of a meter (without its serial) as a plain dict."""
    return {k: getattr(meter, k) for k in PARAM_KEYS}


def effective(file: MeterParams, overrides: dict[str, Any]) -> MeterParams:
    """The parameters a meter runs: its file values with the remote overrides on top.

    Raises ValueError with a message naming the key, what it expects and the value it got.
    """
    merged = params_of(file) | overrides
    try:
        return msgspec.convert(merged, MeterParams)
    except msgspec.ValidationError as exc:
        text = str(exc)
        key = text.rsplit("$.", 1)[1].rstrip("`") if "$." in text else None
        if key in HELP:
            raise ValueError(f"{key}: expected {HELP[key]}; got {merged[key]!r}") from None
        if text.startswith("`") and "`" in text[1:]:  # a __post_init__ check: "`key` must be ..."
            key, rest = text[1:].split("`", 1)
            text = f"{key}:{rest}"
        raise ValueError(text) from None


def merge_update(file: MeterParams, overrides: dict[str, Any],
                 update: Any) -> tuple[MeterParams, dict[str, Any]]:
    """Apply a remote update: (parameters now in force, the new overrides).

    ``update`` is the decoded JSON object of keys to change; a key set to null goes back to its value
    from the config file. Raises ValueError (key, what is expected, what came) and changes nothing.
    """
    if not isinstance(update, dict):
        raise ValueError("payload: expected a JSON object of keys to change, like {\"daily_kwh\": 12}")
    unknown = [k for k in update if k not in PARAM_KEYS]
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key; expected one of: {', '.join(PARAM_KEYS)}")
    new = dict(overrides)
    for key, value in update.items():
        if value is None:
            new.pop(key, None)
        else:
            new[key] = value
    params = effective(file, new)
    return params, {k: getattr(params, k) for k in new}
