"""adc producer: an MCP3208 on SPI measuring mains voltage and CT currents, emonLib-style (the seed's
EnergyMonitor collector, on MQTT).

Each circuit (a voltage channel and one or more current channels, or current only) is sampled for
``samples_per_wave * waves_per_reading`` steps, analysed with numpy and published as one device every
``interval``: power, apparent power, power factor, voltage, current, frequency and energy counters that
survive restarts through the retained ``state`` message. ``spi = "sim"`` runs on the bit-exact emulator.
"""

from __future__ import annotations

from producers.adc.config import Circuit, Config, SimCircuit, SimGrid

__all__ = ["Circuit", "Config", "SimCircuit", "SimGrid", "run"]


def run(ctx, cfg: Config) -> None:
    from producers.adc.loop import run as loop

    loop(ctx, cfg)
