"""One Shelly device's bookkeeping: snapshot -> reading, counter continuity, gaps, retained state.

Why apart from the transport: polling over HTTP and following the device's own MQTT topics end in
the same place: a status snapshot at a time.  What turns that into correct readings is the same
for both and lives here:

- direction (``invert``) and the field tables (``fields.py``);
- **counters never decrease**: a device whose counters go down (``EMData.DeleteAllData``,
  ``ResetCounters``, a profile change) or that was replaced (another device id) is re-anchored with a
  per-counter offset kept in the retained state, so the published counter continues; the event is
  logged, counted (``counter_resets``, ``device_replaced``) and that reading is marked "estimated";
- **gaps are backfilled once**: when readings stop for longer than ``max(1.5 x interval, 60 s)``
  the gap becomes a pending window in the retained state; windows are filled from the device's
  minute records (``backfill.py``) and survive a producer restart until done;
- the **retained state** (``shelly/{device}/state``) is published only after the broker has
  acknowledged the readings it accounts for, so a restart never skips a reading the broker lacks.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from .backfill import Rows, Gap, build_readings
from .fields import COUNTER_METRICS, MeterLayout, map_status, worse
from .rpc import ShellyError

if TYPE_CHECKING:
    from bus.producer import ProducerContext
    from bus.state import StateSaver

STATE_VERSION = 1
RESET_EPS_WH = 0.1  # GetStatus counters have 0.01 Wh resolution; a drop beyond this is a reset
MIN_GAP_S = 60.0  # one record period: a shorter gap has no minute record to fill it
MAX_PENDING = 50
MAX_ATTEMPTS = 30  # polls a window is retried before it is given up
BATCH = 500  # readings per backfill message
SAVE_EVERY_S = 60.0

Fetch = Callable[[int, int], Rows]


class DeviceTracker:
    """Turns snapshots of one device into readings on the bus and keeps its retained state."""

    def __init__(self, ctx: "ProducerContext", device: str, *, interval: float, invert: bool,
                 saver: StateSaver, backfill: bool = True, backfill_max_s: float = 7 * 86400) -> None:
        self.ctx, self.device, self.interval, self.invert = ctx, device, interval, invert
        self.saver, self.backfill, self.backfill_max_s = saver, backfill, backfill_max_s
        self.state: dict[str, Any] = {}
        self._replaced = False
        self._saved_at: float | None = None
        self._online: bool | None = None

    # -- state ------------------------------------------------------------------------------------
    def restore(self) -> None:
        try:
            st = self.ctx.load_state(self.device)
        except Exception as exc:  # a broker hiccup must not stop the device loop
            self.ctx.log.warning("%s: could not load retained state: %s", self.device, exc)
            st = None
        if isinstance(st, dict) and st.get("v") == STATE_VERSION:
            self.state = st
            pending = len(st.get("pending") or [])
            self.ctx.log.info("%s: state restored (last reading %s, %d gap(s) to backfill)", self.device,
                              _iso(st.get("last_ts")), pending)
        elif st is not None:
            self.ctx.log.warning("%s: ignoring retained state of another version/shape", self.device)

    def _offer_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or self._saved_at is None or now - self._saved_at >= SAVE_EVERY_S:
            self.state["v"] = STATE_VERSION
            self.saver.offer(self.device, _copy(self.state))
            self._saved_at = now

    def close(self) -> None:
        self._offer_state(force=True)

    # -- identity -----------------------------------------------------------------------------------
    def identify(self, device_id: str, profile: MeterLayout) -> None:
        """Record which physical device (and profile) answers; another one means re-anchoring."""
        known_id, known_profile = self.state.get("device_id"), self.state.get("profile")
        if known_id and (known_id != device_id or (known_profile and known_profile != profile.name)):
            self.ctx.log.warning("%s: device changed from %s (%s) to %s (%s): counters re-anchored, pending "
                                 "backfill dropped", self.device, known_id, known_profile, device_id, profile.name)
            self.ctx.counters.inc("device_replaced")
            self._replaced = True
            self.state["pending"] = []
        self.state["device_id"], self.state["profile"] = device_id, profile.name

    def set_online(self, online: bool) -> None:
        if online != self._online:
            self._online = online
            self.ctx.set_device_status(self.device, online)

    # -- the main step ------------------------------------------------------------------------------
    def on_snapshot(self, ts: int, components: dict[str, Any], profile: MeterLayout,
                    fetch: Fetch | None = None) -> bool:
        """Publish the reading of a status snapshot taken at ``ts`` (epoch s); True if published."""
        ctx, st = self.ctx, self.state
        last_ts = st.get("last_ts")
        if last_ts is not None and ts <= last_ts:
            ctx.counters.inc("stale_readings")  # same second twice (1 s polls) or a clock set back
            if ts < last_ts:
                ctx.bad_input_log.warning(f"{self.device}:stale", "%s: device time %s is before the last "
                                          "reading (%s); reading skipped", self.device, _iso(ts), _iso(last_ts))
            return False
        mapped = map_status(profile, components, self.invert)
        self._count_problems(mapped)
        quality = mapped.quality

        prev_raw: dict[str, float] = st.setdefault("raw", {})
        prev_pub: dict[str, float] = st.setdefault("pub", {})
        offset: dict[str, float] = st.setdefault("offset", {})
        reset: list[str] = []
        replaced, self._replaced = self._replaced, False
        for m, v in mapped.counters.items():
            if replaced and m in prev_pub:
                offset[m] = prev_pub[m] - v  # continue from the old device's last value
                reset.append(m)
            elif m in prev_raw and v < prev_raw[m] - RESET_EPS_WH:
                offset[m] = prev_pub.get(m, prev_raw[m] + offset.get(m, 0.0))  # counting again from zero
                reset.append(m)
        pub = {}
        for m, v in mapped.counters.items():
            p = v + offset.get(m, 0.0)
            pub[m] = max(p, prev_pub.get(m, p))  # rounding jitter must not make a counter step back
        if reset:
            st["resets"] = int(st.get("resets", 0)) + 1
            ctx.counters.inc("counter_resets")
            ctx.log.warning("%s: %s: %s; published counters continue from %s", self.device,
                            "device replaced" if replaced else "counters went down (reset or data deleted)",
                            ", ".join(f"{m} {prev_raw.get(m, float('nan')):.2f} -> {mapped.counters[m]:.2f}"
                                      for m in reset[:2]), ", ".join(f"{m}={pub[m]:.2f}" for m in reset[:2]))
            quality = worse(quality, "estimated")
        metrics = dict(mapped.metrics)
        metrics.update({m: round(v, 3) for m, v in pub.items()})

        if self.backfill and last_ts is not None and not replaced and ts - last_ts > max(1.5 * self.interval,
                                                                                          MIN_GAP_S):
            self._add_window(last_ts, ts, prev_pub, pub)
        if st.get("pending") and fetch is not None:
            self.run_backfill(fetch, profile)

        ctx.publish_reading(self.device, metrics, ts=ts * 1000, quality=quality)
        st["last_ts"] = ts
        if pub:
            prev_raw.update(mapped.counters)
            prev_pub.update(pub)
            st["pub_ts"] = ts
        self._offer_state(force=bool(reset))
        return True

    def _count_problems(self, mapped: Any) -> None:
        ctx, log = self.ctx, self.ctx.bad_input_log
        if mapped.missing:
            ctx.counters.inc("missing_fields", len(mapped.missing))
            log.warning(f"{self.device}:missing", "%s: device answer lacks %s", self.device,
                        ", ".join(mapped.missing[:6]))
        if mapped.bad:
            ctx.counters.inc("bad_fields", len(mapped.bad))
            log.warning(f"{self.device}:bad", "%s: not a number: %s", self.device, ", ".join(mapped.bad[:6]))
        if mapped.errors:
            ctx.counters.inc("device_errors", len(mapped.errors))
            for err in set(mapped.errors):
                ctx.counters.inc("device_error." + err.replace(":", "."))
            log.warning(f"{self.device}:errors", "%s: device reports %s (reading quality %s)", self.device,
                        ", ".join(sorted(set(mapped.errors))), mapped.quality)

    # -- backfill -----------------------------------------------------------------------------------
    def _add_window(self, last_ts: int, ts: int, before: dict[str, float], after: dict[str, float]) -> None:
        w = Gap(start=int(last_ts), end=int(ts), anchor_ts=self.state.get("pub_ts"),
                   anchor=dict(before) or None, end_counters=dict(after) or None)
        if w.anchor_ts is None:
            w.anchor = None
        if ts - w.start > self.backfill_max_s:
            self.ctx.counters.inc("backfill_clipped")
            self.ctx.log.warning("%s: gap of %.1f days; backfilling only the last %.1f (backfill_max_days)",
                                 self.device, (ts - w.start) / 86400, self.backfill_max_s / 86400)
            w.start, w.anchor, w.anchor_ts = int(ts - self.backfill_max_s), None, None
        pending = self.state.setdefault("pending", [])
        pending.append(w.to_state())
        if len(pending) > MAX_PENDING:
            del pending[0]
            self.ctx.counters.inc("backfill_dropped")
        self.ctx.log.info("%s: no reading from %s to %s: will backfill from the device's records", self.device,
                          _iso(last_ts), _iso(ts))
        self._offer_state(force=True)

    def run_backfill(self, fetch: Fetch, profile: MeterLayout) -> None:
        """Fill the pending windows, oldest first; what cannot be done now stays pending."""
        ctx, st = self.ctx, self.state
        while st.get("pending"):
            if ctx.stopping.is_set():
                return
            w = Gap.from_state(st["pending"][0])
            lo, hi = w.fetch_range()
            try:
                rows = fetch(lo, hi)
            except (ShellyError, InterruptedError) as exc:
                w.attempts += 1
                ctx.counters.inc("backfill_failures")
                ctx.bad_input_log.warning(f"{self.device}:backfill",
                                          "%s: backfill of %s..%s failed (attempt %d): %s", self.device,
                                          _iso(w.start), _iso(w.end), w.attempts, exc)
                if w.attempts >= MAX_ATTEMPTS:
                    ctx.log.error("%s: giving up backfilling %s..%s", self.device, _iso(w.start), _iso(w.end))
                    ctx.counters.inc("backfill_abandoned")
                    st["pending"].pop(0)
                else:
                    st["pending"][0] = w.to_state()
                self._offer_state(force=True)
                return
            readings = build_readings(rows, profile, self.invert, w)
            published = 0
            for i in range(0, len(readings), BATCH):
                if ctx.stopping.is_set():
                    break
                chunk = readings[i:i + BATCH]
                ctx.publish_readings(self.device, chunk)
                published += len(chunk)
                ctx.counters.inc("backfilled_readings", len(chunk))
                last = chunk[-1]
                w.start = last["ts"] // 1000
                counters = {m: v for m, v in last["metrics"].items() if m in COUNTER_METRICS}
                if counters:
                    w.anchor, w.anchor_ts = counters, w.start
                    w.exact = w.exact and last["quality"] == "ok"
                st["pending"][0] = w.to_state()
                self._offer_state(force=True)
            if published < len(readings):
                return  # stopping: the rest stays pending for the next start
            st["pending"].pop(0)
            ctx.log.info("%s: backfilled %d minute reading(s) between %s and %s", self.device, published,
                         _iso(w.start if not readings else readings[0]["ts"] // 1000), _iso(w.end))
            self._offer_state(force=True)


def _iso(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj
