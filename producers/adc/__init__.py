"""adc producer: an MCP3208 (or MCP3008) on SPI measuring mains voltage and CT currents, emonLib-style (the
seed's EnergyMonitor collector, on MQTT).

Each circuit (a voltage channel and one or more current channels, or current only) is sampled for
``samples_per_wave * waves_per_reading`` steps, analysed with numpy and published as one device every
``interval``: power, apparent power, power factor, voltage, current, frequency and energy counters that
survive restarts through the retained ``state`` message. ``spi = "sim"`` runs on the bit-exact emulator.
``wattbus calibrate adc CIRCUIT`` finds the calibration against a reference meter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bus.plugin import Plugin
from producers.adc.config import Circuit, Config, SimCircuit, SimGrid

if TYPE_CHECKING:
    from bus.producer import ProducerContext


def run(ctx: ProducerContext, cfg: Config) -> None:
    from producers.adc.loop import run as loop

    loop(ctx, cfg)


def bench(argv: list[str]) -> int:
    from producers.adc.bench import bench as measure

    return measure(argv)


def calibrate(app: Any, name: str, argv: list[str]) -> Any:
    from producers.adc.calibrate import calibrate as walk_through

    return walk_through(app, name, argv)


def metrics() -> list[str]:
    from producers.adc.circuit import METRICS

    return list(METRICS)


PLUGIN = Plugin("producer", "adc", Config, run, bench=bench, demo=Path(__file__).with_name("demo.toml"),
                calibrate=calibrate, metrics=metrics)

__all__ = ["Circuit", "Config", "PLUGIN", "SimCircuit", "SimGrid", "run"]
