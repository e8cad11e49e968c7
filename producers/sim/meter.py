"""One simulated meter: cumulative counters over a deterministic profile, live or daily upload, its state.

This module knows nothing about MQTT: ``step(now)`` says what to publish, ``state()`` what to keep
retained, ``update()`` applies a remote config change. The runner (``loop.py``) does the talking.

Readings sit on a fixed grid (multiples of ``interval`` since the epoch). The counters at a reading
are the counters at the previous one plus the profile's energy in between, so they never decrease.
Because the profile is a pure function, every reading after the last one *uploaded* can be rebuilt
from that reading's counters alone: the retained state holds only that anchor (plus remote overrides),
and a restarted meter regenerates what it had not sent yet, identical to what it would have sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from producers.sim.config import MeterConfig, MeterParams, effective, merge_update, params_of
from producers.sim.profile import LoadProfile, Site

STATE_VERSION = 1


@dataclass(frozen=True)
class MeterReading:
    ts_ms: int
    power_w: float
    import_wh: float
    export_wh: float

    def metrics(self) -> dict[str, float]:
        """Metric keys of the metrics table; power signed as a grid meter's (import +, export -)."""
        return {"power_w": round(self.power_w, 1),
                "energy_import_wh": round(self.import_wh, 3),
                "energy_export_wh": round(self.export_wh, 3)}

    def item(self) -> dict[str, Any]:
        """The reading as an element of ``ctx.publish_readings``."""
        return {"ts": self.ts_ms, "metrics": self.metrics()}


@dataclass
class Upload:
    """One message to publish: a single reading, or a batch (catch-up, or a whole day)."""

    readings: list[MeterReading]
    batch: bool


@dataclass
class SimMeter:
    config: MeterConfig
    site: Site
    seed: int
    interval_s: float
    default_upload: str = "live"
    backfill_s: float = 2 * 86400.0
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.serial = self.config.serial
        self.interval_ms = max(1, int(round(self.interval_s * 1000)))
        self.params: MeterParams = effective(self.config, {})
        self.profile = LoadProfile(self.serial, self.params, self.site, self.seed)
        self.anchor: MeterReading | None = None      # the last reading generated
        self.uploaded: MeterReading | None = None    # the last reading published (what the state keeps)
        self.pending: list[MeterReading] = []        # generated, not yet published (daily upload)
        self.skipped = 0

    # ---- configuration ------------------------------------------------------------------------
    @property
    def upload(self) -> str:
        return self.params.upload or self.default_upload

    def describe(self) -> dict[str, Any]:
        """The configuration this meter now runs (what it answers on sim/{serial}/config)."""
        return params_of(self.params) | {"upload": self.upload}

    def update(self, request: Any) -> list[Upload]:
        """Apply a remote change (decoded JSON object); raise ValueError naming the bad key.

        Switching from daily to live upload publishes what is pending at once.
        """
        params, overrides = merge_update(self.config, self.overrides, request)
        was_daily = self.upload == "daily"
        self.params, self.overrides = params, overrides
        self.profile = LoadProfile(self.serial, params, self.site, self.seed)
        if was_daily and self.upload == "live" and self.pending:
            return [self._flush()]
        return []

    # ---- state --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What must survive a restart: the last uploaded reading's counters and the remote overrides."""
        out: dict[str, Any] = {"v": STATE_VERSION, "overrides": dict(self.overrides)}
        if self.uploaded is not None:
            out |= {"ts": self.uploaded.ts_ms, "energy_import_wh": self.uploaded.import_wh,
                    "energy_export_wh": self.uploaded.export_wh}
        return out

    def restore(self, state: dict[str, Any] | None) -> list[str]:
        """Take counters and overrides from a retained state; return warnings for what was unusable."""
        if not state:
            return []
        warnings: list[str] = []
        try:
            ts = int(state["ts"])
            imp, exp = float(state["energy_import_wh"]), float(state["energy_export_wh"])
            if ts < 0 or imp < 0 or exp < 0:
                raise ValueError("negative value")
            self.anchor = self.uploaded = MeterReading(ts, 0.0, imp, exp)
        except (KeyError, TypeError, ValueError) as exc:
            warnings.append(f"state has no usable counters ({exc!r}); counters start from 0")
        overrides = state.get("overrides") or {}
        if overrides:
            try:
                self.params, self.overrides = merge_update(self.config, {}, overrides)
                self.profile = LoadProfile(self.serial, self.params, self.site, self.seed)
            except ValueError as exc:
                warnings.append(f"remote overrides in the state no longer apply ({exc}); using the file's")
        return warnings

    # ---- running ------------------------------------------------------------------------------
    def begin(self, origin_s: float) -> None:
        """Place a fresh meter (no state) so its first reading falls on the grid at ``origin_s``."""
        if self.anchor is None:
            first = (int(origin_s * 1000) // self.interval_ms) * self.interval_ms
            self.anchor = MeterReading(first - self.interval_ms, 0.0, 0.0, 0.0)

    def next_due_s(self) -> float:
        assert self.anchor is not None, "begin() first"
        return (self.anchor.ts_ms + self.interval_ms) / 1000.0

    def generate(self, now_s: float) -> list[MeterReading]:
        """Every grid reading after the last one up to ``now_s`` (readings older than backfill are skipped,
        their energy still counted)."""
        assert self.anchor is not None, "begin() first"
        now_ms = int(now_s * 1000)
        a = self.anchor
        cut = ((now_ms - int(self.backfill_s * 1000)) // self.interval_ms) * self.interval_ms
        if cut > a.ts_ms:
            imp, exp = self.profile.energy(a.ts_ms / 1000, [cut / 1000])
            self.skipped += (cut - a.ts_ms) // self.interval_ms
            a = MeterReading(cut, 0.0, a.import_wh + float(imp[0]), a.export_wh + float(exp[0]))
            self.anchor = a
        count = (now_ms - a.ts_ms) // self.interval_ms
        if count <= 0:
            return []
        ts = a.ts_ms + self.interval_ms * np.arange(1, count + 1, dtype=np.int64)
        t_s = ts / 1000.0
        imp, exp = self.profile.energy(a.ts_ms / 1000, t_s)
        imp, exp = np.maximum.accumulate(imp), np.maximum.accumulate(exp)  # float rounding never goes back
        power = self.profile.power(t_s)
        out = [MeterReading(int(t), float(p), a.import_wh + float(i), a.export_wh + float(e))
               for t, p, i, e in zip(ts, power, imp, exp)]
        self.anchor = out[-1]
        return out

    def step(self, now_s: float, catch_up: bool = False) -> list[Upload]:
        """What to publish now. Live: each new reading on its own (a catch-up as one batch). Daily: each
        local day that has ended, as one batch; today's readings wait."""
        new = self.generate(now_s)
        if not new:
            return []
        if self.upload == "live":
            self.pending.extend(new)
            if catch_up and len(self.pending) > 1:
                return [self._flush()]
            uploads = [Upload([r], False) for r in self.pending]
            self.pending = []
            self.uploaded = new[-1]
            return uploads
        uploads = []
        for r in new:
            if self.pending and self.local_date(r) != self.local_date(self.pending[0]):
                uploads.append(self._flush())
            self.pending.append(r)
        return uploads

    def local_date(self, r: MeterReading) -> date:
        return self.profile.date_of(r.ts_ms / 1000)

    def _flush(self) -> Upload:
        batch, self.pending = self.pending, []
        self.uploaded = batch[-1]
        return Upload(batch, True)
