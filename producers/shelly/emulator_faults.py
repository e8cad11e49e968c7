"""Fault injection for the Shelly emulator: what a flaky network or a half-broken device does to an RPC.

``Faults.arm(name, n)`` fails the next n requests (optionally of one method), ``set_rate(name, p)`` a fraction
of them; the HTTP layer asks ``pick(method)`` per request and the answer shapes what it sends back. Transport
faults (``drop``, ``timeout``, ``http500``, ``garbage``, ``auth``) never reach the device; data faults
(``missing``, ``missing_component``) reach it and damage its answer (:func:`apply_data_fault`).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

FAULTS = ("drop", "timeout", "http500", "garbage", "missing", "missing_component", "auth")
MISSING_FIELDS = ("a_voltage", "b_current", "total_act_ret", "voltage", "total_act_ret_energy")
"""What the "missing" fault removes from any status object it answers."""
METER_COMPONENTS = ("em:", "emdata:", "em1:", "em1data:")


class Faults:
    """Fault switches: ``arm(name, n)`` fails the next n requests, ``set_rate(name, p)`` a fraction.

    ``method`` restricts a fault to one RPC method.  ``injected`` counts what was done.
    """

    def __init__(self, rates: dict[str, float] | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._armed: list[list[Any]] = []  # [name, remaining, method]
        self.rates: dict[str, float] = {}
        self._rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        for name, rate in (rates or {}).items():
            self.set_rate(name, rate)

    def arm(self, name: str, count: int = 1, method: str | None = None) -> None:
        _check_fault(name)
        with self._lock:
            self._armed.append([name, count, method])

    def set_rate(self, name: str, rate: float) -> None:
        _check_fault(name)
        with self._lock:
            self.rates[name] = rate

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
            self.rates.clear()

    def pick(self, method: str) -> str | None:
        with self._lock:
            for entry in self._armed:
                name, remaining, only = entry
                if remaining > 0 and (only is None or only == method):
                    entry[1] -= 1
                    self._armed = [e for e in self._armed if e[1] > 0]
                    self.injected[name] += 1
                    return name
            for name, rate in self.rates.items():
                if rate > 0 and self._rng.random() < rate:
                    self.injected[name] += 1
                    return name
        return None


def _check_fault(name: str) -> None:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")


def parse_faults(text: str) -> dict[str, float]:
    """``"timeout:0.01,http500:0.05,garbage"`` -> rates (a bare name means 0.05)."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rate = part.partition(":")
        _check_fault(name)
        rates[name] = float(rate) if rate else 0.05
    return rates



def apply_data_fault(fault: str | None, method: str, result: Any) -> Any:
    """The device's answer as a data fault leaves it: keys missing, or a whole meter component gone."""
    if fault == "missing" and isinstance(result, dict):
        return _strip(result)
    if fault == "missing_component" and isinstance(result, dict):
        if method == "Shelly.GetStatus":
            return {k: v for k, v in result.items() if not k.startswith(METER_COMPONENTS)}
        return {"id": result.get("id", 0)}
    return result


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: (_strip(v) if isinstance(v, dict) else v) for k, v in obj.items() if k not in MISSING_FIELDS}
