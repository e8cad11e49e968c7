"""The adc producer's main loop: sample each circuit, compute, publish, every ``interval``."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from producers.adc.circuit import CircuitRunner
from producers.adc.config import Config
from producers.adc.emulator import Harmonic, Mcp3208Emulator, Profile, circuit_waveforms, host_time
from producers.adc.mcp3208 import Mcp3208, open_spidev

OFFLINE_AFTER = 3
"""Consecutive failed windows after which a circuit's device is reported offline."""


def _harmonics(specs: list[list[float]]) -> tuple[Harmonic, ...]:
    return tuple(Harmonic(int(h[0]), h[1], h[2] if len(h) > 2 else 0.0) for h in specs)


def build_emulator(cfg: Config, realtime: bool = True) -> Mcp3208Emulator:
    """The emulated MCP3208 wired as the config describes: mains on every voltage channel, each circuit's
    ``sim`` load on its current channels, seen through the same calibrations the reader uses."""
    g = cfg.sim
    freq = g.frequency_hz or cfg.mains_hz
    channels = {}
    for c in cfg.circuits.values():
        n = len(c.current_channels)
        amps = c.sim.current_a if isinstance(c.sim.current_a, list) else [c.sim.current_a] * n
        pfs = c.sim.power_factor if isinstance(c.sim.power_factor, list) else [c.sim.power_factor] * n
        profile = Profile(tuple((float(t), float(s)) for t, s in c.sim.profile)) if c.sim.profile else None
        channels.update(circuit_waveforms(
            vref=cfg.vref, frequency_hz=freq, voltage_channel=c.voltage_channel, voltage_v=g.voltage_v,
            voltage_cal=c.voltage_cal, current_channels=c.current_channels, currents_a=amps,
            power_factors=pfs, current_cal=c.current_cals, bias_v=g.bias_v, noise_v=g.noise_v,
            voltage_harmonics=_harmonics(g.harmonics), current_harmonics=_harmonics(c.sim.harmonics),
            profile=profile, lagging=c.sim.lagging))
    period = g.sample_period_us * 1e-6 if g.sample_period_us else 24 / cfg.max_speed_hz
    return Mcp3208Emulator(channels, vref=cfg.vref, sample_period_s=period, seed=g.seed,
                           realtime=host_time if realtime else None)


def open_device(cfg: Config) -> Any:
    """spidev on a Pi, or the emulator; both answer ``xfer2`` the same way."""
    if cfg.spi == "sim":
        spi = build_emulator(cfg)
        spi.open(cfg.spi_bus, cfg.spi_cs)
        spi.mode = cfg.spi_mode
        spi.max_speed_hz = cfg.max_speed_hz
        return spi
    return open_spidev(cfg.spi_bus, cfg.spi_cs, cfg.max_speed_hz, cfg.spi_mode)


