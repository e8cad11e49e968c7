"""The ADC the adc producer reads: ``spidev`` on a Pi, or the emulator wired as the config describes.

Both answer ``xfer2`` the same way, so the loop never knows which one it has. The emulator gets mains on every
voltage channel and each circuit's ``sim`` load on its current channels, seen through the same calibrations
the reader uses, so the readings come back as the config's ``sim`` tables say.
"""

from __future__ import annotations

from typing import Any

from bus.clock import HostClock
from producers.adc.config import Config, _listify
from producers.adc.emulator import Harmonic, Jitter, LoadCurve, McpEmulator, circuit_waveforms
from producers.adc.sampler import open_spidev


def _harmonics(specs: list[list[float]]) -> tuple[Harmonic, ...]:
    return tuple(Harmonic(int(h[0]), h[1], h[2] if len(h) > 2 else 0.0) for h in specs)


def build_emulator(cfg: Config, realtime: bool = True) -> McpEmulator:
    """The emulated chip wired as the config describes: mains on every voltage channel, each circuit's
    ``sim`` load on its current channels, seen through the same calibrations the reader uses; on the host's
    clock with jitter when ``sim.clock = "host"``."""
    g = cfg.sim
    freq = g.frequency_hz or cfg.mains_hz
    channels = {}
    for c in cfg.circuits.values():
        n = len(c.current_channels)
        amps = c.sim.current_a if isinstance(c.sim.current_a, list) else [c.sim.current_a] * n
        pfs = c.sim.power_factor if isinstance(c.sim.power_factor, list) else [c.sim.power_factor] * n
        profile = LoadCurve(tuple((float(t), float(s)) for t, s in c.sim.profile)) if c.sim.profile else None
        sim = c.sim
        cals = c.current_cals if sim.current_cal is None else _listify(sim.current_cal, n)
        leads = c.phases_deg if sim.phase_deg is None else _listify(sim.phase_deg, n)
        channels.update(circuit_waveforms(
            vref=cfg.vref, frequency_hz=freq, voltage_channel=c.voltage_channel, voltage_v=g.voltage_v,
            voltage_cal=sim.voltage_cal or c.voltage_cal, current_channels=c.current_channels,
            currents_a=amps, power_factors=pfs, current_cal=cals, bias_v=g.bias_v, noise_v=g.noise_v,
            voltage_harmonics=_harmonics(g.harmonics), current_harmonics=_harmonics(sim.harmonics),
            profile=profile, lagging=sim.lagging, sensor_lead_deg=leads))
    period = g.sample_period_us * 1e-6 if g.sample_period_us else 24 / cfg.max_speed_hz
    j = g.jitter
    host = Jitter(late_p=j.late_p, late_max_s=j.late_max_us * 1e-6, preempt_every=j.preempt_every,
                  preempt_s=j.preempt_ms * 1e-3, slow_p=j.slow_p, slow_s=j.slow_us * 1e-6,
                  seed=g.seed) if g.clock == "host" else None
    return McpEmulator(channels, vref=cfg.vref, chip=cfg.chip, sample_period_s=period, seed=g.seed,
                       realtime=HostClock() if realtime else None, host=host)


def open_device(cfg: Config) -> Any:
    """spidev on a Pi, or the emulator; both answer ``xfer2`` the same way."""
    if cfg.spi == "sim":
        spi = build_emulator(cfg)
        spi.open(cfg.spi_bus, cfg.spi_cs)
        spi.mode = cfg.spi_mode
        spi.max_speed_hz = cfg.max_speed_hz
        return spi
    return open_spidev(cfg.spi_bus, cfg.spi_cs, cfg.max_speed_hz, cfg.spi_mode)
