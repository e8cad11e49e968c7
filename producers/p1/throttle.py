"""Which telegrams become readings: a DSMR 5 meter sends every second, wattbus publishes every `interval`.

The interval is cut on the reading clock (the meter's, or the host's for meters without one) into
aligned slots (`interval = 10`: :00, :10, :20 ...). The first telegram of a new slot is published at
once, stamped with its own time, and carries:

- counters and states (energy, tariff, demand, failure counts): the values of that telegram, the latest;
- instantaneous values (power, voltage, current, ...): with `power = "mean"` the mean of every telegram
  since the previous reading (the span `period_s` = time since that reading), with `"latest"` that
  telegram's own values (`period_s` = 0).

A telegram with the same timestamp as the last reading (a repeated telegram) is not published again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from producers.p1.obis import averaged_keys

_AVERAGED = averaged_keys()


@dataclass(slots=True)
class ThrottledReading:
    ts: int
    metrics: dict[str, float]
    period_s: float = 0.0


@dataclass
class Throttle:
    interval_s: float = 10.0
    mode: str = "mean"
    _sums: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    _latest: dict[str, float] = field(default_factory=dict)
    _latest_ts: int | None = None
    _pending: int = 0
    _last_ts: int | None = None
    _last_slot: int | None = None

    def _slot(self, ts: int) -> int:
        step = int(self.interval_s * 1000)
        return ts // step if step > 0 else ts

    def add(self, ts: int, metrics: dict[str, float]) -> ThrottledReading | None:
        """Take one telegram's metrics; return the reading to publish now, if any."""
        if self._last_ts is not None and ts == self._last_ts:
            return None
        self._pending += 1
        self._latest_ts = ts
        self._latest.update(metrics)
        for key, value in metrics.items():
            if key in _AVERAGED:
                self._sums[key] = self._sums.get(key, 0.0) + value
                self._counts[key] = self._counts.get(key, 0) + 1
        slot = self._slot(ts)
        if self._last_slot is not None and slot == self._last_slot:
            return None
        return self._emit(slot)

    def flush(self) -> ThrottledReading | None:
        """The telegrams not yet published (on a lost connection or at stop), then start afresh."""
        reading = self._emit(None) if self._pending and self._latest_ts is not None else None
        self._last_slot = None
        return reading

    def _emit(self, slot: int | None) -> ThrottledReading:
        ts = self._latest_ts
        assert ts is not None
        metrics = dict(self._latest)
        period = 0.0
        if self.mode == "mean":
            for key, total in self._sums.items():
                metrics[key] = round(total / self._counts[key], 3)
            if self._last_ts is not None and max(self._counts.values(), default=0) > 1 and ts > self._last_ts:
                period = (ts - self._last_ts) / 1000
        reading = ThrottledReading(ts, metrics, period)
        self._sums.clear()
        self._counts.clear()
        self._latest.clear()
        self._pending = 0
        self._last_ts, self._last_slot = ts, slot
        return reading
