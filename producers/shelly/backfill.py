"""Backfill: the minutes missed while the producer or the device was unreachable, from EMData.

Why: a Pro 3EM keeps ~60 days of one-minute records (interval energies, min/max/avg of power,
voltage, current).  After an outage the producer reads the records of the gap and publishes one
reading per minute, so the stored series has neither a hole nor a duplicate.

Fetching (``fetch_rows``): ``<NS>.GetRecords`` says which spans exist (a new block after each power
loss); each span is read with ``<NS>.GetData`` in windows of at most a day, following
``next_record_ts`` when the device chunks its answer; columns are found by the returned ``keys``,
never by position.

Reconstruction (``build_readings``): a record holds the energy of its own period, not the counter.
Counters are rebuilt by a prefix sum anchored at the last counters published before the gap
(a record straddling the anchor contributes the part after it, pro rata) and clamped to the
counters read after the gap, so they never decrease and never pass the next live reading.
Readings are "ok" when a record starts exactly at the anchor and nothing had to be clamped (every
value is then a device measurement or an exact sum of them); otherwise "estimated".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .fields import COUNTER_METRICS, MeterLayout, apply_derived
from .rpc import BadResponse, RpcError, ShellyRpc

if TYPE_CHECKING:  # numpy is imported by the functions that fill arrays: a poller without an outage never
    import numpy as np  # needs it (5 MB of RSS)

DAY_S = 86400
MAX_PERIOD_S = 300  # longest record period a Shelly meter uses (3EM Gen3: 5 min); Pro 3EM: 60 s
CLAMP_TOLERANCE_WH = 0.5  # overshoot below this is rounding of the records, not an estimate


@dataclass
class Rows:
    """Records of one or more data ids merged on their timestamps, as arrays."""

    ts: np.ndarray  # int64, record start (epoch s)
    period: np.ndarray  # int64, seconds
    values: np.ndarray  # float64 (rows x columns), NaN where a record lacks a value
    columns: dict[tuple[str, str], int] = field(default_factory=dict)

    def column(self, comp: str, key: str) -> np.ndarray | None:
        idx = self.columns.get((comp, key))
        return None if idx is None else self.values[:, idx]

    def __len__(self) -> int:
        return len(self.ts)


def _spans(rpc: ShellyRpc, namespace: str, data_id: int, start: int, end: int) -> list[tuple[int, int]]:
    """[first, last] record timestamps that exist within [start, end], from GetRecords."""
    try:
        blocks: list[dict[str, Any]] = []
        cursor = start
        for _ in range(100):  # the device pages its block list when it is long
            got = rpc.get_records(namespace, data_id, cursor).get("data_blocks")
            if not isinstance(got, list):
                raise BadResponse(f"{namespace}.GetRecords: no data_blocks list")
            fresh = [b for b in got if isinstance(b, dict) and all(isinstance(b.get(k), int) for k in
                                                                  ("ts", "period", "records"))]
            fresh = [b for b in fresh if b["period"] > 0 and b["ts"] + b["period"] * b["records"] > cursor]
            if not fresh:
                break
            blocks += fresh
            last_end = max(b["ts"] + b["period"] * b["records"] for b in fresh)
            if last_end > end or last_end <= cursor:
                break
            cursor = last_end
    except RpcError:
        return [(start, end)]  # firmware without GetRecords: ask GetData for everything
    spans = []
    for b in blocks:
        first = max(start, b["ts"])
        last = min(end, b["ts"] + b["period"] * (b["records"] - 1))
        if first <= last:
            spans.append((first, last))
    return sorted(set(spans))


def fetch_rows(rpc: ShellyRpc, profile: MeterLayout, start: int, end: int, *,
               window_s: int = DAY_S, should_stop: Callable[[], bool] = lambda: False) -> Rows:
    """Every record with ts in [start, end], for all of the profile's data ids."""
    import numpy as np

    merged: dict[int, tuple[int, dict[tuple[str, str], float]]] = {}
    for data_id in profile.data_ids:
        comp = str(data_id)
        for first, last in _spans(rpc, profile.data_namespace, data_id, start, end):
            w0 = first
            while w0 <= last:
                if should_stop():
                    raise InterruptedError("stopping")
                w1 = min(last, w0 + window_s - 1)
                cursor = w0
                for _ in range(10_000):
                    result = rpc.get_data(profile.data_namespace, data_id, cursor, w1)
                    for ts, period, row in _rows_of(result, comp):
                        if w0 <= ts <= w1:
                            merged.setdefault(ts, (period, {}))[1].update(row)
                    nxt = result.get("next_record_ts")
                    if not isinstance(nxt, int) or nxt <= cursor or nxt > w1:
                        break
                    cursor = nxt
                w0 = w1 + 1
    columns: dict[tuple[str, str], int] = {}
    for _, row in merged.values():
        for key in row:
            columns.setdefault(key, len(columns))
    stamps = sorted(merged)
    values = np.full((len(stamps), len(columns)), np.nan)
    for i, ts in enumerate(stamps):
        for key, v in merged[ts][1].items():
            values[i, columns[key]] = v
    return Rows(ts=np.array(stamps, dtype=np.int64),
                period=np.array([merged[t][0] for t in stamps], dtype=np.int64),
                values=values, columns=columns)


