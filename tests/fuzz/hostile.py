"""Hostile messages for the fuzz suite, and an independent judge of what should be accepted.

``messages(device)`` draws reading envelopes (single readings and batches) for one device, most of them
valid, with hostile mutations: numbers out of every bound (1e308, 2**63, -1, -0.0, subnormals, NaN as the
bare JSON literal), wrong types, unknown and huge keys, timestamps in 1970 or the far future, broken JSON,
invalid UTF-8, deep nesting, a topic that does not match the envelope.

``judge(topic, payload, now_ms)`` says, with nothing but ``json.loads`` and the rules written out again,
which readings of a message must be stored and whether the message must produce a dead letter. It is a
second implementation on purpose: the fuzz tests compare the real pipeline with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from hypothesis import strategies as st

from schemas import METRICS

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MIN_TS = 946_684_800_000
MAX_FUTURE_MS = 300_000
TS_MAX = 32_503_680_000_000
INT64_MAX = 2**63 - 1
VALUE_MAX = 1e15
PERIOD_MAX = 31_622_400
COUNTERS = sorted(k for k, m in METRICS.items() if m.is_counter)
GAUGES = sorted(k for k, m in METRICS.items() if not m.is_counter)
QUALITIES = ("ok", "missing", "estimated")

NAN = object()  # marker: serialised as the bare literal NaN (not JSON, but what a broken device may send)

hostile_number = st.sampled_from([1e308, -1e308, VALUE_MAX, VALUE_MAX * 1.0000001, -VALUE_MAX, -0.0, 5e-324,
                                  2**63, 2**63 - 1, 2**64, -1, -(2**63), 10**30, 1.5, NAN, True, False])
hostile_value = st.one_of(hostile_number, st.text(max_size=8), st.none(), st.lists(st.integers(), max_size=2),
                          st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                          st.integers(min_value=-(2**70), max_value=2**70),
                          st.floats(allow_nan=False, allow_infinity=False))
hostile_key = st.one_of(st.text(max_size=70), st.sampled_from(["power_kw", "", "power_w\n", "x" * 300]))


@st.composite
def metrics(draw) -> dict:
    out = {k: draw(st.floats(min_value=-5000, max_value=5000, allow_nan=False).map(lambda v: round(v, 3)))
           for k in draw(st.lists(st.sampled_from(GAUGES), max_size=4, unique=True))}
    for k in draw(st.lists(st.sampled_from(COUNTERS), max_size=2, unique=True)):
        out[k] = draw(st.floats(min_value=0, max_value=1e9, allow_nan=False).map(lambda v: round(v, 3)))
    if draw(st.integers(0, 9)) == 0:
        out[draw(hostile_key)] = draw(hostile_value)
    if draw(st.integers(0, 9)) == 0 and out:
        out[draw(st.sampled_from(sorted(out)))] = draw(hostile_value)
    if draw(st.integers(0, 14)) == 0:
        out[draw(st.sampled_from(COUNTERS))] = -draw(st.floats(min_value=0.001, max_value=1e6))
    return out


@st.composite
def item(draw, ts: int) -> dict:
    it: dict = {"ts": ts, "seq": draw(st.integers(1, 10**6)), "period_s": 60.0,
                "quality": draw(st.sampled_from(QUALITIES)), "metrics": draw(metrics())}
    roll = draw(st.integers(0, 19))
    if roll == 0:
        it["ts"] = draw(st.sampled_from([0, -1, 1, MIN_TS - 1, TS_MAX, TS_MAX + 1, 2**63, 2**64, 1.7e12,
                                         "2024-01-01", None]))
    elif roll == 1:
        it["ts"] = ts + 10**11  # three years ahead
    elif roll == 2:
        it["seq"] = draw(st.sampled_from([2**63, 2**63 - 1, -1, 1.5, "1", None, 2**70]))
    elif roll == 3:
        it["period_s"] = draw(st.sampled_from([-1, PERIOD_MAX + 1, PERIOD_MAX, 0, 1e308, NAN, "60"]))
    elif roll == 4:
        it["quality"] = draw(st.sampled_from(["great", "", None, 1]))
    elif roll == 5:
        it[draw(st.text(max_size=6))] = 1
    elif roll == 6:
        del it["metrics"]
    return it


@dataclass
class Message:
    topic: str
    payload: bytes


def dumps(obj) -> bytes:
    text = json.dumps(obj, default=_marker)
    return text.replace('"__NaN__"', "NaN").encode()


def _marker(o):
    if o is NAN:
        return "__NaN__"
    raise TypeError


def _nan_safe(obj):
    if obj is NAN:
        return "__NaN__"
    if isinstance(obj, dict):
        return {k: _nan_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_safe(v) for v in obj]
    return obj


@st.composite
def message(draw, device: str, ts0: int) -> Message:
    topic = f"hhpc/{device}/reading"
    n = draw(st.integers(1, 12))
    items = [draw(item(ts0 + i * 60_000)) for i in range(n)]
    if draw(st.booleans()) and n == 1:
        env = {"v": 1, "source": "hhpc", "device": device, "boot": T0, **items[0]}
    else:
        env = {"v": 1, "source": "hhpc", "device": device, "readings": items}
    roll = draw(st.integers(0, 24))
    if roll == 0:
        env["v"] = draw(st.sampled_from([2, 0, "1", True, None]))
    elif roll == 1:
        env["device"] = draw(st.sampled_from([device + "x", device.upper(), device + "\n", "a/b", ""]))
    elif roll == 2:
        env[draw(st.sampled_from(["extra", "boot"]))] = draw(st.sampled_from([-1, 2**63, "x"]))
    elif roll == 3:
        topic = f"hhpc/{device}x/reading"
    payload = dumps(_nan_safe(env))
    roll = draw(st.integers(0, 29))
    if roll == 0:
        payload = payload[:draw(st.integers(0, max(0, len(payload) - 1)))]  # truncated
    elif roll == 1:
        payload = draw(st.binary(max_size=300))
    elif roll == 2:
        payload = b"[" * 20_000 + b"]" * 20_000  # deep nesting
    elif roll == 3:
        payload = payload.replace(b'"hhpc"', b'"hh\xffpc"', 1)  # invalid UTF-8
    return Message(topic, payload)


def messages(device: str, ts0: int = T0, max_size: int = 12):
    """A list of messages whose readings never share a timestamp (each message has its own range)."""
    return st.integers(1, max_size).flatmap(
        lambda n: st.tuples(*[message(device, ts0 + j * 1000 * 60_000) for j in range(n)])).map(list)


# -- the judge ----------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    stored: dict[int, dict] = field(default_factory=dict)  # ts -> metrics of readings that must be stored
    dead_letter: bool = False


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and (not isinstance(v, float) or math.isfinite(v)))


def _item_ok(it, now_ms: int) -> bool:
    if not isinstance(it, dict) or set(it) - {"ts", "seq", "period_s", "quality", "metrics"}:
        return False
    if "ts" not in it or "metrics" not in it:
        return False
    ts, seq = it["ts"], it.get("seq")
    if not _is_int(ts) or not 0 <= ts <= TS_MAX:
        return False
    if seq is not None and (not _is_int(seq) or not 0 <= seq <= INT64_MAX):
        return False
    period = it.get("period_s", 0.0)
    if not _is_num(period) or not 0 <= period <= PERIOD_MAX:
        return False
    if it.get("quality", "ok") not in QUALITIES:
        return False
    m = it["metrics"]
    if not isinstance(m, dict):
        return False
    for k, v in m.items():
        if k not in METRICS or not _is_num(v) or not -VALUE_MAX <= v <= VALUE_MAX:
            return False
        if k in COUNTERS and v < 0:
            return False
    return MIN_TS <= ts <= now_ms + MAX_FUTURE_MS


def judge(topic: str, payload: bytes, now_ms: int) -> Verdict:
    try:
        env = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Verdict(dead_letter=True)
    if not isinstance(env, dict) or env.get("v") != 1 or isinstance(env.get("v"), bool):
        return Verdict(dead_letter=True)
    if env.get("source") != "hhpc" or not isinstance(env.get("device"), str):
        return Verdict(dead_letter=True)
    device = env["device"]
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", device) or topic.split("/")[:2] != ["hhpc", device]:
        return Verdict(dead_letter=True)
    boot = env.get("boot")
    if boot is not None and (not _is_int(boot) or not 0 <= boot <= TS_MAX):
        return Verdict(dead_letter=True)
    if _has_nan(env):
        return Verdict(dead_letter=True)  # a NaN literal is not JSON: the whole message is malformed
    if "readings" in env:
        if set(env) - {"v", "source", "device", "boot", "readings"}:
            return Verdict(dead_letter=True)
        items = env["readings"]
        if not isinstance(items, list) or not items:
            return Verdict(dead_letter=True)
        v = Verdict()
        for it in items:
            if _item_ok(it, now_ms):
                v.stored[it["ts"]] = it["metrics"]
            else:
                v.dead_letter = True
        return v
    single = {k: x for k, x in env.items() if k not in ("v", "source", "device", "boot")}
    if _item_ok(single, now_ms):
        return Verdict({single["ts"]: single["metrics"]})
    return Verdict(dead_letter=True)


def _floats(obj):
    if isinstance(obj, float):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _floats(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _floats(v)


def _has_nan(obj) -> bool:
    return any(math.isnan(f) or math.isinf(f) for f in _floats(obj))
