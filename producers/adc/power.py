"""Power maths for one sampling window: emonLib's ``calcVI`` on the times the samples were really taken.

emonLib removes each channel's DC bias, sums v², i² and v·i over a whole number of cycles found from the
voltage's zero crossings, shifts the voltage in time (PHASECAL) to line it up with the current, and scales by
the calibration ratios. Its sums assume evenly spaced samples. On a Linux host they are not: a step wakes up
late, the loop is preempted for milliseconds, an SPI transfer is slow. Measured on an exact sine read at the
host's clock, trusting the schedule puts single readings 1-3 % off (the median stays right). So here nothing
trusts the schedule; every figure comes from the *recorded* conversion times (``sampler.py`` stamps each
transfer before and after):

1. **Trust.** A conversion whose transfer took much longer than the window's median (preempted inside
   ``xfer2``) has an uncertain time: it is left out.
2. **Whole cycles, from the samples.** Upward zero crossings of the reference wave (the voltage, else the
   largest current) are found with hysteresis and located in time between the two samples around them. A
   crossing inside a hole (samples more than an eighth of a cycle apart: a preemption) is not trusted; the
   window runs from the first to the last trusted crossing, the cycles between them are counted against the
   median cycle. The frequency is then refined from the phase drift the samples themselves show
   (``refine_omega``): a crossing located across a long interval is tens of microseconds off, enough to tilt
   power at a low power factor.
3. **Each channel's harmonic series over those cycles.** DC plus ``HARMONICS`` harmonics of that frequency,
   least-squares fitted to the channel's samples at their own times: uneven spacing and holes cost samples,
   nothing else, and the series' mean squares and cross products over whole cycles are exact
   (``Σ (a² + b²) / 2`` per harmonic). The DC offset is the series' constant (emonLib's running filter needs
   ~1000 samples to settle; this is exact in one window). A window whose samples do not pin the series down
   (a loop that stalled at the same point of every cycle: ``MIN_PINNED``), or whose voltage the series cannot
   explain (a miscounted cycle), is not clean: the producer samples again rather than publish a guess.
4. **What the series misses** (noise, harmonics above ``HARMONICS``) is kept too: the residual of every sample
   is integrated with the trapezoidal rule on the recorded times over the same whole cycles, and added to the
   mean squares and, for power, to the cross products (the voltage residual interpolated at each current
   sample's time), as emonLib's sums would count it.
5. **Phase.** The current's series is turned back by ``phase_deg`` (the sensors' own phase error) per
   harmonic; the delay between the voltage and current conversions needs no correction at all, every sample
   being at its own time (emonLib's PHASECAL interpolation did that, approximately).
6. Vrms, Irms, real power = Σ (aᵥ aᵢ + bᵥ bᵢ) / 2 + residual cross products (signed: the direction of flow),
   frequency from the crossings.

One small least-squares fit and a handful of vector operations per channel: millions of samples a second on
one core (``wattbus bench adc``), so the SPI bus, never the maths, limits the sample rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ADC_COUNTS = 4096
FULL_SCALE = ADC_COUNTS - 1
MIN_AMPLITUDE = 20.0 / 4096
"""Peak amplitude, as a fraction of the range, below which a wave is too small to find crossings in (noise
would cross too): 20 codes of an MCP3208, 5 of an MCP3008."""
HYSTERESIS = 0.25
"""Crossing hysteresis as a fraction of the reference wave's peak amplitude."""
GAP_STEPS = 2.5
"""Two successive samples of a channel further apart than this many sampling steps leave a hole (counted)."""
CROSSING_SPAN = 0.125
"""A zero crossing is trusted when the samples around it are at most this share of a nominal cycle apart."""
HARMONICS = 15
"""Harmonics in each channel's fitted series (fewer when a window has few samples per cycle)."""
MIN_PINNED = 0.01
"""A fit whose samples pin its harmonics down less than this (``harmonic_fit``) makes the window not clean."""
MAX_VOLTAGE_RESIDUAL = 0.01
"""Share of the voltage's mean square its fitted series may leave unexplained (10 % in rms): more means the
frequency, hence the window, was wrong, and the window is not clean."""
SLOW_FACTOR, SLOW_MARGIN_S = 3.0, 30e-6
"""A transfer that took longer than ``SLOW_FACTOR`` x the window's median plus ``SLOW_MARGIN_S`` was
interrupted: when inside it the chip sampled is not known, so the sample is left out."""


