"""``wattbus bench adc``: how fast the maths and the emulated SPI path run, and how exact a reading stays when
the host's timing is not (printed, never asserted).

* maths: samples/s through ``power.analyse`` (DESIGN target: >= 1,000,000 samples/s on one core), for the
  default window (60 samples/wave x 10 waves, V + I) and a large one (V + 3 I, 50 waves);
* SPI: frames/s through the emulator's ``xfer2`` alone and through the sampling loop, and the loop's own cost
  per conversion against a do-nothing SPI device (what is left for the ioctl on a Pi);
* timing: readings of an exact 230 V / 10 A PF 0.8 sine sampled at this host's real clock with a Pi's habits
  injected (late wake-ups, a 5 ms preemption, slow transfers), analysed twice: as if the samples were where
  the schedule put them (what the maths did before, and what emonLib assumes) and at their recorded times.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from bus.clock import EmulatedClock
from producers.adc.chips import CHIPS
from producers.adc.emulator import Jitter, McpEmulator, Waveform, circuit_waveforms
from producers.adc.power import analyse, ratio
from producers.adc.sampler import Sampler


def _timed(fn: Callable[[], int], seconds: float) -> tuple[float, float, float]:
    """(units per CPU second, CPU seconds per wall second, calls per CPU second) running ``fn`` for
    ``seconds``. Rates are per CPU second of this process, so a busy machine does not understate them;
    the CPU share says how much of a core the run actually got."""
    fn()  # warm up
    units = calls = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        units += fn()
        calls += 1
    cpu = max(time.process_time() - cpu0, 1e-9)
    return units / cpu, cpu / elapsed, calls / cpu


def _window(currents: int, steps: int, spw: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Codes of a noisy V + ``currents`` I window and the times of a loop that paces itself perfectly."""
    n = np.arange(steps)
    rng = np.random.default_rng(0)
    rows = [2048 + 1100 * np.sin(2 * np.pi * n / spw)]
    rows += [2048 + 600 * np.sin(2 * np.pi * n / spw - 0.3 * (k + 1)) for k in range(currents)]
    noisy = np.floor(np.array(rows) + rng.normal(0, 1.5, (len(rows), steps)))
    codes = np.clip(noisy, 0, 4095).astype(np.int16)
    times = n[None, :] / (50 * spw) + np.arange(len(rows))[:, None] * 24e-6
    return codes, times


def bench_maths(seconds: float, currents: int, waves: int) -> None:
    codes, times = _window(currents, 60 * waves)
    kw = dict(has_voltage=True, v_ratio=ratio(234.26, 3.3), i_ratios=[ratio(90.9, 3.3)] * currents,
              phase_deg=[0.0] * currents, nominal_hz=50.0)

    def one() -> int:
        analyse(codes, times, **kw)
        return codes.size

    rate, cpu, calls = _timed(one, seconds)
    print(f"maths   V+{currents}I x {60 * waves:5d} steps : {rate / 1e6:7.2f} M samples/s  "
          f"({1e6 / calls:6.0f} us per window; got {cpu:.2f} of a core)")


class _NullSpi:
    """A device that answers instantly: isolates the reader loop's own cost."""

    mode, max_speed_hz = 0, 1_000_000

    def xfer2(self, data: list[int]) -> list[int]:
        return [0xFF, 0xE8, 0x00]


