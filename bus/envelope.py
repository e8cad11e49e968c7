"""The reading envelope: encode on the producer side, decode-and-validate on the consumer side.

``orjson`` encodes (producers). ``msgspec`` decodes *and* validates in one pass with the constraints of
``schemas/reading.schema.json`` (about 1 µs per reading, several times faster than validating a parsed
dict against the JSON schema), then every metric key is checked against the metrics table. The JSON
schema stays the published contract; ``tests/core/test_reading_envelope.py`` checks that both agree.

Every number a sink stores is bounded here, so a database never sees a value it cannot hold: ``ts`` and
``boot`` within 0..year 3000 in epoch ms, ``seq`` within a signed 64-bit integer, ``period_s`` within a
year, metric values within ±1e15 (JSON has no NaN or infinity, so they are finite too). Those are the
*schema*: a message breaking them is malformed. *Plausibility* is a second, per-reading check
(:func:`check_plausible`) with limits from the config's ``[readings]`` table: a timestamp before
``min_ts`` (a clock that was never set says 1970) or more than ``max_future_s`` ahead of the receiving
host's clock, an age beyond ``max_age_days`` when set, a negative cumulative counter. The window is relative
to *now* only at its upper end: replays of old datasets legitimately carry old timestamps, so the lower end
is a fixed date (and ``max_age_days`` is off by default). Sources on a *simulated* clock (``sim``, which runs
accelerated and so ahead of now by design; the ``[readings] simulated`` list) are exempt from both bounds
relative to now, not from ``min_ts`` or the schema. A batch with some bad readings is not thrown away:
the bad ones are rejected with their index and reason, the rest goes on (:func:`decode_checked`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import msgspec
import orjson

from producers.registry import PRODUCERS
from schemas import METRICS

SOURCES = tuple(PRODUCERS)
"""Every registered producer type; the producer registry is the one list (a plain table: no plugin loads)."""
NAME_CORE = r"[a-z0-9][a-z0-9_-]{0,63}"
NAME_PATTERN = rf"^{NAME_CORE}\Z"
"""Device, process and source names. ``\\Z``, not ``$``: ``$`` also matches before a trailing newline, and
a name ends up in topics, SQL text and file names. Use :func:`is_name` rather than matching by hand."""
NAME_SCHEMA_PATTERN = rf"^{NAME_CORE}$"
"""The same rule for published JSON Schema / OpenAPI documents, whose regexes are ECMA-262: there ``$`` is the
end of input and ``\\Z`` does not exist. The API's path parameters use it; names still reach Python checks."""
NAME_RULE = ("1 to 64 characters: lowercase letters a-z, digits 0-9, '_' and '-', starting with a letter or "
             "digit")
_NAME_RE = re.compile(NAME_CORE)

INT64_MAX = 2**63 - 1
TS_MAX = 32503680000000
"""3000-01-01T00:00:00Z in epoch ms: the schema's hard upper bound of ``ts`` (plausibility is tighter)."""
VALUE_MAX = 1e15
"""Largest metric magnitude accepted: far above any meter (a 1 TWh counter is 1e12 Wh), far below what
turns into infinity or loses integer precision in a database."""
PERIOD_MAX_S = 31_622_400.0
"""A reading covers at most a (leap) year."""

Source = Literal[SOURCES]  # type: ignore[valid-type]
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=TS_MAX)]
Quality = Literal["ok", "missing", "estimated"]
Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Period = Annotated[float, msgspec.Meta(ge=0, le=PERIOD_MAX_S)]
Value = Annotated[float, msgspec.Meta(ge=-VALUE_MAX, le=VALUE_MAX)]
COUNTERS = frozenset(k for k, m in METRICS.items() if m.is_counter)