@dataclass(frozen=True, slots=True)
class Analysis:
    """Physical results of one window; per-current-channel arrays are in channel order."""

    vrms: float | None            # V; None without a voltage channel
    irms: np.ndarray              # A per current channel
    real_power: np.ndarray | None  # W per current channel, signed; None without a voltage channel
    frequency_hz: float | None    # from the crossings, when measurable
    cycles: int                   # whole cycles used (0: none found, the whole window was used)
    clipped: int                  # samples at 0 or full scale (the input exceeded the ADC range)
    samples: int                  # samples taken (all channels)
    holes: int = 0                # spacings of more than GAP_STEPS steps (all channels)
    untrusted: int = 0            # samples left out because their transfer was interrupted
    clean: bool = True            # False: the host was too busy for this window (no trusted crossings, or a
                                  # part of the cycle never sampled): approximate, sample again
    lead_deg: np.ndarray | None = None  # how far each current's fundamental leads the voltage's, degrees,
                                        # after phase_deg (a resistive load: 0, or 180 against the arrow)


def ratio(cal: float, vref: float, counts: int = ADC_COUNTS) -> float:
    """Physical units per ADC code: emonLib's ``V_RATIO = VCAL * (SupplyVoltage/1000) / ADC_COUNTS``."""
    return cal * vref / counts


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