def _rows_of(result: dict[str, Any], comp: str):
    """Yield (ts, period, {(comp, key): value}) from a GetData result, indexed by its ``keys``."""
    keys = result.get("keys")
    data = result.get("data")
    if not isinstance(keys, list) or not isinstance(data, list):
        raise BadResponse("GetData result without keys/data lists")
    names = [(comp, str(k)) for k in keys]
    for block in data:
        if not isinstance(block, dict):
            continue
        ts, period, rows = block.get("ts"), block.get("period"), block.get("values")
        try:
            ts, period = int(ts), int(period)  # some firmware documents period as a string
        except (TypeError, ValueError):
            continue
        if period <= 0 or not isinstance(rows, list):
            continue
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(names):
                continue
            yield ts + i * period, period, {
                n: float(v) for n, v in zip(names, row)
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }


@dataclass
class Gap:
    """A gap to fill: publish records ending in (start, end); counters anchored as described."""

    start: int
    end: int
    anchor_ts: int | None = None
    anchor: dict[str, float] | None = None  # published counters at anchor_ts
    end_counters: dict[str, float] | None = None  # published counters at end
    exact: bool = True  # False once the anchor itself is a reconstruction that was estimated
    attempts: int = 0

    def to_state(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "anchor_ts": self.anchor_ts, "anchor": self.anchor,
                "end_counters": self.end_counters, "exact": self.exact, "attempts": self.attempts}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Gap":
        return cls(start=int(d["start"]), end=int(d["end"]),
                   anchor_ts=None if d.get("anchor_ts") is None else int(d["anchor_ts"]),
                   anchor=_float_dict(d.get("anchor")), end_counters=_float_dict(d.get("end_counters")),
                   exact=bool(d.get("exact", True)), attempts=int(d.get("attempts", 0)))

    def fetch_range(self) -> tuple[int, int]:
        lo = self.start if self.anchor_ts is None else min(self.start, self.anchor_ts)
        return lo - MAX_PERIOD_S + 1, self.end - 1


def _float_dict(d: Any) -> dict[str, float] | None:
    if not isinstance(d, dict):
        return None
    return {str(k): float(v) for k, v in d.items() if isinstance(v, (int, float))}


def build_readings(rows: Rows, profile: MeterLayout, invert: bool, window: Gap) -> list[dict[str, Any]]:
    """Readings (``{"ts", "period_s", "quality", "metrics"}``) for the records ending in the window."""
    import numpy as np

    n = len(rows)
    if n == 0:
        return []
    ends = rows.ts + rows.period
    # interval values per metric, walking the profile's record table
    energies: dict[str, np.ndarray] = {}
    gauges: dict[str, np.ndarray] = {}
    for f in profile.records:
        cols = [rows.column(c, k) for c, k in f.sources]
        present = [c for c in cols if c is not None]
        if not present or (f.reduce == "sum" and len(present) != len(cols)):
            continue
        arr = present[0] if f.reduce == "first" else np.sum(present, axis=0)
        (energies if f.counter else gauges)[f.name(invert)] = arr
    holes = np.zeros(n, dtype=bool)
    for arr in energies.values():
        holes |= np.isnan(arr)

    # counters: prefix sums of the energy after the anchor, clamped to the counters after the gap
    counters: dict[str, np.ndarray] = {}
    clamped = np.zeros(n, dtype=bool)
    straddle = False
    for m, e in energies.items():
        if m not in COUNTER_METRICS:
            continue
        e = np.clip(np.nan_to_num(e, nan=0.0), 0.0, None)
        top = (window.end_counters or {}).get(m)
        base = (window.anchor or {}).get(m)
        if base is not None and window.anchor_ts is not None:
            a = window.anchor_ts
            share = np.where(rows.ts >= a, 1.0, np.clip((ends - a) / rows.period, 0.0, 1.0))
            # exact only if a record starts right at the anchor: otherwise the anchor's minute is
            # either split pro rata (a record straddles it) or missing (the device booted then)
            straddle = straddle or not bool(np.any(rows.ts == a))
            c = base + np.cumsum(e * share)
        elif top is not None:  # no anchor before the gap: count back from the one after it
            c = top - (np.cumsum(e[::-1])[::-1] - e)
            clamped |= True  # the partial minute before ``end`` is unknown
        else:
            continue
        if top is not None:
            clamped |= c > top + CLAMP_TOLERANCE_WH
            c = np.minimum(c, top)
        counters[m] = c

    exact = window.exact and not straddle
    out: list[dict[str, Any]] = []
    for i in np.nonzero((ends > window.start) & (ends < window.end))[0]:
        period = float(rows.period[i])
        metrics: dict[str, float] = {}
        for m, arr in energies.items():
            if not np.isnan(arr[i]):
                metrics[m] = float(arr[i])
        for m, arr in gauges.items():
            if not np.isnan(arr[i]):
                metrics[m] = float(arr[i])
        apply_derived(profile.record_derived, metrics, period)
        for m in list(metrics):  # interval energies were inputs only; the counters replace them
            if m in COUNTER_METRICS:
                del metrics[m]
        for m, arr in counters.items():
            metrics[m] = round(float(arr[i]), 3)
        for m in ("power_w", "power_l1_w", "power_l2_w", "power_l3_w", "energy_wh"):
            if m in metrics:
                metrics[m] = round(metrics[m], 3)
        ok = not holes[i] and (not counters or (exact and not clamped[i]))
        out.append({"ts": int(ends[i]) * 1000, "period_s": period, "quality": "ok" if ok else "estimated",
                    "metrics": metrics})
    return out
