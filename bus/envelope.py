"""The reading envelope: encode on the producer side, decode-and-validate on the consumer side.

``orjson`` encodes (producers). ``msgspec`` decodes *and* validates in one pass with the constraints of
``schemas/reading.schema.json`` (about 1 µs per reading, several times faster than validating a parsed
dict against the JSON schema), then every metric key is checked against the metrics table. The JSON
schema stays the published contract; ``tests/test_envelope.py`` checks that both agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import orjson

from producers.registry import PRODUCERS
from schemas import METRICS

SOURCES = tuple(PRODUCERS)
"""Every registered producer type; the producer registry is the one list (a plain table: no plugin loads)."""
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

Source = Literal[SOURCES]  # type: ignore[valid-type]
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=32503680000000)]
Quality = Literal["ok", "missing", "estimated"]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]


class EnvelopeError(ValueError):
    """A payload that is not a valid reading envelope; the message is the reason sent to the DLQ."""


class Reading(msgspec.Struct, gc=False):
    """One validated reading, with its origin filled in (what sinks and consumers work on)."""

    source: str
    device: str
    ts: int
    metrics: dict[str, float]
    seq: int | None = None
    period_s: float = 0.0
    quality: str = "ok"


class _Item(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    ts: Millis
    metrics: dict[str, float]
    seq: NonNegInt | None = None
    period_s: NonNegFloat = 0.0
    quality: Quality = "ok"


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    v: Literal[1]
    source: Source
    device: Name
    boot: NonNegInt | None = None
    ts: Millis | None = None
    seq: NonNegInt | None = None
    period_s: NonNegFloat = 0.0
    quality: Quality = "ok"
    metrics: dict[str, float] | None = None
    readings: Annotated[list[_Item], msgspec.Meta(min_length=1)] | None = None


_decoder = msgspec.json.Decoder(_Envelope)


def decode(payload: bytes) -> list[Reading]:
    """Decode one envelope (single reading or batch) into readings; raise EnvelopeError with the reason."""
    try:
        env = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise EnvelopeError(f"schema: {exc}") from None
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"malformed JSON: {exc}") from None
    if env.readings is None:
        if env.ts is None or env.metrics is None:
            raise EnvelopeError("schema: a single reading needs `ts` and `metrics` (or send a batch with `readings`)")
        readings = [Reading(env.source, env.device, env.ts, env.metrics, env.seq, env.period_s, env.quality)]
    else:
        if env.ts is not None or env.metrics is not None or env.seq is not None:
            raise EnvelopeError("schema: a batch carries `readings` only, not `ts`/`seq`/`metrics` at the top")
        src, dev = env.source, env.device
        readings = [Reading(src, dev, r.ts, r.metrics, r.seq, r.period_s, r.quality) for r in env.readings]
    check_metric_keys(readings)
    return readings


def check_metric_keys(readings: list[Reading]) -> None:
    """Reject any metric key that is not a row of the metrics table (DESIGN: unknown key = rejected)."""
    seen: set[str] = set()
    for r in readings:
        seen.update(r.metrics)
    unknown = seen.difference(METRICS)
    if unknown:
        raise EnvelopeError(f"unknown metric key(s) {sorted(unknown)}: not in schemas/metrics.toml")


def encode_reading(
    source: str,
    device: str,
    ts: int,
    metrics: dict[str, float],
    *,
    seq: int | None = None,
    period_s: float = 0,
    quality: str = "ok",
    boot: int | None = None,
) -> bytes:
    """Encode one reading as a single envelope."""
    env: dict[str, Any] = {"v": 1, "source": source, "device": device, "ts": ts}
    if seq is not None:
        env["seq"] = seq
    if boot is not None:
        env["boot"] = boot
    env["period_s"] = period_s
    env["quality"] = quality
    env["metrics"] = metrics
    return orjson.dumps(env)


def encode_batch(source: str, device: str, readings: list[dict[str, Any]], *, boot: int | None = None) -> bytes:
    """Encode readings of one device (dicts with ts, metrics and optional seq/period_s/quality) as a batch."""
    env: dict[str, Any] = {"v": 1, "source": source, "device": device}
    if boot is not None:
        env["boot"] = boot
    env["readings"] = readings
    return orjson.dumps(env)


def to_dict(reading: Reading) -> dict[str, Any]:
    """A reading as a plain dict (export, API)."""
    return msgspec.structs.asdict(reading)