def bench_spi(seconds: float) -> None:
    emu = McpEmulator({0: Waveform(1.3, 1.65, 50.0, noise_v=0.001),
                       1: Waveform(0.6, 1.65, 50.0, -30.0, noise_v=0.001)}, vref=3.3)
    emu.open(0, 0)
    f0 = CHIPS["mcp3208"].frame(0)

    def raw() -> int:
        for _ in range(1000):
            emu.xfer2(f0)
        return 1000

    rate, cpu, _ = _timed(raw, seconds)
    print(f"spi     emulator xfer2 alone      : {rate / 1e3:7.1f} k frames/s  "
          f"({1e6 / rate:.2f} us per frame; got {cpu:.2f} of a core)")
    adc = Sampler(emu)

    def window() -> int:
        return adc.sample([0, 1], 600, 333_333).codes.size

    rate, _, calls = _timed(window, seconds)
    print(f"spi     reader loop on emulator   : {rate / 1e3:7.1f} k frames/s  "
          f"({1e3 / calls:.1f} ms per 600-step V+I window)")
    null = Sampler(_NullSpi(), clock=EmulatedClock(start=0.0, speed=0.0))  # pacing costs nothing

    def loop_only() -> int:
        return null.sample([0, 1], 600, 0).codes.size

    rate, _, _ = _timed(loop_only, seconds)
    print(f"spi     reader loop, instant SPI  : {rate / 1e3:7.1f} k frames/s  "
          f"({1e6 / rate:.2f} us per conversion of Python overhead)")
    emu2 = McpEmulator(dict(emu.channels), vref=3.3)
    emu2.open(0, 0)
    adc2 = Sampler(emu2)
    kw = dict(has_voltage=True, v_ratio=ratio(234.26, 3.3), i_ratios=[ratio(90.9, 3.3)], phase_deg=[0.0],
              nominal_hz=50.0)

    def reading() -> int:
        w = adc2.sample([0, 1], 600, 333_333)
        analyse(w.codes, w.times_s, took_s=w.took_s, **kw)
        return 1

    rate, _, _ = _timed(reading, seconds)
    print(f"reading sample + maths (emulator) : {1e3 / rate:7.2f} ms per circuit reading "
          f"(= {100 / rate:.2f} % of a core at one reading a second)")


def bench_timing(readings: int, chip: str) -> None:
    """Single readings under the host's real timing plus injected jitter: schedule-trusting vs recorded."""
    vcal, ical, vref, amps, pf = 234.26, 90.9, 3.3, 10.0, 0.8
    pins = circuit_waveforms(vref=vref, frequency_hz=50.0, voltage_channel=0, voltage_v=230.0,
                             voltage_cal=vcal, current_channels=[1], currents_a=[amps], power_factors=[pf],
                             current_cal=[ical], noise_v=0.0005)
    emu = McpEmulator(pins, vref=vref, chip=chip, host=Jitter(late_p=0.05, preempt_every=1200, slow_p=0.01))
    emu.open(0, 0)
    adc = Sampler(emu, chip)
    counts = CHIPS[chip].counts
    kw = dict(has_voltage=True, v_ratio=ratio(vcal, vref, counts), i_ratios=[ratio(ical, vref, counts)],
              phase_deg=[0.0], nominal_hz=50.0, full_scale=counts - 1)
    truth = 230.0 * amps * pf
    trusted, recorded, unclean = [], [], 0
    for _ in range(readings):
        w = adc.sample([0, 1], 600, 333_333)
        a = analyse(w.codes, w.times_s, took_s=w.took_s, **kw)
        if not a.clean:  # the producer samples again rather than publish this one
            unclean += 1
            continue
        recorded.append(float(a.real_power[0]))
        trusted.append(float(analyse(w.codes, w.scheduled_s(1 / 3000), **kw).real_power[0]))

    def line(what: str, p: list[float]) -> str:
        err = np.abs(np.array(p) - truth) / truth * 100
        return (f"timing  {what:26s}: {min(p):7.1f} .. {max(p):7.1f} W for {truth:.0f} W; median error "
                f"{np.median(err):.2f} %, 90 % within {np.percentile(err, 90):.2f} %, "
                f"worst {err.max():.2f} %")

    if recorded:
        print(f"timing  {chip}, {len(recorded)} readings at this host's clock with {emu.timing.injected} "
              f"injected{f' ({unclean} windows too disturbed: sampled again)' if unclean else ''}")
        print(line("schedule-trusting maths", trusted))
        print(line("recorded-time maths", recorded))


def bench(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wattbus bench adc", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="time per figure (default 1 s)")
    p.add_argument("--readings", type=int, default=20, help="readings per timing figure (0.2 s each)")
    args = p.parse_args(argv)
    print(f"wattbus bench adc: numpy {np.__version__}, {os.cpu_count()} CPU(s), "
          f"{args.seconds:g} s per figure; rates per CPU second of one process")
    bench_maths(args.seconds, currents=1, waves=10)
    bench_maths(args.seconds, currents=3, waves=50)
    bench_spi(args.seconds)
    for chip in CHIPS:
        bench_timing(args.readings, chip)
    return 0


if __name__ == "__main__":
    raise SystemExit(bench(__import__("sys").argv[1:]))
