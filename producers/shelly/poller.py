"""``mode = "poll"``: read one device over HTTP RPC every ``interval``.

Each poll is one ``Shelly.GetStatus`` (every component and ``sys.unixtime`` in a single round
trip, so the reading is one consistent snapshot stamped with the device's clock, and an
auth-protected device costs one digest exchange, not three).  ``Shelly.GetDeviceInfo`` is asked at
start and after every outage (the device may have been replaced or switched profile meanwhile).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from .backfill import Rows, fetch_rows
from bus.state import StateSaver

from .device import DeviceTracker
from .fields import MeterLayout, profile_for
from .rpc import AuthError, ShellyError, ShellyRpc

if TYPE_CHECKING:
    import httpx

    from bus.producer import ProducerContext

    from . import DeviceSpec


class DevicePoller:
    def __init__(self, ctx: "ProducerContext", spec: "DeviceSpec", saver: StateSaver, *,
                 clock: Callable[[], float] = time.monotonic, transport: "httpx.BaseTransport | None" = None,
                 host_time: Callable[[], float] = time.time) -> None:
        self.ctx, self.spec, self.clock, self.host_time = ctx, spec, clock, host_time
        assert spec.host is not None
        self.rpc = ShellyRpc(spec.host, password=spec.password, timeout=spec.timeout,
                             data_timeout=spec.backfill_timeout, retries=spec.retries,
                             sleep=ctx.wait, should_stop=ctx.stopping.is_set, count=ctx.counters.inc,
                             transport=transport)
        self.tracker = DeviceTracker(ctx, spec.device, interval=spec.interval, invert=spec.invert, saver=saver,
                                     backfill=spec.backfill, backfill_max_s=spec.backfill_max_s)
        self.profile: MeterLayout | None = None
        self.device_id: str | None = None
        self._down_since: float | None = None

    def fetch(self, start: int, end: int) -> Rows:
        assert self.profile is not None
        return fetch_rows(self.rpc, self.profile, start, end, should_stop=self.ctx.stopping.is_set)

    def _identify(self) -> None:
        info = self.rpc.device_info()
        device_id = info.get("id")
        if not isinstance(device_id, str) or not device_id:
            raise _NotAShelly(f"Shelly.GetDeviceInfo has no id: {str(info)[:120]}")
        if info.get("gen") not in (2, 3, 4, None) or (info.get("app") not in (None, "Pro3EM", "S3EM")):
            self.ctx.bad_input_log.warning(f"{self.spec.device}:model", "%s: %s is a %s (%s), not a Pro 3EM; "
                                           "trying anyway", self.spec.device, device_id, info.get("app"),
                                           info.get("model"))
        self.profile = profile_for(info.get("profile"))
        if device_id != self.device_id:
            self.ctx.log.info("%s: %s is %s, model %s, firmware %s, profile %s%s", self.spec.device, self.rpc.url,
                              device_id, info.get("model"), info.get("ver"), self.profile.name,
                              ", auth on" if info.get("auth_en") else "")
        if info.get("auth_en") and not self.spec.password:
            self.ctx.bad_input_log.warning(f"{self.spec.device}:nopass", "%s: device has auth enabled but no "
                                           "password_file/password_env is configured", self.spec.device)
        self.device_id = device_id
        self.tracker.identify(device_id, self.profile)

    def poll_once(self) -> bool:
        """One poll: True when a reading was taken (published or, if stale, skipped)."""
        ctx, name = self.ctx, self.spec.device
        try:
            if self.device_id is None:
                self._identify()
            assert self.profile is not None
            status = self.rpc.status(require=self.profile.status_components)
        except (ShellyError, _NotAShelly) as exc:
            ctx.counters.inc("poll_failures")
            if isinstance(exc, AuthError):
                ctx.counters.inc("auth_failures")
            now = self.clock()
            if self._down_since is None:
                self._down_since = now
                ctx.log.warning("%s: poll failed: %s", name, exc)
            else:
                ctx.bad_input_log.warning(f"{name}:down", "%s: still failing for %.0f s: %s", name,
                                          now - self._down_since, exc)
            self.tracker.set_online(False)
            self.device_id = None  # ask who answers once it answers again
            return False
        if self._down_since is not None:
            ctx.log.info("%s: device answers again after %.0f s", name, self.clock() - self._down_since)
            self._down_since = None
        self.tracker.set_online(True)
        ctx.counters.inc("polls")
        ts = _unixtime(status)
        if ts is None:
            ctx.counters.inc("device_clock_unsynced")
            ctx.bad_input_log.warning(f"{name}:clock", "%s: device clock not set (sys.unixtime null): "
                                      "stamping with the host's clock", name)
            ts = int(self.host_time())
        self.tracker.on_snapshot(ts, status, self.profile, self.fetch if self.spec.backfill else None)
        return True

    def run(self) -> None:
        ctx = self.ctx
        self.tracker.restore()
        next_due = self.clock()
        try:
            while not ctx.stopping.is_set():
                try:
                    self.poll_once()
                except Exception:  # a bug or an answer no table foresaw: log it, keep polling
                    ctx.counters.inc("internal_errors")
                    ctx.log.exception("%s: unexpected error while polling", self.spec.device)
                next_due += self.spec.interval
                now = self.clock()
                if next_due < now:  # a slow poll or outage: skip the missed slots, keep the cadence
                    next_due = now + self.spec.interval - (now - next_due) % self.spec.interval
                if ctx.wait(next_due - now):
                    break
        finally:
            self.tracker.close()
            self.tracker.set_online(False)
            self.rpc.close()


class _NotAShelly(Exception):
    pass


def _unixtime(status: dict[str, Any]) -> int | None:
    sys_ = status.get("sys")
    value = sys_.get("unixtime") if isinstance(sys_, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1_000_000_000:
        return int(value)
    return None
