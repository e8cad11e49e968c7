"""Power maths for one sampling window, emonLib's method done with whole-array numpy operations.

emonLib (``EmonLib.cpp`` ``calcVI``) removes each channel's DC bias, sums v², i² and v·i over a whole
number of cycles found from the voltage's zero crossings, shifts the voltage in time by interpolating
between successive samples (PHASECAL) to line it up with the current, and scales by the calibration
ratios. Here, per window:

1. **Whole cycles.** Upward zero crossings of the reference wave (the voltage, else the largest current)
   are found with hysteresis and located to a fraction of a sample; the window runs from the first to the
   last one. Each sample stands for the span half a step either side of it and the two end samples are
   weighted by how much of their span is inside, so the sums cover exactly whole cycles even when a
   cycle is not a whole number of samples (a 49.9 Hz grid, a host that paces imperfectly).
2. **DC offset.** Each channel's offset is its weighted mean over those whole cycles (what emonLibCM
   does; emonLib's running low-pass filter needs ~1000 samples to settle, this is exact in one window).
3. **Phase shift.** Current k is sampled ``delay_k`` after the voltage (the next conversion in the step)
   and its sensor may lead by ``phase_deg``. The voltage at the current's instant is interpolated from the
   two samples around it with the weights that are exact for a sinusoid at the measured frequency
   (``sin((1-r)θ)/sin θ`` and ``sin(rθ)/sin θ``, θ the phase advance per step); emonLib's straight-line
   weights (1-r, r) get the amplitude wrong by ~0.1-0.4 % at 60 samples per cycle.
4. Vrms, Irms, real power (mean of v·i, signed: the direction of flow), frequency from the crossings.

Everything is a handful of vector operations per channel, well over a million samples a second on one
core (``wattbus bench adc``), so the SPI bus, never the maths, limits the sample rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ADC_COUNTS = 4096
FULL_SCALE = ADC_COUNTS - 1
MIN_AMPLITUDE = 20.0
"""Codes (peak) below which a wave is too small to find zero crossings in (noise would cross too)."""
HYSTERESIS = 0.25
"""Crossing hysteresis as a fraction of the reference wave's peak amplitude."""


@dataclass(frozen=True, slots=True)
class Analysis:
    """Physical results of one window; per-current-channel arrays are in channel order."""

    vrms: float | None            # V; None without a voltage channel
    irms: np.ndarray              # A per current channel
    real_power: np.ndarray | None  # W per current channel, signed; None without a voltage channel
    frequency_hz: float | None    # from the voltage's crossings, when measurable
    cycles: int                   # whole cycles used (0: none found, the whole window was used)
    clipped: int                  # samples at 0 or 4095 (the input exceeded the ADC range)
    samples: int                  # samples analysed (all channels)


def ratio(cal: float, vref: float) -> float:
    """Physical units per ADC code: emonLib's ``V_RATIO = VCAL * (SupplyVoltage/1000) / ADC_COUNTS``."""
    return cal * vref / ADC_COUNTS


def upward_crossings(y: np.ndarray, hysteresis: float) -> np.ndarray:
    """Fractional sample positions where ``y`` (offset removed) goes from below ``-hysteresis`` to above
    ``+hysteresis``, each located by linear interpolation of the last sign change before it."""
    state = np.zeros(y.shape[0], dtype=np.int8)
    state[y > hysteresis] = 1
    state[y < -hysteresis] = -1
    idx = np.flatnonzero(state)
    if idx.size < 2:
        return np.empty(0)
    s = state[idx]
    rises = np.flatnonzero((s[:-1] == -1) & (s[1:] == 1))
    if rises.size == 0:
        return np.empty(0)
    above = idx[rises + 1]
    changes = np.flatnonzero((y[:-1] <= 0) & (y[1:] > 0))
    j = changes[np.searchsorted(changes, above, side="left") - 1]
    y0, y1 = y[j], y[j + 1]
    return j + (-y0) / (y1 - y0)


def _weights(x0: float, x1: float) -> tuple[int, np.ndarray]:
    """First sample index and weights covering exactly [x0, x1] (each sample spans +-0.5 step)."""
    n0 = math.floor(x0 + 0.5)
    n1 = math.floor(x1 + 0.5)
    w = np.ones(n1 - n0 + 1)
    w[0] -= x0 - (n0 - 0.5)
    w[-1] -= (n1 + 0.5) - x1
    return n0, w


