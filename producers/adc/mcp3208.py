"""Reading an MCP3208 through ``spidev`` (or the emulator, which has the same interface).

One conversion is one ``xfer2`` of the 3-byte single-ended frame ``[0x06 | ch >> 2, (ch & 3) << 6, 0]``
(start bit, SGL=1, D2 | D1 D0) and the 12-bit result is ``(rx[1] & 0x0F) << 8 | rx[2]``; ``xfer2`` holds CS
low for the whole frame, and the chip converts once per CS assertion.

A window is ``steps`` sampling steps spaced ``step_ns`` apart; in each step the circuit's channels are read
back to back (voltage first, then each current), and the time of every conversion is recorded, so the maths
knows the real step period and how far each current sample lags the voltage sample. The timestamps come
from the device's clock when it has one (the emulator), else from the host's ``perf_counter_ns``
(``SpinClock``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bus.clock import Clock


class SpiLike(Protocol):
    mode: int
    max_speed_hz: int

    def open(self, bus: int, device: int) -> None: ...
    def xfer2(self, data: list[int]) -> list[int]: ...
    def close(self) -> None: ...


def frame(channel: int) -> list[int]:
    """The single-ended conversion request for ``channel`` (0..7)."""
    if not 0 <= channel <= 7:
        raise ValueError(f"MCP3208 channel {channel} does not exist (0..7)")
    return [0x06 | (channel >> 2), (channel & 0x03) << 6, 0x00]


def decode(rx: Sequence[int]) -> int:
    """The 12-bit code in a reply to ``frame``: the low nibble of byte 1, then byte 2."""
    return ((rx[1] & 0x0F) << 8) | rx[2]


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
    spi.max_speed_hz = max_speed_hz  # far above the MCP3208's ~1-2 MHz limit
    return spi


@dataclass(frozen=True, slots=True)
class SampleWindow:
    """The samples of one circuit for one reading: ``codes[slot, step]`` and when each was converted."""

    codes: np.ndarray     # (slots, steps) int16, slot 0 = the first channel read in a step
    t_ns: np.ndarray      # (slots, steps) int64, the clock at the start of each conversion
    late_steps: int       # steps that started later than planned (pacing could not keep up)

    @property
    def step_s(self) -> float:
        """Mean time between two successive samples of the same channel."""
        steps = self.t_ns.shape[1]
        if steps < 2:
            return 0.0
        return float(self.t_ns[0, -1] - self.t_ns[0, 0]) / (steps - 1) * 1e-9

    @property
    def delays_s(self) -> np.ndarray:
        """Mean delay of each slot's conversion after slot 0's within a step."""
        return (self.t_ns - self.t_ns[0]).mean(axis=1) * 1e-9

    @property
    def end_ns(self) -> int:
        return int(self.t_ns[-1, -1])


class Mcp3208:
    """Sampling windows from one MCP3208 on an open ``spi`` (spidev or the emulator)."""

    LATE_NS = 50_000

    def __init__(self, spi: SpiLike, clock: Clock | None = None):
        self.spi = spi
        # the emulator carries its own clock (emulated time); real hardware is paced by the host's
        self.clock: Clock = clock if clock is not None else getattr(spi, "clock", None) or SpinClock()
        self._frames = [frame(ch) for ch in range(8)]

    def read(self, channel: int) -> int:
        """One conversion of ``channel``."""
        return decode(self.spi.xfer2(self._frames[channel]))

    def sample(self, channels: Sequence[int], steps: int, step_ns: int) -> SampleWindow:
        """``steps`` steps ``step_ns`` apart, each converting every channel in order, one ``xfer2`` each."""
        frames = [self._frames[ch] for ch in channels]
        slots = len(frames)
        xfer2 = self.spi.xfer2
        now = self.clock.now_ns
        sleep_until = self.clock.sleep_until
        codes = [0] * (slots * steps)
        stamps = [0] * (slots * steps)
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
                stamps[k] = now()
                rx = xfer2(f)
                codes[k] = ((rx[1] & 0x0F) << 8) | rx[2]
                k += 1
        c = np.array(codes, dtype=np.int16).reshape(steps, slots).T
        ts = np.array(stamps, dtype=np.int64).reshape(steps, slots).T
        return SampleWindow(np.ascontiguousarray(c), np.ascontiguousarray(ts), late)
