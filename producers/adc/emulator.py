"""A simulated MCP3208 or MCP3008 behind the ``spidev.SpiDev`` interface (``open``, ``mode``,
``max_speed_hz``, ``xfer2``, ``close``): the demo's ADC and the tests' device.

It answers at the bit level, the way the chips' serial interface does (datasheets DS21298E and DS21295,
section 6), so a reader with a wrong frame gets wrong codes exactly as it would from the real chip:

* the chip ignores leading zeros on DIN; the first 1 is the **start bit**;
* the next four bits are SGL/DIFF, D2, D1, D0 (single-ended: channel D2D1D0; pseudo-differential: IN+ is
  channel D2D1D0 and IN- its pair partner D2D1D0 ^ 1, a negative difference reads 0);
* one clock to sample (DOUT still high-impedance), a null bit 0, the result MSB first (B11..B0 on the
  12-bit MCP3208, B9..B0 on the 10-bit MCP3008), then again LSB first from B1, then zeros for as long as
  CS stays low;
* a frame that ends before D0 (or has no start bit) starts no conversion and DOUT stays high-impedance.

What the host reads while DOUT is high-impedance is ``hiz_bit`` (1: a floating MISO line that floats high).
``lsbfirst`` reverses the bits of every byte both ways, ``cshigh`` never selects the chip, and SPI modes 1
and 2 (the chip supports only 0,0 and 1,1) are modelled as both sides seeing the other one clock late.

Time base, one of two:

* **emulated** (default): the emulator has its own clock, a standing ``bus.clock.EmulatedClock``. Each
  conversion (one ``xfer2``, one CS assertion) samples the input pins at the current emulated time and
  advances the clock by ``sample_period_s``, so the waveform a reader sees is consistent however slowly Python
  runs; ``clock.sleep_until`` (what the reader's pacing calls) jumps ahead without real waiting. With
  ``realtime`` set, an idle gap in real time longer than ``resync_gap_s`` (the producer waiting for its next
  interval) moves the emulated clock by that gap, so load profiles follow the wall clock in the demo.
* **host** (``host=Jitter(...)``): the pins are sampled at the host's ``perf_counter`` at the instant of
  the conversion, as a real chip on a Pi is, and the pacing really sleeps; on top of what the host's own
  scheduler does, :class:`Jitter` injects what a Pi's does: late wake-ups, a 5 ms preemption (in the pacing
  or inside a transfer, before or after the chip samples), slow transfers. This is the mode that shows
  whether the maths trusts the schedule or the samples.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from bus.clock import Clock, EmulatedClock
from producers.adc.chips import CHIPS
from producers.adc.sampler import SpinClock

_REVERSE8 = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


@cache
def _reversed_bits(width: int) -> list[int]:
    """``table[c]`` = ``c``'s ``width`` low bits in reverse order (the LSB-first tail of a result)."""
    return [int(f"{c:0{width}b}"[::-1], 2) for c in range(1 << width)]


@dataclass(frozen=True)
class Harmonic:
    """A harmonic of a channel's fundamental: ``order`` (3 = 150 Hz on a 50 Hz grid), amplitude as a
    fraction of the fundamental, phase in degrees relative to the fundamental's own phase."""

    order: int
    fraction: float
    phase_deg: float = 0.0


@dataclass(frozen=True)
class LoadCurve:
    """A load profile: (time s, scale) points, linear in between, repeating every ``period_s`` (default:
    the last point's time). Scales the AC amplitude of a channel over emulated time."""

    points: tuple[tuple[float, float], ...]
    period_s: float | None = None

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a profile needs at least one (time, scale) point")
        times = [t for t, _ in self.points]
        if times != sorted(times) or times[0] < 0:
            raise ValueError("profile times must start at >= 0 and increase")

        object.__setattr__(self, "_times", times)
        object.__setattr__(self, "_scales", [s for _, s in self.points])

    def scale_at(self, t: float) -> float:
        times, scales = self._times, self._scales
        period = self.period_s if self.period_s is not None else times[-1]
        if period > 0:
            t = t % period
        i = bisect.bisect_right(times, t)
        if i == 0:
            return scales[0]
        if i == len(times):
            return scales[-1]
        t0, t1 = times[i - 1], times[i]
        return scales[i - 1] + (scales[i] - scales[i - 1]) * (t - t0) / (t1 - t0)


