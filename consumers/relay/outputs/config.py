"""Config of each output kind: a tagged union on ``kind`` (``output = {kind = "tasmota", topic = "ev"}``)."""

from __future__ import annotations

import re

import msgspec

_TOPIC = re.compile(r"^[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*$")
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$")


def _topic(value: str, key: str) -> None:
    if not (0 < len(value) <= 200 and _TOPIC.match(value)):
        raise ValueError(f"`{key}`: expected MQTT topic levels of letters, digits, _ . : - (no wildcards), "
                         f"got {value[:80]!r}")


class _Common(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    retries: int = 3
    """Attempts after the first before the relay reports the device as not confirming."""
    timeout: float = 2.0
    """Seconds to wait for each confirmation."""

    def __post_init__(self) -> None:
        if not 0 <= self.retries <= 20:
            raise ValueError(f"`retries` must be 0..20, got {self.retries!r}")
        if not 0.05 <= self.timeout <= 60:
            raise ValueError(f"`timeout` must be 0.05..60 seconds, got {self.timeout!r}")


class GpioConfig(_Common, tag="gpio"):
    pin: int | str
    """BCM number (17) or a gpiozero pin name ("GPIO17", "BOARD11")."""
    active_high: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.pin, int) and not 0 <= self.pin <= 53:
            raise ValueError(f"`pin` must be a BCM GPIO number 0..53, got {self.pin!r}")
        if isinstance(self.pin, str) and not re.match(r"^(GPIO|BCM|BOARD|WPI|J8:)?\d{1,2}$", self.pin):
            raise ValueError(f"`pin`: expected a BCM number or a name like \"GPIO17\", got {self.pin[:40]!r}")


class ShellyHttpConfig(_Common, tag="shelly_http"):
    url: str
    """The device, e.g. "http://192.168.1.40"."""
    switch: int = 0
    password_file: str | None = None
    """Digest auth (user admin): the password in this file, never in the config."""
    password_env: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _URL.match(self.url):
            raise ValueError(f"`url`: expected http://HOST[:PORT], got {self.url[:80]!r}")
        if not 0 <= self.switch <= 15:
            raise ValueError(f"`switch` must be 0..15, got {self.switch!r}")


class ShellyMqttConfig(_Common, tag="shelly_mqtt"):
    prefix: str
    """The device's MQTT topic prefix (its id by default, e.g. "shellypro1-a8032ab12345")."""
    switch: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _topic(self.prefix, "prefix")
        if not 0 <= self.switch <= 15:
            raise ValueError(f"`switch` must be 0..15, got {self.switch!r}")


class TasmotaConfig(_Common, tag="tasmota"):
    topic: str
    """The device's Topic (``cmnd/{topic}/POWER``, confirmed on ``stat/{topic}/POWER``)."""
    index: int | None = None
    """POWER1..POWER8 on a multi-relay device; None = POWER."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _topic(self.topic, "topic")
        if self.index is not None and not 1 <= self.index <= 8:
            raise ValueError(f"`index` must be 1..8, got {self.index!r}")


class MqttConfig(_Common, tag="mqtt"):
    command_topic: str
    payload_on: str = "ON"
    payload_off: str = "OFF"
    state_topic: str | None = None
    """Where the device confirms; without it a switch is confirmed when the broker acknowledges it."""
    state_on: str | None = None
    """Default: payload_on."""
    state_off: str | None = None
    retain: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _topic(self.command_topic, "command_topic")
        if self.state_topic is not None:
            _topic(self.state_topic, "state_topic")
        for key in ("payload_on", "payload_off", "state_on", "state_off"):
            v = getattr(self, key)
            if v is not None and not 0 < len(v) <= 100:
                raise ValueError(f"`{key}` must be 1..100 characters")
