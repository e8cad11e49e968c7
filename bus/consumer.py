"""The consumer side of the bus: validated readings in batches, acknowledged only once handled.

A consumer plugin calls ``ctx.consume_readings(handler)``. Messages are decoded, validated and checked for
plausibility (the config's ``[readings]`` limits); bad ones go to ``wattbus/dlq/{process}`` with their reason
(and are acknowledged: they will never get better), and a batch with some bad readings keeps its good ones.
Good readings reach ``handler`` in batches, and only when it returns are the messages acknowledged.

What a handler raises decides what happens, because a batch that can never be written must not block the
stream (it would be redelivered, and refused, forever):

- ``bus.sinks.DataError``: the database refused *these readings*. The batch is split in halves, each half
  tried again, down to the single readings the database refuses (:func:`write_isolating`); those go to the
  DLQ with the database's reason, the rest is stored, everything is acknowledged. A few bad readings in a
  batch of n cost about 2·log2(n) extra writes each.
- anything else (the database is down, locked, full): retried with backoff, nothing acknowledged
  meanwhile, so the broker keeps the messages in the persistent session; a crash means redelivery, which
  idempotent sinks absorb.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_not_exception_type, wait_exponential

from bus import envelope, topics
from bus.envelope import EnvelopeError, Reading
from bus.mqtt import Message
from bus.runtime import ProcessContext
from bus.sinks.base import DataError

Handler = Callable[[list[Reading]], None]
DLQ_REJECTS_LISTED = 100


class Stopping(Exception):
    """Raised out of a retry loop when the process is asked to stop."""


def write_isolating(write: Callable[[list[Reading]], Any], readings: Sequence[Reading],
                    poison: Callable[[Reading, str], None]) -> int:
    """Write ``readings``; on DataError bisect until the refused readings are found and hand each to
    ``poison(reading, reason)``. Returns how many were refused. Any other exception propagates (the caller
    retries the whole batch: what was written meanwhile is written again, idempotently)."""
    try:
        write(list(readings))
        return 0
    except DataError as exc:
        if len(readings) == 1:
            poison(readings[0], str(exc))
            return 1
        half = len(readings) // 2
        return (write_isolating(write, readings[:half], poison)
                + write_isolating(write, readings[half:], poison))


class ConsumerContext(ProcessContext):
    kind = "consumer"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._inbox: queue.Queue[Message] = queue.Queue()
        self.last_lag_ms = 0.0
        self.limits = self.app.readings.limits()
        self.add_health(lambda: {"inbox": self._inbox.qsize(), "lag_ms": round(self.last_lag_ms, 1)})

    def subscribe(self, topic_filter: str, callback: Callable[[Message], None], *,
                  outside_prefix: bool = False) -> None:
        """Plain subscription (status, state, commands): ``callback`` runs on the MQTT thread, then acked.

        Retained messages on ``topic_filter`` arrive after each start, also on a resumed session.
        ``outside_prefix``: another system's topic (Home Assistant's), used without the site prefix."""

        def cb(msg: Message) -> None:
            try:
                callback(msg)
            finally:
                msg.ack()

        self.client.subscribe(topic_filter, cb, outside_prefix=outside_prefix)

    def consume_readings(self, handler: Handler, *, topic_filter: str | list[str] = topics.ALL_READINGS,
                         group: str | None = None, batch_max: int = 20_000, batch_wait: float = 0.05) -> None:
        """Run until stopping: feed validated readings to ``handler`` in batches, ack after it returns.

        ``topic_filter`` is one filter or several; ``group`` subscribes through ``$share/{group}/`` so several copies split the stream.
        ``batch_max`` counts readings; ``batch_wait`` is how long to gather a batch once one message is in.
        """
        for f in [topic_filter] if isinstance(topic_filter, str) else topic_filter:
            self.client.subscribe(topics.shared(group, f) if group else f, self._inbox.put)
        retrying = Retrying(
            wait=wait_exponential(multiplier=0.5, max=30),
            retry=retry_if_not_exception_type(Stopping),
            sleep=self._sleep_or_stop,
            before_sleep=self._log_retry,
            reraise=True,
        )
        deadline: float | None = None
        while True:
            if self.stopping.is_set():
                deadline = deadline or time.monotonic() + 5.0
                if self._inbox.empty() or time.monotonic() > deadline:
                    return
            batch = self._gather(batch_max, batch_wait)
            if not batch:
                continue
            readings = self._validate(batch)
            if readings:
                try:
                    retrying(write_isolating, handler, readings, self.poison)
                except Stopping:
                    return  # unacknowledged: the broker redelivers them to the next run
                except Exception:
                    if self.stopping.is_set():
                        return
                    raise
                now = time.time() * 1000
                self.last_lag_ms = now - readings[-1].ts
                self.counters.inc("readings_handled", len(readings))
            for msg in batch:
                msg.ack()
            self.counters.inc("messages", len(batch))

    def poison(self, reading: Reading, reason: str) -> None:
        """A reading the sink refused (DataError, isolated): to the DLQ with the database's reason."""
        self.counters.inc("readings_refused_by_sink")
        payload = envelope.encode_reading(reading.source, reading.device, reading.ts, reading.metrics,
                                          seq=reading.seq, period_s=reading.period_s, quality=reading.quality)
        self.dead_letter(payload, f"the sink refused this reading: {reason}",
                         topics.reading(reading.source, reading.device))

    # -- internals -------------------------------------------------------------------------------
    def _gather(self, batch_max: int, batch_wait: float) -> list[Message]:
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        size = first.payload.count(b'"ts"')
        end = time.monotonic() + batch_wait
        while size < batch_max:
            left = end - time.monotonic()
            try:
                msg = self._inbox.get(timeout=left) if left > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            batch.append(msg)
            size += msg.payload.count(b'"ts"')
        return batch

    def _validate(self, batch: list[Message]) -> list[Reading]:
        readings: list[Reading] = []
        now = int(time.time() * 1000)
        for msg in batch:
            try:
                got = envelope.decode_checked(msg.payload, self.limits, now)
                parts = msg.topic.split("/")
                if len(parts) == 3 and (parts[0], parts[1]) != (got.source, got.device):
                    raise EnvelopeError(f"topic {msg.topic[:200]} does not match the envelope's "
                                        f"source/device {got.source}/{got.device}")
            except EnvelopeError as exc:
                self.counters.inc("messages_rejected")
                self.dead_letter(msg.payload, str(exc), msg.topic)
                continue
            if got.rejected:
                self._reject_some(msg, got)
            readings.extend(got.readings)
        return readings

    def _reject_some(self, msg: Message, got: envelope.Decoded) -> None:
        """Some readings of a batch are bad: one dead letter naming each (up to 100) with its reason."""
        n, total = len(got.rejected), len(got.rejected) + len(got.readings)
        self.counters.inc("readings_rejected", n)
        first = got.rejected[0]
        reason = f"{n} of {total} readings rejected; readings[{first.index}]: {first.reason}"
        listed = [{"index": r.index, "ts": r.ts, "reason": r.reason[:300]}
                  for r in got.rejected[:DLQ_REJECTS_LISTED]]
        self.dead_letter(msg.payload, reason, msg.topic, rejected=listed, rejected_count=n)

    def _sleep_or_stop(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise Stopping

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.counters.inc("handler_retries")
        if state.attempt_number == 1:
            self.log.warning("handling failed, will retry with backoff (nothing acknowledged): %s", exc)
