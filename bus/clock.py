"""Time, as the emulators, the simulated producers and the tests share it.

Code that must run faster than real time (a day of a simulated meter in a minute), or that a test drives by
hand (two hours pass in a line), takes a :class:`Clock` instead of calling ``time.time()``: the host's clock in
production (:class:`HostClock`), an :class:`EmulatedClock` elsewhere. One class does all the emulated cases:

- ``EmulatedClock(start, speed=0)``: stands still; only ``advance``/``set``/``sleep_until`` move it (a test
  scripts events at exact instants, an emulated chip advances by one conversion time per conversion);
- ``EmulatedClock(start, speed=60)``: runs 60x faster than the host from ``start`` (demo devices, the sim
  producer's accelerated meters); ``advance`` still jumps ahead ("two hours later").

Time is kept in integer nanoseconds, so an emulator advancing by microseconds a billion times stays exact.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

NS = 1_000_000_000


class Clock(Protocol):
    """Seconds on a timeline (epoch seconds for wall clocks) and a way to wait until a point on it."""

    def now(self) -> float: ...
    def now_ns(self) -> int: ...
    def sleep_until(self, t: float) -> None: ...


class HostClock:
    """The host's wall clock; ``sleep_until`` really sleeps."""

    def now(self) -> float:
        return time.time()

    def now_ns(self) -> int:
        return time.time_ns()

    def sleep_until(self, t: float) -> None:
        time.sleep(max(0.0, t - time.time()))

    def __call__(self) -> float:
        return time.time()


class EmulatedClock:
    """Emulated time: starts at ``start`` (epoch seconds; default now) and runs ``speed`` times faster than the
    host (``speed = 0``: only when moved). Calling the clock returns ``now()``, so it fits any ``() -> float``."""

    def __init__(self, start: float | None = None, speed: float = 0.0, *, idle_from: Clock | None = None,
                 idle_gap_s: float = 0.1) -> None:
        """``idle_from``: a standing clock still jumps over the idle gaps of that clock that are longer than
        ``idle_gap_s`` (an emulated chip keeps exact time while it is busy, and follows the wall clock while
        its reader waits for the next interval)."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.speed = speed
        self._lock = threading.Lock()
        self._base_ns = time.time_ns() if start is None else round(start * NS)
        self._host0_ns = time.monotonic_ns()
        self.start = self._base_ns / NS
        """Where this clock's timeline began (epoch seconds)."""
        self._idle_from, self._idle_gap_s = idle_from, idle_gap_s
        self._idle_last = idle_from.now() if idle_from is not None else 0.0

    def now_ns(self) -> int:
        if self._idle_from is not None:
            self._skip_idle_gap()
        if not self.speed:
            return self._base_ns
        return self._base_ns + round((time.monotonic_ns() - self._host0_ns) * self.speed)

    def _skip_idle_gap(self) -> None:
        assert self._idle_from is not None
        with self._lock:
            seen = self._idle_from.now()
            gap, self._idle_last = seen - self._idle_last, seen
            if gap > self._idle_gap_s:
                self._base_ns += round(gap * NS)

    def now(self) -> float:
        return self.now_ns() / NS

    __call__ = now

    def advance(self, seconds: float) -> float:
        """Jump ahead (never back); returns the new time."""
        return self.advance_ns(round(seconds * NS)) / NS

    def advance_ns(self, ns: int) -> int:
        with self._lock:
            self._base_ns += max(0, ns)
        return self.now_ns()

    def set(self, t: float) -> None:
        """Put the clock at ``t`` (epoch seconds), forwards or back (a test's "the device clock was reset")."""
        with self._lock:
            self._base_ns = round(t * NS)
            self._host0_ns = time.monotonic_ns()

    def real_seconds_until(self, t: float) -> float:
        """Host seconds until this clock shows ``t`` (0 when it already does; never when it stands still)."""
        ahead = t - self.now()
        if ahead <= 0:
            return 0.0
        return ahead / self.speed if self.speed else float("inf")

    def sleep_until(self, t: float) -> None:
        """A standing clock jumps to ``t``; a running one waits the host time it takes to get there."""
        if not self.speed:
            self.advance_ns(round(t * NS) - self._base_ns)
        else:
            time.sleep(self.real_seconds_until(t))