def shift_weights(shift_steps: float, theta: float) -> tuple[int, float, float]:
    """(m, a, b) with ``a*v[n+m] + b*v[n+m+1]`` = the sinusoid ``v`` at step ``n + shift_steps``."""
    m = math.floor(shift_steps)
    r = shift_steps - m
    st = math.sin(theta)
    if abs(st) < 1e-12:
        return m, 1.0 - r, r
    return m, math.sin((1.0 - r) * theta) / st, math.sin(r * theta) / st


def analyse(codes: np.ndarray, *, step_s: float, delays_s: Sequence[float] | np.ndarray,
            has_voltage: bool, v_ratio: float, i_ratios: Sequence[float], phase_deg: Sequence[float],
            nominal_hz: float) -> Analysis:
    """Vrms, Irms, real power and frequency of one window.

    ``codes[slot, step]``: slot 0 is the voltage when ``has_voltage``, the rest are currents in order;
    ``delays_s[slot]`` is how long after slot 0 each slot is converted within a step; ``i_ratios`` may be
    negative (a current sensor that points the other way).
    """
    x = np.asarray(codes, dtype=np.float64)
    slots, steps = x.shape
    first_i = 1 if has_voltage else 0
    n_i = slots - first_i
    clipped = int(np.count_nonzero((codes <= 0) | (codes >= FULL_SCALE)))
    delays = np.asarray(delays_s, dtype=np.float64)

    # Voltage shifts, in steps, with the nominal frequency for now: the range in which whole cycles may
    # be taken must leave room for the neighbouring voltage samples the interpolation reads.
    def shifts(freq: float) -> list[float]:
        if not has_voltage or step_s <= 0:
            return [0.0] * n_i
        return [(delays[first_i + k] + phase_deg[k] / (360.0 * freq)) / step_s for k in range(n_i)]

    nominal_shifts = shifts(nominal_hz)
    if has_voltage:
        lo = max(0, -math.floor(min(nominal_shifts, default=0.0)) + 1)
        hi = steps - 1 - max(0, math.floor(max(nominal_shifts, default=0.0)) + 2)
    else:
        lo, hi = 0, steps - 1

    # Reference wave for the whole-cycle window.
    ref_slot = 0 if has_voltage or slots == 1 else int(np.argmax(x.std(axis=1)))
    ref = x[ref_slot, lo:hi + 1] if hi > lo else x[ref_slot]
    amplitude = math.sqrt(2.0) * float(ref.std()) if ref.size else 0.0
    crossings = np.empty(0)
    if amplitude >= MIN_AMPLITUDE and hi > lo:
        crossings = upward_crossings(ref - ref.mean(), HYSTERESIS * amplitude) + lo
    cycles = crossings.size - 1
    frequency = None
    if cycles >= 1 and step_s > 0:
        f = float(cycles / ((crossings[-1] - crossings[0]) * step_s))
        if 0.5 * nominal_hz <= f <= 2.0 * nominal_hz:
            frequency = f
        else:
            cycles = 0
    if cycles >= 1:
        n0, w = _weights(float(crossings[0]), float(crossings[-1]))
    else:
        cycles = 0
        n0, w = (lo, np.ones(hi - lo + 1)) if hi > lo else (0, np.ones(steps))
    total = float(w.sum())
    seg = x[:, n0:n0 + w.size]
    mean = seg @ w / total
    var = np.maximum((seg * seg) @ w / total - mean * mean, 0.0)
    rms = np.sqrt(var)

    i_ratio = np.asarray(i_ratios, dtype=np.float64)
    irms = rms[first_i:] * np.abs(i_ratio)
    if not has_voltage:
        return Analysis(None, irms, None, None, cycles, clipped, x.size)

    vrms = float(rms[0]) * abs(v_ratio)
    freq = frequency if frequency is not None else nominal_hz
    theta = 2.0 * math.pi * freq * step_s
    v = x[0] - mean[0]
    size = w.size
    power = np.empty(n_i)
    for k, shift in enumerate(shifts(freq)):
        m, a, b = shift_weights(shift, theta)
        start = n0 + m
        if start >= 0 and start + size + 1 <= steps:
            vs = a * v[start:start + size] + b * v[start + 1:start + size + 1]
        else:  # a shift beyond the margin kept for it: reuse the edge samples
            index = np.arange(start, start + size)
            vs = a * v[np.clip(index, 0, steps - 1)] + b * v[np.clip(index + 1, 0, steps - 1)]
        i = seg[first_i + k] - mean[first_i + k]
        power[k] = float((vs * i) @ w) / total
    real = power * v_ratio * i_ratio
    return Analysis(vrms, irms, real, frequency, cycles, clipped, x.size)
