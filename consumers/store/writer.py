"""Glue between the consumer runtime and a sink: schema at start, outage state logged once, counters."""

from __future__ import annotations

from collections.abc import Sequence

from bus.consumer import ConsumerContext
from bus.envelope import Reading
from consumers.store.sink import Sink, open_sink


class StoreWriter:
    def __init__(self, ctx: ConsumerContext, url: str):
        self.ctx = ctx
        self.sink: Sink = open_sink(url)
        self._schema_ok = False
        self._down = False
        ctx.add_health(lambda: {"sink": self.sink.describe(), "sink_up": not self._down})

    def start(self) -> None:
        self.ctx.log.info("storing into %s", self.sink.describe())

    def write(self, readings: Sequence[Reading]) -> None:
        """Called by the runtime with a batch; raising means 'not stored, retry, acknowledge nothing'."""
        try:
            if not self._schema_ok:
                self.sink.ensure_schema()
                self._schema_ok = True
            self.sink.write(readings)
        except Exception as exc:
            self.ctx.counters.set("sink_backlog", len(readings))
            if not self._down:
                self._down = True
                self.ctx.log.error("sink %s unavailable, holding %d readings: %s",
                                   self.sink.describe(), len(readings), exc)
            raise
        if self._down:
            self._down = False
            self.ctx.log.info("sink %s is back; stored %d held readings", self.sink.describe(), len(readings))
        self.ctx.counters.set("sink_backlog", 0)
        self.ctx.counters.inc("stored", len(readings))

    def close(self) -> None:
        self.sink.close()