@dataclass(frozen=True)
class Waveform:
    """What one input pin sees, in volts: ``bias_v + scale(t) * amplitude_v * (sin(w t + phase)
    + sum(fraction * sin(order * (w t + phase) + harmonic phase))) + noise``."""

    amplitude_v: float = 0.0
    bias_v: float = 1.65
    frequency_hz: float = 50.0
    phase_deg: float = 0.0
    harmonics: tuple[Harmonic, ...] = ()
    noise_v: float = 0.0
    """Standard deviation of white Gaussian noise added to every sample."""
    profile: LoadCurve | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_omega", 2 * math.pi * self.frequency_hz)
        object.__setattr__(self, "_phase", math.radians(self.phase_deg))
        object.__setattr__(self, "_harm", tuple((h.order, h.fraction, math.radians(h.phase_deg))
                                                for h in self.harmonics))

    def at(self, t: float, noise: Callable[[], float] | None = None) -> float:
        """Pin voltage at emulated time ``t`` (seconds); ``noise()`` draws one standard normal value."""
        arg = self._omega * t + self._phase
        ac = math.sin(arg)
        for order, fraction, phase in self._harm:
            ac += fraction * math.sin(order * arg + phase)
        if self.profile is not None:
            ac *= self.profile.scale_at(t)
        v = self.bias_v + self.amplitude_v * ac
        if self.noise_v and noise is not None:
            v += self.noise_v * noise()
        return v

    def many(self, t: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Vectorised ``at`` for an array of times (tests and benchmarks)."""
        arg = 2 * np.pi * self.frequency_hz * np.asarray(t, dtype=np.float64) + math.radians(self.phase_deg)
        ac = np.sin(arg)
        for order, fraction, phase in self._harm:
            ac += fraction * np.sin(order * arg + phase)
        if self.profile is not None:
            ac *= np.array([self.profile.scale_at(x) for x in np.atleast_1d(t)])
        v = self.bias_v + self.amplitude_v * ac
        if self.noise_v and rng is not None:
            v = v + self.noise_v * rng.standard_normal(v.shape)
        return v


def code_of_volts(v: float, vref: float, bits: int = 12) -> int:
    """The ideal transfer function, ``code = floor(2**bits * Vin / Vref)``, clipped to 0..2**bits - 1."""
    c = math.floor(v * (1 << bits) / vref)
    return 0 if c < 0 else min(c, (1 << bits) - 1)


@dataclass(frozen=True)
class Jitter:
    """What a Linux host does to a sampling loop, injected on top of what this host does anyway."""

    late_p: float = 0.0
    """Chance that a step's wake-up is late ..."""
    late_max_s: float = 300e-6
    """... by up to this much (uniform): about one sampling step."""
    preempt_every: int = 0
    """One preemption every this many conversions, at a random place around it (0: none) ..."""
    preempt_s: float = 5e-3
    """... of this length: a quarter of a 50 Hz cycle."""
    slow_p: float = 0.0
    """Chance that a transfer is slow ..."""
    slow_s: float = 150e-6
    """... by this much, split at random before and after the instant the chip samples."""
    seed: int | None = 0


class HostTiming(SpinClock):
    """The host's ``perf_counter`` as the emulated chip's time base, with :class:`Jitter` injected: the
    reader's pacing (``sleep_until``) wakes up late now and then, and :meth:`conversion` (one per transfer)
    is slow or preempted now and then."""

    def __init__(self, jitter: Jitter):
        self.jitter = jitter
        self._rng = random.Random(jitter.seed)
        self._count = 0
        self._next_preempt = self._draw_preempt()
        self._preempt_pacing = False
        self.injected = {"late": 0, "preempt": 0, "slow": 0}

    def _draw_preempt(self) -> int:
        j = self.jitter
        return self._count + self._rng.randint(1, 2 * j.preempt_every) if j.preempt_every else -1

    @staticmethod
    def _spin(seconds: float) -> None:
        end = time.perf_counter_ns() + round(seconds * 1e9)
        while time.perf_counter_ns() < end:
            pass

    def sleep_until(self, t: float) -> None:
        super().sleep_until(t)
        j = self.jitter
        if self._preempt_pacing:
            self._preempt_pacing = False
            time.sleep(j.preempt_s)
        if j.late_p and self._rng.random() < j.late_p:
            self.injected["late"] += 1
            self._spin(self._rng.uniform(0.0, j.late_max_s))

    def conversion(self) -> float:
        """The instant (perf_counter seconds) the chip samples in this transfer, after the injected delays
        before it; the delays after it happen before this returns."""
        j, rng = self.jitter, self._rng
        self._count += 1
        before = after = 0.0
        if j.slow_p and rng.random() < j.slow_p:
            self.injected["slow"] += 1
            split = rng.random()
            before, after = j.slow_s * split, j.slow_s * (1.0 - split)
        if self._count == self._next_preempt:
            self.injected["preempt"] += 1
            self._next_preempt = self._draw_preempt()
            where = rng.randrange(3)  # in the pacing (the next wake-up), or inside this transfer, before or
            if where == 0:           # after the chip samples
                self._preempt_pacing = True
            elif where == 1:
                before += j.preempt_s
            else:
                after += j.preempt_s
        if before:
            self._spin(before)
        at = time.perf_counter_ns() * 1e-9
        if after:
            self._spin(after)
        return at


@dataclass(frozen=True)
class _Plan:
    """How the chip answers one particular frame: decided once per distinct frame, then cached."""

    nbytes: int
    converts: bool
    positive: int = 0      # channel on IN+
    negative: int = -1     # channel on IN- (-1: single-ended, against ground)
    hiz_word: int = 0      # rx bits that are high-impedance, already set to the hiz value
    msb_shift: int = 0     # B11..B0 placement: code << shift (negative: >> -shift)
    lsb_shift: int = 0     # B1..B11 (LSB-first tail) placement


@dataclass
class McpEmulator:
    """Drop-in for ``spidev.SpiDev`` talking to an MCP3208 (or ``chip="mcp3008"``) whose input pins carry
    ``channels``."""

    channels: Mapping[int, Waveform] = field(default_factory=dict)
    vref: float = 3.3
    chip: str = "mcp3208"
    sample_period_s: float = 24e-6
    """Emulated time one conversion (one xfer2) takes; 24 SPI clocks at 1 MHz by default."""
    seed: int | None = 0
    realtime: Clock | None = None
    """A clock whose idle gaps (longer than ``resync_gap_s``) move emulated time along (demo: the host's)."""
    resync_gap_s: float = 0.1
    host: Jitter | None = None
    """Sample at the host's clock with this jitter injected (see the module's docstring); None: emulated."""
    hiz_bit: int = 1

    # spidev.SpiDev attributes
    mode: int = 0
    max_speed_hz: int = 125_000_000
    bits_per_word: int = 8
    lsbfirst: bool = False
    cshigh: bool = False

    def __post_init__(self) -> None:
        if self.chip not in CHIPS:
            raise ValueError(f"unknown chip {self.chip!r} (one of {', '.join(CHIPS)})")
        self.bits = CHIPS[self.chip].bits
        self._tail = _reversed_bits(self.bits - 1)
        for ch in self.channels:
            if not 0 <= ch <= 7:
                raise ValueError(f"{self.chip.upper()} channel {ch} does not exist (0..7)")
        self.timing = HostTiming(self.host) if self.host is not None else None
        self.clock: Clock = self.timing or EmulatedClock(start=0.0, speed=0.0, idle_from=self.realtime,
                                                         idle_gap_s=self.resync_gap_s)
        """Emulated time: each conversion advances it by ``sample_period_s``, the reader's pacing jumps it;
        or the host's clock (``host``)."""
        self._rng = np.random.default_rng(self.seed)
        self._noise: list[float] = []
        self._period_ns = max(1, round(self.sample_period_s * 1e9))
        self._plans: dict[tuple, _Plan] = {}
        self._open = False
        self.conversions = 0

    # -- spidev.SpiDev interface -------------------------------------------------------------------
    def open(self, bus: int = 0, device: int = 0) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def xfer2(self, data: Sequence[int], speed_hz: int = 0, delay_usec: int = 0,
              bits_per_word: int = 0) -> list[int]:
        """One CS assertion: clock ``data`` out on MOSI, return what came back on MISO."""
        if not self._open:
            raise OSError(9, "Bad file descriptor (SpiDev not open)")
        tx = bytes(data)  # ValueError for values outside 0..255, as spidev refuses them too
        key = (tx, self.mode, self.lsbfirst, self.cshigh)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(tx)
        if self.timing is not None:
            t_s = self.timing.conversion()
        else:
            clock: EmulatedClock = self.clock  # type: ignore[assignment]
            t_s = (clock.advance_ns(self._period_ns) - self._period_ns) * 1e-9
        self.conversions += 1
        word = plan.hiz_word
        if plan.converts:
            code = self._convert(plan, t_s)
            s = plan.msb_shift
            word |= code << s if s >= 0 else code >> -s
            s = plan.lsb_shift
            tail = self._tail[code >> 1]
            word |= tail << s if s >= 0 else tail >> -s
            word &= (1 << (8 * plan.nbytes)) - 1
        rx = word.to_bytes(plan.nbytes, "big")
        if self.lsbfirst:
            rx = rx.translate(_REVERSE8)
        return list(rx)

    # -- the chip ---------------------------------------------------------------------------------------
    def pin_volts(self, channel: int, t_s: float) -> float:
        wave = self.channels.get(channel)
        return 0.0 if wave is None else wave.at(t_s, self._gauss)

    def _gauss(self) -> float:
        """One standard normal value, drawn from numpy a block at a time (a scalar draw costs ~1 us)."""
        if not self._noise:
            self._noise = self._rng.standard_normal(4096).tolist()
        return self._noise.pop()

    def _convert(self, plan: _Plan, t_s: float) -> int:
        v = self.pin_volts(plan.positive, t_s)
        if plan.negative >= 0:
            v -= self.pin_volts(plan.negative, t_s)
        return code_of_volts(v, self.vref, self.bits)

    def _plan(self, tx: bytes) -> _Plan:
        n = 8 * len(tx)
        hiz_all = ((1 << n) - 1) if self.hiz_bit else 0
        if n == 0 or self.cshigh:  # chip never selected: MISO floats for the whole transfer
            return _Plan(len(tx), False, hiz_word=hiz_all)
        if self.lsbfirst:
            tx = tx.translate(_REVERSE8)
        word = int.from_bytes(tx, "big")
        skew = self.mode in (1, 2)
        if skew:  # the chip samples DIN one clock late: it sees the stream shifted right by one bit
            word >>= 1
        if word == 0:
            return _Plan(len(tx), False, hiz_word=hiz_all)
        s = n - word.bit_length()  # clock index (0 = first) of the start bit
        if s + 4 >= n:  # the frame ends before D0: no conversion starts
            return _Plan(len(tx), False, hiz_word=hiz_all)
        config = (word >> (n - 1 - (s + 4))) & 0xF
        single, d = config >> 3, config & 0x7
        positive, negative = (d, -1) if single else (d, d ^ 1)
        # DOUT is high-impedance up to and including the sample clock s+5, null bit at s+6, the MSB at s+7.
        hiz_clocks = s + 6
        hiz_word = 0
        if self.hiz_bit:
            hiz_word = ((1 << hiz_clocks) - 1) << (n - hiz_clocks)
        bits = self.bits
        msb_shift = n - 1 - (s + 6 + bits)  # B0 lands on clock s+6+bits (s+18 on the MCP3208)
        lsb_shift = n - 1 - (s + 5 + 2 * bits)  # the LSB-first tail ends with the MSB on clock s+5+2*bits
        if skew:  # and the host reads DOUT one clock late
            hiz_word = (hiz_word >> 1) | ((1 << (n - 1)) if self.hiz_bit else 0)
            msb_shift -= 1
            lsb_shift -= 1
        return _Plan(len(tx), True, positive, negative, hiz_word, msb_shift, lsb_shift)


def circuit_waveforms(*, vref: float, frequency_hz: float, voltage_channel: int | None, voltage_v: float,
                      voltage_cal: float, current_channels: Sequence[int], currents_a: Sequence[float],
                      power_factors: Sequence[float], current_cal: Sequence[float],
                      bias_v: float | None = None, noise_v: float = 0.0,
                      voltage_harmonics: Sequence[Harmonic] = (),
                      current_harmonics: Sequence[Harmonic] = (), profile: LoadCurve | None = None,
                      lagging: bool = True,
                      sensor_lead_deg: Sequence[float] | None = None) -> dict[int, Waveform]:
    """Pin waveforms for a physical description: mains at ``voltage_v`` rms, each current channel carrying
    ``currents_a`` rms at a power factor (negative: the power flows against the sensor's arrow, e.g. a grid
    circuit exporting). Calibrations map physical units to pin volts exactly as the reader maps them back;
    ``sensor_lead_deg`` (per current channel) is how far each CT's output leads the current it measures.
    """
    bias = vref / 2 if bias_v is None else bias_v
    out: dict[int, Waveform] = {}
    if voltage_channel is not None:
        out[voltage_channel] = Waveform(voltage_v * math.sqrt(2) / voltage_cal, bias, frequency_hz, 0.0,
                                        tuple(voltage_harmonics), noise_v)
    leads = [0.0] * len(current_channels) if sensor_lead_deg is None else sensor_lead_deg
    for ch, amps, pf, cal, lead in zip(current_channels, currents_a, power_factors, current_cal, leads,
                                       strict=True):
        phi = math.degrees(math.acos(min(1.0, abs(pf))))
        phase = (-phi if lagging else phi) + lead
        if pf < 0:
            phase += 180.0
        out[ch] = Waveform(amps * math.sqrt(2) / cal, bias, frequency_hz, phase, tuple(current_harmonics),
                           noise_v, profile)
    return out
