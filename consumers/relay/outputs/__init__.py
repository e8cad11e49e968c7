"""The relay's outputs: the devices it switches, each confirming the switch in its own way.

Every kind answers ``set(on)`` only once the device itself says the output is in that state (the pin read
back, ``Switch.GetStatus``, Tasmota's ``stat/`` topic, the configured state topic); until then it retries,
and after ``retries`` it raises :class:`OutputError` with what went wrong, which the relay publishes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from consumers.relay.outputs.config import (GpioConfig, MqttConfig, ShellyHttpConfig, ShellyMqttConfig,
                                            TasmotaConfig)

if TYPE_CHECKING:
    from bus.mqtt import BusClient

OutputConfig = GpioConfig | ShellyHttpConfig | ShellyMqttConfig | TasmotaConfig | MqttConfig


class OutputError(Exception):
    """The device did not confirm the switch after the retries; the text says what happened."""


class Output(Protocol):
    kind: str

    def set(self, on: bool) -> None:
        """Switch, then wait for the device's confirmation (retrying); OutputError if it never comes.
        Blocking: called from the relay's worker thread."""

    def close(self) -> None: ...


def open_output(cfg: OutputConfig, client: BusClient, log: logging.Logger, name: str = "relay") -> Output:
    """The output a relay's ``output = {kind = ...}`` table describes, ready to switch."""
    if isinstance(cfg, GpioConfig):
        from consumers.relay.outputs.gpio import GpioOutput

        return GpioOutput(cfg)
    if isinstance(cfg, ShellyHttpConfig):
        from consumers.relay.outputs.shelly_http import ShellyHttpOutput

        return ShellyHttpOutput(cfg, log)
    from consumers.relay.outputs.mqtt import MqttOutput, ShellyMqttOutput, TasmotaOutput

    kinds = {ShellyMqttConfig: ShellyMqttOutput, TasmotaConfig: TasmotaOutput, MqttConfig: MqttOutput}
    return kinds[type(cfg)](cfg, client, log, name)


__all__ = ["Output", "OutputConfig", "OutputError", "open_output"]
