"""Helpers for the homeassistant consumer's tests: readings as a producer sends them, retained documents."""

from __future__ import annotations

import orjson

from bus import envelope


def reading(source: str, device: str, ts: int, metrics: dict[str, float], seq: int = 1, **kw) -> bytes:
    return envelope.encode_reading(source, device, ts, metrics, seq=seq, **kw)


def latest(collector, topic: str) -> dict | None:
    """The last message on ``topic`` as JSON (None if none, or if it was the empty 'clear' message)."""
    got = collector.on(topic)
    if not got or not got[-1][1]:
        return None
    return orjson.loads(got[-1][1])