def trapezoid_weights(t: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    """Weights ``w`` with ``w @ f`` = the trapezoidal integral over ``span`` of samples ``f`` taken at times
    ``t`` (increasing): each interval between two samples contributes to both ends, cut where the span starts
    or ends inside it."""
    w = np.zeros(t.size)
    if t.size < 2:
        return w
    t0, t1 = t[:-1], t[1:]
    h = np.maximum(t1 - t0, 1e-15)
    lo = np.clip(span[0], t0, t1)
    hi = np.clip(span[1], t0, t1)
    inside = hi > lo
    w[:-1] += np.where(inside, ((t1 - lo) ** 2 - (t1 - hi) ** 2) / (2 * h), 0.0)
    w[1:] += np.where(inside, ((hi - t0) ** 2 - (lo - t0) ** 2) / (2 * h), 0.0)
    return w


def harmonic_design(t: np.ndarray, omega: float, harmonics: int) -> np.ndarray:
    """Columns ``1, cos(h w t) .., sin(h w t) ..`` for h = 1..harmonics (successive powers of ``exp(i w t)``:
    one complex multiply per harmonic instead of two trigonometric functions)."""
    out = np.empty((t.size, 2 * harmonics + 1))
    out[:, 0] = 1.0
    e = np.exp(1j * omega * t)
    z = np.empty((t.size, harmonics), dtype=np.complex128)
    z[:, 0] = e
    for k in range(1, harmonics):
        np.multiply(z[:, k - 1], e, out=z[:, k])
    out[:, 1:harmonics + 1] = z.real
    out[:, harmonics + 1:] = z.imag
    return out


def harmonic_fit(design: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares coefficients of the series through the samples, and how well the samples pin them down:
    the smallest eigenvalue of the normal equations per sample (about 0.5 for samples spread over the cycle;
    near 0 when some stretch of the cycle is never sampled, so that some high-harmonic combination could take
    any value there)."""
    n = max(design.shape[0], 1)
    gram = design.T @ design
    pinned = float(np.linalg.eigvalsh(gram / n)[0]) if design.shape[0] else 0.0
    gram[np.diag_indices_from(gram)] *= 1.0 + 1e-9  # keeps a nearly singular fit solvable
    try:
        return np.linalg.solve(gram, design.T @ x), pinned
    except np.linalg.LinAlgError:  # samples that cannot tell the columns apart (all at one instant)
        return np.linalg.lstsq(design, x, rcond=None)[0], 0.0


def refine_omega(t: np.ndarray, x: np.ndarray, omega: float, harmonics: int) -> float:
    """The fundamental's angular frequency, refined from ``omega`` by the phase drift the samples show: a fit
    with the columns ``t cos(wt)``, ``t sin(wt)`` added measures d(omega) to first order. Crossings located
    between samples a few milliseconds apart can be tens of microseconds off; over a window that is a
    frequency error of 1e-4, which is enough to turn power at a low power factor by a few tenths of a
    percent."""
    if t.size < 2 * harmonics + 6:
        return omega
    mid = 0.5 * (float(t[0]) + float(t[-1]))
    d = harmonic_design(t - mid, omega, harmonics)
    a, b = d[:, 1], d[:, harmonics + 1]
    span = max(float(t[-1] - t[0]), 1e-9)
    rel = (t - mid) / span  # scaled for conditioning
    coef, _ = harmonic_fit(np.hstack([d, (rel * a)[:, None], (rel * b)[:, None]]), x)
    ca, cb, c, e = coef[1], coef[harmonics + 1], coef[-2], coef[-1]
    # x ~ ca cos + cb sin + dw (t-mid) (cb cos - ca sin): c = dw span cb, e = -dw span ca
    amp2 = ca * ca + cb * cb
    if amp2 <= 0:
        return omega
    dw = (c * cb - e * ca) / amp2 / span
    return float(omega + dw) if abs(dw) < 0.02 * omega else omega


def has_wave(x: np.ndarray, min_amplitude: float) -> bool:
    """Whether ``x`` swings enough to find crossings in (a power cut, no load: it does not)."""
    return x.size > 2 and math.sqrt(2.0) * float(x.std()) >= min_amplitude


def _cycles(t: np.ndarray, x: np.ndarray, limits: tuple[float, float],
            nominal_hz: float) -> tuple[tuple[float, float], int] | None:
    """The span from the first to the last trusted upward crossing within ``limits`` and the whole cycles in
    it, or None when the wave has no usable crossings.

    A crossing is located by a straight line between the two samples around it, which stays within a few
    microseconds of the truth while they are at most ``CROSSING_SPAN`` of a cycle apart: such crossings are
    trusted, the others (inside a hole) are not. The cycle length is the median distance between successive
    trusted crossings that look like one cycle (0.5..1.5 nominal periods: a crossing lost in a hole makes
    two), and the span must hold a whole number of them."""
    y = x - x.mean()
    amplitude = math.sqrt(2.0) * float(y.std())
    if t.size < 3:
        return None
    pos = upward_crossings(y, HYSTERESIS * amplitude)
    if pos.size < 2:
        return None
    j = np.minimum(pos.astype(np.int64), t.size - 2)
    spacing = t[j + 1] - t[j]
    c = t[j] + (pos - j) * spacing
    good = c[(spacing <= CROSSING_SPAN / nominal_hz) & (c >= limits[0]) & (c <= limits[1])]
    if good.size < 2:
        return None
    lengths = np.diff(good)
    period = 1.0 / nominal_hz
    one = lengths[(lengths > 0.5 * period) & (lengths < 1.5 * period)]
    if one.size == 0:
        return None
    cycles = (good[-1] - good[0]) / float(np.median(one))
    n = round(cycles)
    if n < 1 or abs(cycles - n) > 0.05:
        return None
    return (float(good[0]), float(good[-1])), n


@dataclass(frozen=True, slots=True)
class _Series:
    """One channel over the span: its fitted series, what the series misses, its integration weights."""

    samples: np.ndarray
    coef: np.ndarray       # DC, cos 1..H, sin 1..H
    residual: np.ndarray   # sample minus series, at every sample
    weights: np.ndarray    # trapezoid weights over the span
    total: float

    def mean(self, y: np.ndarray) -> float:
        return float(self.weights @ y) / self.total

    def ac_mean_square(self, whole_cycles: bool) -> float:
        """Mean square without DC: over whole cycles the series' (exact) plus the residual's; else simply the
        samples' (no cycles: no voltage, a power cut, a current too small to cross)."""
        if not whole_cycles:
            return self.mean(self.samples * self.samples) - self.mean(self.samples) ** 2
        r = self.residual
        return float(self.coef[1:] @ self.coef[1:]) / 2.0 + self.mean(r * r) - self.mean(r) ** 2


def analyse(codes: np.ndarray, times_s: np.ndarray, *, has_voltage: bool, v_ratio: float,
            i_ratios: Sequence[float], phase_deg: Sequence[float], nominal_hz: float,
            full_scale: int = FULL_SCALE, took_s: np.ndarray | None = None) -> Analysis:
    """Vrms, Irms, real power and frequency of one window.

    ``codes[slot, step]``: slot 0 is the voltage when ``has_voltage``, the rest are currents in order;
    ``times_s[slot, step]``: when each was taken (seconds, any origin); ``took_s``: how long each transfer
    took (None: all trusted); ``i_ratios`` may be negative (a current sensor that points the other way).
    """
    x = np.asarray(codes, dtype=np.float64)
    t = np.asarray(times_s, dtype=np.float64)
    t = t - t.min()
    slots, steps = x.shape
    first_i = 1 if has_voltage else 0
    n_i = slots - first_i
    clipped = int(np.count_nonzero((codes <= 0) | (codes >= full_scale)))

    # 1. trust
    if took_s is not None and took_s.size:
        took = np.asarray(took_s, dtype=np.float64)
        valid = took <= SLOW_FACTOR * float(np.median(took)) + SLOW_MARGIN_S
        valid[np.count_nonzero(valid, axis=1) < 3] = True  # never a channel left without samples
    else:
        valid = np.ones(x.shape, dtype=bool)
    untrusted = int(x.size - np.count_nonzero(valid))
    ts = [t[s][valid[s]] for s in range(slots)]
    xs = [x[s][valid[s]] for s in range(slots)]

    # The mean spacing is the step the loop aimed at (one that fell behind catches up with steps back to back,
    # so the median can be far below it). Whole cycles are taken where every channel has samples on both
    # sides.
    step = float(t[0, -1] - t[0, 0]) / (steps - 1) if steps > 1 else 0.0
    limits = (max(float(s[0]) for s in ts) + step, min(float(s[-1]) for s in ts) - step)
    holes = sum(int(np.count_nonzero(np.diff(s) > GAP_STEPS * step)) for s in ts)

    # 2. whole cycles
    ref = 0 if has_voltage or slots == 1 else int(np.argmax([s.std() for s in xs]))
    wave = has_wave(xs[ref], MIN_AMPLITUDE * (full_scale + 1))
    found = _cycles(ts[ref], xs[ref], limits, nominal_hz) if wave and step > 0 else None
    if found is not None:
        span, cycles = found
        frequency: float | None = cycles / (span[1] - span[0])
    else:
        span = limits if limits[1] > limits[0] else (0.0, float(t.max()))
        cycles, frequency = 0, None
    clean = not wave or cycles > 0  # nothing to measure is measured cleanly; a wave needs whole cycles ...

    # 3-4. each channel's series and residual over the span
    freq = frequency if frequency is not None else nominal_hz
    omega = 2.0 * math.pi * freq
    spw = 1.0 / (freq * step) if step > 0 else 8.0
    harmonics = max(1, min(HARMONICS, int(spw / 2) - 1))
    if cycles:
        inside = (ts[ref] >= span[0]) & (ts[ref] <= span[1])
        omega = refine_omega(ts[ref][inside], xs[ref][inside], omega, min(harmonics, 7))
        frequency = float(omega / (2.0 * math.pi))
    series = []
    for s in range(slots):
        # the samples that carry weight: from the last one at or before the span to the first at or after it
        lo = max(0, int(np.searchsorted(ts[s], span[0], side="right")) - 1)
        hi = min(ts[s].size, int(np.searchsorted(ts[s], span[1], side="left")) + 1)
        if hi - lo < 2:  # a span beside this channel's samples (degenerate times): all of them
            lo, hi = 0, ts[s].size
        ts[s], xs[s] = ts[s][lo:hi], xs[s][lo:hi]
        tau = ts[s] - span[0]
        h = max(1, min(harmonics, (tau.size - 1) // 8))
        design = harmonic_design(tau, omega, h)
        coef, pinned = harmonic_fit(design, xs[s])
        if cycles and pinned < MIN_PINNED:  # ... and pinned down by samples all round the cycle
            clean = False
        weights = trapezoid_weights(ts[s], span)
        total = float(weights.sum())
        if total <= 0:  # degenerate times (a clock that does not move): equal weights
            weights, total = np.ones(ts[s].size), float(ts[s].size)
        series.append(_Series(xs[s], coef, xs[s] - design @ coef, weights, total))
    rms = np.array([math.sqrt(max(se.ac_mean_square(cycles > 0), 0.0)) for se in series])
    if has_voltage and cycles and wave:
        # mains voltage is nearly a sum of low harmonics: a series that misses much of it was fitted at the
        # wrong frequency (crossings miscounted in a disturbed window)
        v = series[0]
        unexplained = v.mean(v.residual ** 2) - v.mean(v.residual) ** 2
        clean = clean and unexplained <= MAX_VOLTAGE_RESIDUAL * rms[0] ** 2
    i_ratio = np.asarray(i_ratios, dtype=np.float64)
    irms = rms[first_i:] * np.abs(i_ratio)
    if not has_voltage:
        return Analysis(None, irms, None, None, cycles, clipped, x.size, holes, untrusted, clean)

    # 5-6. real power: the series' cross products with the current turned back by phase_deg, plus the
    # residuals' (the voltage residual at each current sample's shifted time)
    vrms = float(rms[0]) * abs(v_ratio)
    v = series[0]
    power = np.empty(n_i)
    lead = np.full(n_i, np.nan)
    for k in range(n_i):
        i = series[first_i + k]
        shift = phase_deg[k] / (360.0 * freq)
        if cycles:
            h = min((v.coef.size - 1) // 2, (i.coef.size - 1) // 2)
            hv, hi = (v.coef.size - 1) // 2, (i.coef.size - 1) // 2
            turn = omega * shift * np.arange(1, h + 1)
            ai, bi = i.coef[1:h + 1], i.coef[hi + 1:hi + h + 1]
            a = ai * np.cos(turn) - bi * np.sin(turn)
            b = ai * np.sin(turn) + bi * np.cos(turn)
            p = float(v.coef[1:h + 1] @ a + v.coef[hv + 1:hv + h + 1] @ b) / 2.0
            # a cos + b sin = R cos(wt - atan2(b, a)): the current leads by the difference of those angles
            lead[k] = math.degrees(math.atan2(v.coef[hv + 1], v.coef[1]) - math.atan2(b[0], a[0]))
            rv, ri = v.residual, i.residual
        else:  # no whole cycles (no voltage, or none measurable): the samples as they are
            p = 0.0
            rv, ri = v.samples, i.samples
        rv_at = np.interp(ts[first_i + k] + shift, ts[0], rv - v.mean(rv))
        power[k] = p + i.mean(rv_at * (ri - i.mean(ri)))
    real = power * v_ratio * i_ratio
    lead = (lead + 180.0) % 360.0 - 180.0 + np.where(i_ratio < 0, 180.0, 0.0)  # a flipped sensor: turned
    lead = (lead + 180.0) % 360.0 - 180.0
    return Analysis(vrms, irms, real, frequency, cycles, clipped, x.size, holes, untrusted, clean,
                    None if np.isnan(lead).all() else lead)