def is_name(name: object) -> bool:
    """True when ``name`` is a valid source/device/process name (whole string, no trailing newline)."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


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
    metrics: dict[str, Value]
    seq: Seq | None = None
    period_s: Period = 0.0
    quality: Quality = "ok"


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    v: Literal[1]
    source: Source
    device: Name
    boot: Millis | None = None
    ts: Millis | None = None
    seq: Seq | None = None
    period_s: Period = 0.0
    quality: Quality = "ok"
    metrics: dict[str, Value] | None = None
    readings: Annotated[list[_Item], msgspec.Meta(min_length=1)] | None = None


class _LooseBatch(msgspec.Struct, forbid_unknown_fields=True):
    """The batch envelope with its items left raw: lets one bad item be rejected, not the whole batch."""

    v: Literal[1]
    source: Source
    device: Name
    readings: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]
    boot: Millis | None = None


_decoder = msgspec.json.Decoder(_Envelope)
_loose_decoder = msgspec.json.Decoder(_LooseBatch)
_item_decoder = msgspec.json.Decoder(_Item)


@dataclass(frozen=True, slots=True)
class Limits:
    """Plausibility bounds of a reading (the config's ``[readings]`` table)."""

    min_ts: int = 946684800000  # 2000-01-01T00:00:00Z
    max_future_ms: int = 300_000
    max_age_ms: int = 0  # 0: any age (replays of old datasets)
    simulated: frozenset[str] = frozenset({"sim"})
    """Sources on a simulated clock (accelerated, backdated): exempt from the bounds relative to now."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """One reading of a batch that was not accepted: its position in ``readings``, ts when known, why."""

    index: int
    ts: int | None
    reason: str


@dataclass(slots=True)
class Decoded:
    source: str
    device: str
    readings: list[Reading]
    rejected: list[Rejected]


def decode(payload: bytes) -> list[Reading]:
    """Decode one envelope (single reading or batch) into readings; raise EnvelopeError with the reason.

    Schema only, all or nothing: what a producer that reads another device's readings needs. Consumers use
    :func:`decode_checked`, which also applies the plausibility limits and keeps a batch's good readings.
    """
    env = _strict(payload)
    readings = _readings(env)
    unknown = _unknown_keys(readings)
    if unknown:
        raise EnvelopeError(_unknown_reason(unknown))
    return readings


def decode_checked(payload: bytes, limits: Limits, now_ms: int) -> Decoded:
    """Decode, validate and check plausibility; a batch keeps its good readings and lists the bad ones.

    Raises EnvelopeError when nothing of the message is usable (malformed JSON, a bad top level, a single
    reading that fails).
    """
    try:
        env = _strict(payload)
    except EnvelopeError as exc:
        loose = _loose(payload)
        if loose is None:
            raise exc from None
        return _per_item(loose, limits, now_ms)
    readings = _readings(env)
    rejected: list[Rejected] = []
    if _unknown_keys(readings):
        readings, rejected = _split_unknown(readings)
    good, bad = check_plausible(readings, limits, now_ms)
    if bad:
        gone = {r.index for r in rejected}
        index = [i for i in range(len(readings) + len(rejected)) if i not in gone]
        rejected += [Rejected(index[b.index], b.ts, b.reason) for b in bad]
    if env.readings is None and rejected:  # a single reading: the message is the reading
        raise EnvelopeError(rejected[0].reason)
    rejected.sort(key=lambda r: r.index)
    return Decoded(env.source, env.device, good, rejected)


def check_plausible(readings: list[Reading], limits: Limits,
                    now_ms: int) -> tuple[list[Reading], list[Rejected]]:
    """Split readings into plausible ones and rejects (index into ``readings``, reason)."""
    if readings and readings[0].source in limits.simulated:
        latest, earliest = TS_MAX, limits.min_ts
    else:
        latest = now_ms + limits.max_future_ms
        earliest = max(limits.min_ts, now_ms - limits.max_age_ms if limits.max_age_ms else 0)
    good: list[Reading] = []
    bad: list[Rejected] = []
    for i, r in enumerate(readings):
        reason = None
        if not earliest <= r.ts <= latest:
            reason = ts_problem(r.ts, limits, now_ms, r.source)
        else:
            for key in COUNTERS.intersection(r.metrics):
                if r.metrics[key] < 0:
                    reason = _negative(key, r.metrics[key])
                    break
        if reason is None:
            good.append(r)
        else:
            bad.append(Rejected(i, r.ts, reason))
    return good, bad


def ts_problem(ts: int, limits: Limits, now_ms: int, source: str = "") -> str | None:
    """Why ``ts`` is outside the plausible window, or None."""
    if ts < limits.min_ts:
        return f"ts {ts} ({_iso(ts)}) is before [readings] min_ts ({_iso(limits.min_ts)})"
    if source in limits.simulated:
        return None
    if ts > now_ms + limits.max_future_ms:
        return (f"ts {ts} ({_iso(ts)}) is {(ts - now_ms) / 1000:.0f} s ahead of this host's clock "
                f"(more than [readings] max_future_s = {limits.max_future_ms / 1000:g})")
    if limits.max_age_ms and ts < now_ms - limits.max_age_ms:
        return (f"ts {ts} ({_iso(ts)}) is older than [readings] max_age_days "
                f"({limits.max_age_ms / 86_400_000:g})")
    return None


def item_problem(ts: object, metrics: object, seq: object = None, period_s: object = 0.0,
                 quality: object = "ok") -> str | None:
    """What is wrong with one reading a producer is about to publish (the schema's bounds), or None.

    Producers check what they send, so a device answering garbage (NaN, 1e308 W, a negative counter) is
    caught where it enters, with the device's process named in the DLQ, instead of at every consumer.
    """
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= TS_MAX:
        return f"ts {ts!r} is not epoch milliseconds within 0..{TS_MAX}"
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= INT64_MAX):
        return f"seq {seq!r} is not an integer within 0..{INT64_MAX}"
    if (isinstance(period_s, bool) or not isinstance(period_s, (int, float))
            or not 0 <= period_s <= PERIOD_MAX_S):
        return f"period_s {period_s!r} is not within 0..{PERIOD_MAX_S:g} s"
    if quality not in ("ok", "missing", "estimated"):
        return f"quality {quality!r} is not ok, missing or estimated"
    if not isinstance(metrics, dict):
        return "metrics is not an object"
    for key, value in metrics.items():
        if type(value) is float and -VALUE_MAX <= value <= VALUE_MAX and key in METRICS:
            continue  # the common case, checked first (NaN fails the comparison)
        if key not in METRICS:
            return _unknown_reason({str(key)})
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not -VALUE_MAX <= value <= VALUE_MAX):
            return f"metric {key} = {value!r} is not a finite number within ±{VALUE_MAX:g}"
    for key in COUNTERS.intersection(metrics):
        if metrics[key] < 0:
            return _negative(key, metrics[key])
    return None


_items_converter = list[_Item]
ITEM_KEYS = frozenset(_Item.__struct_fields__)


def batch_item_problem(item: Any, limits: Limits, now_ms: int, source: str) -> str | None:
    """What is wrong with one element of a batch a producer is about to publish, or None."""
    if not isinstance(item, dict):
        return "a batch element is not an object"
    extra = set(item) - ITEM_KEYS
    if extra:
        return f"unknown field(s) {sorted(map(str, extra))[:5]} in a reading (expected {sorted(ITEM_KEYS)})"
    return (item_problem(item.get("ts"), item.get("metrics"), item.get("seq"), item.get("period_s", 0.0),
                         item.get("quality", "ok"))
            or ts_problem(item["ts"], limits, now_ms, source))


def items_ok(items: list[dict[str, Any]], limits: Limits, now_ms: int, source: str) -> bool:
    """True when every batch item passes :func:`item_problem` and the plausibility limits: msgspec checks
    the schema's bounds in one pass in C (a few times faster than item by item); False sends the caller
    to :func:`item_problem`, which says what is wrong with which item."""
    try:
        checked = msgspec.convert(items, _items_converter)
    except (msgspec.ValidationError, TypeError):
        return False
    keys: set[str] = set()
    for it in checked:
        keys.update(it.metrics)
    if not keys <= METRICS.keys():
        return False
    if COUNTERS.intersection(keys) and any(v < 0 for it in checked for k, v in it.metrics.items()
                                           if k in COUNTERS):
        return False
    if not checked:
        return True
    lo, hi = min(it.ts for it in checked), max(it.ts for it in checked)
    if lo < limits.min_ts:
        return False
    if source in limits.simulated:
        return True
    return hi <= now_ms + limits.max_future_ms and not (limits.max_age_ms and lo < now_ms - limits.max_age_ms)


def _negative(key: str, value: float) -> str:
    return f"counter {key} is negative ({value!r}); counters never go below 0"


# -- internals -----------------------------------------------------------------------------------------
def _strict(payload: bytes) -> _Envelope:
    try:
        env = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise EnvelopeError(f"schema: {_name_metric(str(exc), payload)}") from None
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"malformed JSON: {exc}") from None
    if env.readings is None:
        if env.ts is None or env.metrics is None:
            raise EnvelopeError("schema: a single reading needs `ts` and `metrics` (or send a batch with `readings`)")
    elif env.ts is not None or env.metrics is not None or env.seq is not None:
        raise EnvelopeError("schema: a batch carries `readings` only, not `ts`/`seq`/`metrics` at the top")
    return env


def _readings(env: _Envelope) -> list[Reading]:
    if env.readings is None:
        return [Reading(env.source, env.device, env.ts, env.metrics, env.seq, env.period_s, env.quality)]
    src, dev = env.source, env.device
    return [Reading(src, dev, r.ts, r.metrics, r.seq, r.period_s, r.quality) for r in env.readings]


def _loose(payload: bytes) -> _LooseBatch | None:
    try:
        return _loose_decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _per_item(loose: _LooseBatch, limits: Limits, now_ms: int) -> Decoded:
    readings: list[Reading] = []
    index: list[int] = []
    rejected: list[Rejected] = []
    for i, raw in enumerate(loose.readings):
        try:
            item = _item_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            where = re.sub(r"`\$", f"`$.readings[{i}]", _name_metric(str(exc), bytes(raw)))
            rejected.append(Rejected(i, _raw_ts(raw), f"schema: {where}"))
            continue
        unknown = set(item.metrics).difference(METRICS)
        if unknown:
            rejected.append(Rejected(i, item.ts, _unknown_reason(unknown)))
            continue
        readings.append(Reading(loose.source, loose.device, item.ts, item.metrics, item.seq, item.period_s,
                                item.quality))
        index.append(i)
    good, bad = check_plausible(readings, limits, now_ms)
    rejected += [Rejected(index[b.index], b.ts, b.reason) for b in bad]
    rejected.sort(key=lambda r: r.index)
    return Decoded(loose.source, loose.device, good, rejected)


def _name_metric(message: str, payload: bytes) -> str:
    """msgspec says ``$.metrics[...]`` for a bad value in the metrics object; say which key it is."""
    if "metrics[...]" not in message or len(payload) > 1 << 20:
        return message
    try:
        metrics = json.loads(payload).get("metrics")
    except (ValueError, RecursionError, AttributeError):
        return message
    if not isinstance(metrics, dict):
        return message
    bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))
           or not -VALUE_MAX <= v <= VALUE_MAX]
    return message.replace("metrics[...]", f"metrics[{bad[0][:64]!r}]") if bad else message


def _raw_ts(raw: msgspec.Raw) -> int | None:
    try:
        ts = orjson.loads(bytes(raw)).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts <= TS_MAX else None


def _unknown_keys(readings: list[Reading]) -> set[str]:
    seen: set[str] = set()
    for r in readings:
        seen.update(r.metrics)
    return seen.difference(METRICS)


def _unknown_reason(unknown: set[str]) -> str:
    shown = sorted(unknown)[:10]
    more = f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
    return f"unknown metric key(s) {[k[:64] for k in shown]}{more}: not in schemas/metrics.toml"


def _split_unknown(readings: list[Reading]) -> tuple[list[Reading], list[Rejected]]:
    good, bad = [], []
    for i, r in enumerate(readings):
        unknown = set(r.metrics).difference(METRICS)
        if unknown:
            bad.append(Rejected(i, r.ts, _unknown_reason(unknown)))
        else:
            good.append(r)
    return good, bad


def check_metric_keys(readings: list[Reading]) -> None:
    """Reject any metric key that is not a row of the metrics table (DESIGN: unknown key = rejected)."""
    unknown = _unknown_keys(readings)
    if unknown:
        raise EnvelopeError(_unknown_reason(unknown))


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "out of range"


# -- encoding ------------------------------------------------------------------------------------------
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


def encode_batches(source: str, device: str, readings: list[dict[str, Any]], max_bytes: int, *,
                   boot: int | None = None) -> list[bytes]:
    """Encode batch envelopes of at most ``max_bytes`` each: split in as many equal parts as the size says
    (with a margin), each part again if it still does not fit.

    A single reading larger than ``max_bytes`` raises EnvelopeError: nothing can carry it.
    """
    payload = encode_batch(source, device, readings, boot=boot)
    if len(payload) <= max_bytes:
        return [payload]
    if len(readings) == 1:
        raise EnvelopeError(f"one reading of {source}/{device} encodes to {len(payload)} bytes, more than "
                            f"the {max_bytes} a message may carry")
    parts = min(len(readings), max(2, -(-len(payload) // int(max_bytes * 0.9))))
    size = -(-len(readings) // parts)
    out: list[bytes] = []
    for i in range(0, len(readings), size):
        out += encode_batches(source, device, readings[i:i + size], max_bytes, boot=boot)
    return out


def item(reading: Reading) -> dict[str, Any]:
    """A reading as an element of a batch envelope's ``readings``."""
    out: dict[str, Any] = {"ts": reading.ts}
    if reading.seq is not None:
        out["seq"] = reading.seq
    out["period_s"] = reading.period_s
    out["quality"] = reading.quality
    out["metrics"] = reading.metrics
    return out


def to_dict(reading: Reading) -> dict[str, Any]:
    """A reading as a plain dict (export, API)."""
    return msgspec.structs.asdict(reading)
