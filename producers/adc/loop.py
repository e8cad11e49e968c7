"""The adc producer's main loop: sample each circuit, compute, publish, every ``interval``.

The energy counters the loop integrates go out through a ``StateSaver`` that publishes each circuit's state
*before* the reading carrying the same totals (``after_acked=False``): nobody else counts this energy, so
after a crash the restored counters must never be behind a reading the broker already has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bus import topics
from bus.producer import ProducerContext
from bus.state import StateSaver
from producers.adc.circuit import CircuitRunner
from producers.adc.config import Config
from producers.adc.device import open_device
from producers.adc.sampler import Sampler

OFFLINE_AFTER = 3
"""Consecutive failed windows after which a circuit's device is reported offline."""


def run(ctx: ProducerContext, cfg: Config) -> None:
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
    saver = StateSaver(ctx, after_acked=False, name="adc-state")

    local_voltage: dict[str, list[CircuitRunner]] = {}  # our own device -> circuits that take its voltage
    for r in runners:
        if r.remote is None:
            continue
        source, device = r.circuit.voltage_from.split("/", 1)
        if source == ctx.source and device in by_device and by_device[device].has_voltage:
            local_voltage.setdefault(device, []).append(r)
        else:
            topic = topics.reading(source, device)
            ctx.subscribe(topic, _voltage_callback(ctx, r, topic))

    try:
        spi = open_device(cfg)
    except (OSError, RuntimeError) as exc:
        ctx.log.error("cannot open the %s (spi %s, bus %d, cs %d): %s", cfg.chip.upper(), cfg.spi,
                      cfg.spi_bus, cfg.spi_cs, exc)
        for r in runners:
            ctx.set_device_status(r.device, False)
        raise SystemExit(1) from None
    adc = Sampler(spi, cfg.chip)
    failures = {r.device: 0 for r in runners}
    for r in runners:
        ctx.set_device_status(r.device, True)
    where = "the emulator" if cfg.spi == "sim" else f"/dev/spidev{cfg.spi_bus}.{cfg.spi_cs}"
    ctx.log.info("sampling %d circuit(s) on the %s on %s: %d samples per wave, %d waves per reading, "
                 "every %g s", len(runners), cfg.chip.upper(), where,
                 cfg.samples_per_wave, cfg.waves_per_reading, cfg.interval)
    next_at = time.monotonic()
    try:
        while not ctx.stopping.is_set():
            for r in runners:
                if ctx.stopping.is_set():
                    break
                _read_circuit(ctx, cfg, adc, r, failures, local_voltage, saver)
            next_at += cfg.interval
            delay = next_at - time.monotonic()
            if delay < 0:
                ctx.counters.inc("overruns")
                next_at = time.monotonic()
            if ctx.wait(delay):
                break
    finally:
        spi.close()
        saver.save_now()
        for r in runners:
            ctx.set_device_status(r.device, False)


def _read_circuit(ctx: ProducerContext, cfg: Config, adc: Sampler, r: CircuitRunner, failures: dict[str, int],
                  local_voltage: dict[str, list[CircuitRunner]], saver: StateSaver) -> None:
    try:
        m = r.measure(adc, cfg.steps, cfg.step_ns)
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
    if m.late_steps:
        ctx.counters.inc("late_steps", m.late_steps)
    analysis = m.analysis
    if m.windows > 1:
        ctx.counters.inc("resampled_windows", m.windows - 1)
    if not m.usable:
        ctx.counters.inc("unusable_readings")
        ctx.bad_input_log.warning(f"busy-{r.device}", "%s: the host disturbed %d windows in a row too "
                                  "much to measure (see unusable_readings): no reading this time", r.device,
                                  m.windows)
        return
    ctx.counters.inc("samples", analysis.samples)
    if analysis.holes:
        ctx.counters.inc("sampling_holes", analysis.holes)
    if analysis.untrusted:
        ctx.counters.inc("untrusted_samples", analysis.untrusted)
    if analysis.clipped:
        ctx.counters.inc("clipped_samples", analysis.clipped)
        ctx.bad_input_log.warning(f"clip-{r.device}", "%s: %d samples at the ADC's limits (0 or full scale): "
                                  "the input exceeds the range, readings are too low", r.device,
                                  analysis.clipped)
    before = r.used_nominal
    metrics = r.metrics(analysis, time.monotonic())
    if r.used_nominal != before and r.remote is not None:
        ctx.counters.inc("nominal_voltage_used")
    ts = int(time.time() * 1000)
    saver.offer(r.device, r.energy.state(ts))
    ctx.publish_reading(r.device, metrics, ts=ts, period_s=cfg.interval)
    if analysis.vrms is not None:
        for other in local_voltage.get(r.device, ()):
            other.remote.set(analysis.vrms)


def _voltage_callback(ctx: ProducerContext, r: CircuitRunner, topic: str) -> Callable[[str, bytes], None]:
    def on_message(_topic: str, payload: bytes) -> None:
        problem = r.remote.on_message(payload)
        if problem:
            ctx.counters.inc("bad_voltage_messages")
            ctx.dead_letter(payload, f"{r.device}: voltage_from message unusable: {problem}", topic)

    return on_message
