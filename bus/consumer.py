"""The consumer side of the bus: validated readings in batches, acknowledged only once handled.

A consumer plugin calls ``ctx.consume_readings(handler)``. Messages are decoded and validated; bad ones go
to ``wattbus/dlq/{process}`` with their reason (and are acknowledged: they will never get better); good
readings reach ``handler`` in batches, and only when it returns are the messages acknowledged, in the order
they arrived. A handler that raises (a database outage) is retried with backoff and nothing is acknowledged
meanwhile, so the broker keeps everything in the persistent session; a crash means redelivery, which
idempotent sinks absorb.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_not_exception_type, wait_exponential

from bus import envelope, topics
from bus.envelope import EnvelopeError, Reading
from bus.mqtt import Message
from bus.runtime import ProcessContext

Handler = Callable[[list[Reading]], None]


class Stopping(Exception):
    """Raised out of a retry loop when the process is asked to stop."""


class ConsumerContext(ProcessContext):
    kind = "consumer"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._inbox: queue.Queue[Message] = queue.Queue()
        self.last_lag_ms = 0.0
        self.add_health(lambda: {"inbox": self._inbox.qsize(), "lag_ms": round(self.last_lag_ms, 1)})

    def subscribe(self, topic_filter: str, callback: Callable[[Message], None]) -> None:
        """Plain subscription (status, state, commands): ``callback`` runs on the MQTT thread, then acked."""

        def cb(msg: Message) -> None:
            try:
                callback(msg)
            finally:
                msg.ack()

        self.client.subscribe(topic_filter, cb)

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
                    retrying(handler, readings)
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
        for msg in batch:
            try:
                got = envelope.decode(msg.payload)
                parsed = topics.parse_device_topic(msg.topic)
                if parsed and (parsed[0], parsed[1]) != (got[0].source, got[0].device):
                    raise EnvelopeError(f"topic {msg.topic} does not match the envelope's "
                                        f"source/device {got[0].source}/{got[0].device}")
            except EnvelopeError as exc:
                self.dead_letter(msg.payload, str(exc), msg.topic)
                continue
            readings.extend(got)
        return readings

    def _sleep_or_stop(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise Stopping

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.counters.inc("handler_retries")
        if state.attempt_number == 1:
            self.log.warning("handling failed, will retry with backoff (nothing acknowledged): %s", exc)

