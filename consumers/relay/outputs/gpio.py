"""A relay on a GPIO pin through gpiozero (a Pi's real pins; tests use gpiozero's MockFactory)."""

from __future__ import annotations

from consumers.relay.outputs.config import GpioConfig
from consumers.relay.outputs.retry import NotConfirmed, until_confirmed


class GpioOutput:
    kind = "gpio"

    def __init__(self, cfg: GpioConfig) -> None:
        from gpiozero import OutputDevice

        self.cfg = cfg
        self.device = OutputDevice(cfg.pin, active_high=cfg.active_high, initial_value=False)

    def set(self, on: bool) -> None:
        def attempt() -> None:
            self.device.value = on
            if bool(self.device.value) != on:  # read back from the pin
                raise NotConfirmed(f"pin {self.cfg.pin} reads {'on' if self.device.value else 'off'}")

        until_confirmed(attempt, self.cfg.retries, f"GPIO {self.cfg.pin} {'on' if on else 'off'}")

    def close(self) -> None:
        self.device.close()
