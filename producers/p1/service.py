"""The p1 producer's main loop: connect, read, publish, and reconnect with backoff when the line drops.

Connection handling: each attempt opens the port and reads until it fails or goes quiet for `timeout`
seconds. Attempts that produced no telegram are retried by tenacity with exponential backoff (1 s up to
`retry_max`); a connection that did deliver telegrams is reopened at once, with a fresh backoff. The
device status is `online` while telegrams arrive and `offline` otherwise.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import tenacity

from producers.p1.decode import Sample
from producers.p1.obis import VERSIONS
from producers.p1.reader import ConnectionLost, Decoded, P1Reader, Rejected
from producers.p1.throttle import ThrottledReading, Throttle

if TYPE_CHECKING:
    from bus.producer import ProducerContext
    from producers.p1 import Config

CLOCK_SKEW_WARN_MS = 300_000
"""Warn (rate-limited) when the meter's clock is this far from the host's."""
NOT_DEAD_LETTERED = {"trailer"}
"""Text lines between telegrams that some gateways add: counted, not dead-lettered."""


class _Lost(Exception):
    """The connection ended; ``productive`` if it delivered telegrams first (reconnect without waiting)."""

    def __init__(self, reason: str, productive: bool):
        super().__init__(reason)
        self.productive = productive


class P1Service:
    def __init__(self, ctx: ProducerContext, cfg: Config):
        self.ctx = ctx
        self.cfg = cfg
        self.device = cfg.device or ctx.name
        tz = ZoneInfo(cfg.timezone) if cfg.timezone else ctx.tz
        self.reader = P1Reader(cfg.port, VERSIONS[cfg.dsmr], tz)
        self.throttle = Throttle(cfg.interval, cfg.power)
        self.online: bool | None = None
        self.sub_last: dict[str, int] = {}
        self.sub_online: set[str] = set()
        self.last_host_ts = 0
        # dsmr_parser logs every bad line at ERROR with a traceback; we count, dead-letter and log
        # (rate-limited) ourselves.
        logging.getLogger("dsmr_parser").setLevel(logging.CRITICAL)

    # -- main loop --------------------------------------------------------------------------------------
    def run(self) -> None:
        self.ctx.log.info("reading DSMR %s telegrams from %s as device %r", self.cfg.dsmr, self.cfg.port, self.device)
        try:
            while not self.ctx.stopping.is_set():
                try:
                    self._retrying()(self._session)
                except _Lost as lost:  # it had worked: reconnect at once
                    self.ctx.counters.inc("reconnects")
                    self.ctx.log.warning("%s: %s; reconnecting", self.cfg.port, lost)
                except ConnectionLost:  # raised only once stopping
                    break
        finally:
            self._publish(self.throttle.flush())
            self._set_online(False)

    def _retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(ConnectionLost),
            wait=tenacity.wait_exponential(multiplier=1, min=1, max=self.cfg.retry_max),
            stop=lambda state: self.ctx.stopping.is_set(),
            sleep=self.ctx.wait,
            before_sleep=self._before_retry,
            reraise=True,
        )

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        self.ctx.counters.inc("connect_failures")
        self.ctx.bad_input_log.warning("connect", "%s (attempt %d); retrying in %.0f s", exc, state.attempt_number, wait)

    def _session(self) -> None:
        """One connection: returns when stopping; raises ConnectionLost / _Lost when it ends."""
        got = 0
        try:
            self.reader.open()
            last_good = time.monotonic()
            while not self.ctx.stopping.is_set():
                for item in self.reader.poll_once():
                    if isinstance(item, Decoded):
                        got += 1
                        last_good = time.monotonic()
                        self._telegram(item)
                    else:
                        self._reject(item)
                if time.monotonic() - last_good > self.cfg.timeout:
                    raise ConnectionLost(f"no complete telegram for {self.cfg.timeout:.0f} s")
        except ConnectionLost as exc:
            self._connection_ended()
            if self.ctx.stopping.is_set():
                return
            if got:
                raise _Lost(str(exc), productive=True) from None
            raise
        finally:
            for item in self.reader.close():
                self._reject(item)

    def _connection_ended(self) -> None:
        self._publish(self.throttle.flush())
        self._set_online(False)

    # -- telegrams ---------------------------------------------------------------------------------------
    def _telegram(self, item: Decoded) -> None:
        self.ctx.counters.inc("telegrams")
        self._set_online(True)
        sample: Sample = item.sample
        now = int(time.time() * 1000)
        if self.cfg.meter_clock and sample.ts is not None:
            ts = sample.ts
        else:  # host clock: telegrams that arrive in one burst still get distinct, increasing stamps
            ts = self.last_host_ts = max(now, self.last_host_ts + 1)
        if abs(ts - now) > CLOCK_SKEW_WARN_MS:
            self.ctx.bad_input_log.warning("clock", "meter clock is %.0f s off the host's", (ts - now) / 1000)
        if sample.metrics:
            self._publish(self.throttle.add(ts, sample.metrics))
        for sub in sample.subs:
            device = f"{self.device}_{sub.suffix}"
            sub_ts = sub.ts if (self.cfg.meter_clock and sub.ts is not None) else ts
            last = self.sub_last.get(device)
            if last is not None and sub_ts <= last:
                continue  # the same capture as before (sub-meters report every 5 min or hourly)
            if device not in self.sub_online:
                self.sub_online.add(device)
                self.ctx.set_device_status(device, True)
            self.sub_last[device] = sub_ts
            self.ctx.publish_reading(device, {sub.key: sub.value}, ts=sub_ts)

    def _publish(self, reading: ThrottledReading | None) -> None:
        if reading is not None:
            self.ctx.publish_reading(self.device, reading.metrics, ts=reading.ts, period_s=reading.period_s)

    def _reject(self, item: Rejected) -> None:
        if item.reason in NOT_DEAD_LETTERED:
            self.ctx.counters.inc("ignored_lines")
            return
        self.ctx.counters.inc("rejected")
        self.ctx.counters.inc(f"rejected_{item.reason}")
        self.ctx.dead_letter(item.raw, f"{item.reason}: {item.detail}", topic=self.cfg.port)

    def _set_online(self, online: bool) -> None:
        if self.online is online:
            return
        self.online = online
        self.ctx.set_device_status(self.device, online)
        if online:
            self.ctx.log.info("%s: receiving telegrams", self.cfg.port)
        else:
            for device in sorted(self.sub_online):
                self.ctx.set_device_status(device, False)
            self.sub_online.clear()
