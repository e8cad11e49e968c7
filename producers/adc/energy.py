"""Import and export energy counters integrated from power, kept across restarts in the retained state.

DESIGN: a producer writes nothing to local disk; the counters it integrates itself are published retained
on ``adc/{device}/state`` with every reading and restored from there at start. The state is saved before
the reading that carries the same totals, so a restart never makes a published counter go backwards.
"""

from __future__ import annotations

import math
from typing import Any

STATE_VERSION = 1


class EnergyCounter:
    """Never-decreasing totals in Wh: ``import_wh`` while power is positive (the device's natural
    direction: grid import, solar production, load consumption), ``export_wh`` while negative."""

    def __init__(self, interval_s: float, import_wh: float = 0.0, export_wh: float = 0.0,
                 max_gap_intervals: float = 5.0):
        self.interval_s = interval_s
        self.import_wh = import_wh
        self.export_wh = export_wh
        self.max_gap_s = max_gap_intervals * interval_s
        self._last_s: float | None = None

    def add(self, power_w: float, now_s: float) -> None:
        """Count ``power_w`` over the time since the previous reading (the first after a start counts one
        interval; a gap longer than ``max_gap_s`` - the process was stopped, the host suspended - counts
        one interval too: nobody measured the rest)."""
        if not math.isfinite(power_w):
            return
        dt = self.interval_s if self._last_s is None else now_s - self._last_s
        if dt < 0 or dt > self.max_gap_s:
            dt = self.interval_s
        self._last_s = now_s
        wh = power_w * dt / 3600.0
        if wh >= 0:
            self.import_wh += wh
        else:
            self.export_wh -= wh

    def state(self, ts_ms: int | None = None) -> dict[str, Any]:
        """What goes into the retained ``state`` message."""
        doc: dict[str, Any] = {"v": STATE_VERSION, "energy_import_wh": self.import_wh,
                               "energy_export_wh": self.export_wh}
        if ts_ms is not None:
            doc["ts"] = ts_ms
        return doc

    def restore(self, state: Any) -> str | None:
        """Continue from a retained state; return why it was not usable (None when restored or absent)."""
        if state is None:
            return None
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            return f"unknown state format: {str(state)[:200]}"
        values = []
        for key in ("energy_import_wh", "energy_export_wh"):
            v = state.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                return f"state has no valid {key}: {v!r}"
            values.append(float(v))
        self.import_wh, self.export_wh = values
        return None