def run(ctx, cfg: Config) -> None:
    runners = [CircuitRunner(name, c, cfg) for name, c in cfg.circuits.items()]
    by_device = {r.device: r for r in runners}
    window_s = len(runners) * cfg.waves_per_reading / cfg.mains_hz
    if cfg.spi != "sim" and window_s > cfg.interval:  # the emulator samples in emulated time
        ctx.log.warning("sampling %d circuit(s) takes %.2f s, more than interval = %g s: readings will "
                        "come as fast as sampling allows", len(runners), window_s, cfg.interval)

    # One retained-state lookup per device, side by side: each may wait its full timeout when the
    # broker has no state yet (first start), and several circuits must not add those up.
    with ThreadPoolExecutor(max_workers=len(runners)) as pool:
        states = list(pool.map(lambda r: ctx.load_state(r.device), runners))
    for r, state in zip(runners, states, strict=True):
        problem = r.energy.restore(state)
        if problem:
            ctx.counters.inc("bad_state")
            ctx.log.warning("%s: starting the energy counters from 0: %s", r.device, problem)
        ctx.log.info("%s: energy import %.3f Wh, export %.3f Wh", r.device, r.energy.import_wh,
                     r.energy.export_wh)
    if ctx.stopping.is_set():
        return

    local_voltage: dict[str, list[CircuitRunner]] = {}  # our own device -> circuits that take its voltage
    for r in runners:
        if r.remote is None:
            continue
        source, device = r.circuit.voltage_from.split("/", 1)
        if source == ctx.source and device in by_device and by_device[device].has_voltage:
            local_voltage.setdefault(device, []).append(r)
        else:
            ctx.subscribe(f"{r.circuit.voltage_from}/reading", _voltage_callback(ctx, r))

    try:
        spi = open_device(cfg)
    except (OSError, RuntimeError) as exc:
        ctx.log.error("cannot open the MCP3208 (spi %s, bus %d, cs %d): %s", cfg.spi, cfg.spi_bus,
                      cfg.spi_cs, exc)
        for r in runners:
            ctx.set_device_status(r.device, False)
        raise SystemExit(1) from None
    adc = Mcp3208(spi)
    failures = {r.device: 0 for r in runners}
    for r in runners:
        ctx.set_device_status(r.device, True)
    where = "the emulator" if cfg.spi == "sim" else f"/dev/spidev{cfg.spi_bus}.{cfg.spi_cs}"
    ctx.log.info("sampling %d circuit(s) on %s: %d samples per wave, %d waves per reading, every %g s",
                 len(runners), where,
                 cfg.samples_per_wave, cfg.waves_per_reading, cfg.interval)
    next_at = time.monotonic()
    try:
        while not ctx.stopping.is_set():
            for r in runners:
                if ctx.stopping.is_set():
                    break
                _read_circuit(ctx, cfg, adc, r, failures, local_voltage)
            next_at += cfg.interval
            delay = next_at - time.monotonic()
            if delay < 0:
                ctx.counters.inc("overruns")
                next_at = time.monotonic()
            if ctx.wait(delay):
                break
    finally:
        spi.close()
        for r in runners:
            ctx.set_device_status(r.device, False)


def _read_circuit(ctx, cfg: Config, adc: Mcp3208, r: CircuitRunner, failures: dict[str, int],
                  local_voltage: dict[str, list[CircuitRunner]]) -> None:
    try:
        window = adc.sample(r.channels, cfg.steps, cfg.step_ns)
    except OSError as exc:
        ctx.counters.inc("read_errors")
        ctx.bad_input_log.warning(f"spi-{r.device}", "%s: SPI transfer failed: %s", r.device, exc)
        failures[r.device] += 1
        if failures[r.device] == OFFLINE_AFTER:
            ctx.set_device_status(r.device, False)
        return
    if failures[r.device] >= OFFLINE_AFTER:
        ctx.set_device_status(r.device, True)
    failures[r.device] = 0
    if window.late_steps:
        ctx.counters.inc("late_steps", window.late_steps)
    analysis = r.analyse(window)
    ctx.counters.inc("samples", analysis.samples)
    if analysis.clipped:
        ctx.counters.inc("clipped_samples", analysis.clipped)
        ctx.bad_input_log.warning(f"clip-{r.device}", "%s: %d samples at the ADC's limits (0 or 4095): "
                                  "the input exceeds the range, readings are too low", r.device,
                                  analysis.clipped)
    before = r.used_nominal
    metrics = r.metrics(analysis, time.monotonic())
    if r.used_nominal != before and r.remote is not None:
        ctx.counters.inc("nominal_voltage_used")
    ts = int(time.time() * 1000)
    if _connected(ctx):
        ctx.save_state(r.device, r.energy.state(ts))
    ctx.publish_reading(r.device, metrics, ts=ts, period_s=cfg.interval)
    if analysis.vrms is not None:
        for other in local_voltage.get(r.device, ()):
            other.remote.set(analysis.vrms)


def _connected(ctx) -> bool:
    """Retained state only while connected: a day offline must not queue 86,400 stale states."""
    connected = getattr(getattr(ctx, "client", None), "connected", None)
    return connected is None or connected.is_set()


def _voltage_callback(ctx, r: CircuitRunner):
    topic = f"{r.circuit.voltage_from}/reading"

    def on_message(_topic: str, payload: bytes) -> None:
        problem = r.remote.on_message(payload)
        if problem:
            ctx.counters.inc("bad_voltage_messages")
            ctx.dead_letter(payload, f"{r.device}: voltage_from message unusable: {problem}", topic)

    return on_message
