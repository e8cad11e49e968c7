"""Sampling an MCP3208 or MCP3008 through ``spidev`` (or the emulator, which has the same interface).

One conversion is one ``xfer2`` of the chip's 3-byte single-ended frame (``chips.py``); ``xfer2`` holds CS
low for the whole frame, and the chip converts once per CS assertion.

A window is ``steps`` sampling steps spaced ``step_ns`` apart; in each step the circuit's channels are read
back to back (voltage first, then each current). The clock is read just before and just after every
``xfer2``: the conversion happened in between, so the midpoint is when it was taken and the difference says
how sure that is. The maths (``power.py``) works on those recorded times, never on the planned schedule: a
Linux host is late now and then (a step, a preempted loop, a slow transfer), and it must cost only samples.
The times come from the device's clock when it has one (the emulator), else from the host's
``perf_counter_ns`` (``SpinClock``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bus.clock import Clock
from producers.adc.chips import CHIPS, Chip


class SpiLike(Protocol):
    mode: int
    max_speed_hz: int

    def open(self, bus: int, device: int) -> None: ...
    def xfer2(self, data: list[int]) -> list[int]: ...
    def close(self) -> None: ...


class SpinClock:
    """Pacing on real hardware (a ``bus.clock.Clock`` on ``perf_counter``): sleep while the next step is far
    away, spin for the last stretch (``time.sleep`` overshoots by ~0.1 ms on Linux, a step is ~0.3 ms)."""

    SPIN_NS = 200_000

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    def now(self) -> float:
        return time.perf_counter_ns() * 1e-9

    def sleep_until(self, t: float) -> None:
        t_ns = round(t * 1e9)
        now = time.perf_counter_ns()
        if t_ns - now > self.SPIN_NS:
            time.sleep((t_ns - now - self.SPIN_NS) * 1e-9)
        while time.perf_counter_ns() < t_ns:
            pass


def open_spidev(bus: int, chip_select: int, max_speed_hz: int, mode: int) -> Any:
    """Open ``/dev/spidevBUS.CS``; spidev is imported only here (it exists only on a Pi, ``pi`` extra)."""
    try:
        import spidev  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError("the `spidev` package is not installed (pip install 'wattbus[pi]'); "
                           "use spi = \"sim\" to run on the emulator") from exc
    spi = spidev.SpiDev()
    spi.open(bus, chip_select)
    spi.mode = mode                  # set after open, and always explicitly: the driver default can be
    spi.max_speed_hz = max_speed_hz  # far above the chip's few-MHz limit
    return spi


@dataclass(frozen=True, slots=True)
class SampleWindow:
    """The samples of one circuit for one reading: ``codes[slot, step]`` and when each was converted."""

    codes: np.ndarray     # (slots, steps) int16, slot 0 = the first channel read in a step
    start_ns: np.ndarray  # (slots, steps) int64, the clock just before each conversion's xfer2
    end_ns: np.ndarray    # (slots, steps) int64, ... and just after it returned
    late_steps: int       # steps that started later than planned (pacing could not keep up)

    @property
    def times_s(self) -> np.ndarray:
        """When each sample was taken: the middle of its transfer, seconds after the window's first."""
        mid2 = self.start_ns + self.end_ns
        return (mid2 - mid2[0, 0]).astype(np.float64) * 0.5e-9

    @property
    def took_s(self) -> np.ndarray:
        """How long each transfer took: the uncertainty of its time."""
        return (self.end_ns - self.start_ns).astype(np.float64) * 1e-9

    def scheduled_s(self, step_s: float) -> np.ndarray:
        """The times the schedule promised: step ``n`` at ``n * step_s``, each slot at its mean delay after
        slot 0. What a maths that trusts the schedule assumes (the bench compares)."""
        slots, steps = self.codes.shape
        t = self.times_s
        return np.arange(steps)[None, :] * step_s + (t - t[0]).mean(axis=1)[:, None]


class Sampler:
    """Sampling windows from one MCP3208/MCP3008 on an open ``spi`` (spidev or the emulator)."""

    LATE_NS = 50_000

    def __init__(self, spi: SpiLike, chip: Chip | str = "mcp3208", clock: Clock | None = None):
        self.spi = spi
        self.chip = CHIPS[chip] if isinstance(chip, str) else chip
        # the emulator carries its own clock (emulated, or the host's with injected jitter); real hardware is
        # paced by the host's
        self.clock: Clock = clock if clock is not None else getattr(spi, "clock", None) or SpinClock()
        self._frames = [self.chip.frame(ch) for ch in range(8)]

    def read(self, channel: int) -> int:
        """One conversion of ``channel``."""
        return self.chip.decode(self.spi.xfer2(self._frames[channel]))

    def sample(self, channels: Sequence[int], steps: int, step_ns: int) -> SampleWindow:
        """``steps`` steps ``step_ns`` apart, each converting every channel in order, one ``xfer2`` each."""
        frames = [self._frames[ch] for ch in channels]
        slots = len(frames)
        xfer2 = self.spi.xfer2
        now = self.clock.now_ns
        sleep_until = self.clock.sleep_until
        replies: list[Any] = [None] * (slots * steps)
        starts = [0] * (slots * steps)
        ends = [0] * (slots * steps)
        late = 0
        k = 0
        t0 = now()
        for n in range(steps):
            due = t0 + n * step_ns
            t = now()
            if t < due:
                sleep_until(due * 1e-9)
            elif t - due > self.LATE_NS:
                late += 1
            for f in frames:
                starts[k] = now()
                replies[k] = xfer2(f)
                ends[k] = now()
                k += 1
        try:
            rx = np.array(replies, dtype=np.int32).reshape(steps, slots, -1)
            codes = ((rx[:, :, 1] & self.chip.high_mask) << 8) | rx[:, :, 2]
        except (ValueError, TypeError, IndexError, OverflowError):  # a reply that is not 3 bytes
            raise OSError(5, "SPI replies of unexpected length or content") from None
        shape = (steps, slots)
        return SampleWindow(np.ascontiguousarray(codes.T.astype(np.int16)),
                            np.ascontiguousarray(np.array(starts, dtype=np.int64).reshape(shape).T),
                            np.ascontiguousarray(np.array(ends, dtype=np.int64).reshape(shape).T), late)
