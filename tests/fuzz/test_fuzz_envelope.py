"""Envelopes, batches, topics and names, in process: many examples, no broker (fast).

The decoder must never raise anything but EnvelopeError, must keep exactly the readings the independent
judge (``hostile.judge``) keeps, must dead-letter every message the judge says has something bad in it, and
everything it lets through must be within every bound a sink stores.
"""

from __future__ import annotations

import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.envelope import (INT64_MAX, NAME_PATTERN, TS_MAX, VALUE_MAX, EnvelopeError, Limits,
                          batch_item_problem, decode, decode_checked, is_name, items_ok)
from bus.topics import parse_device_topic
from schemas import METRICS
from tests.fuzz.hostile import COUNTERS, NAN, T0, item, judge, messages

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(messages("fuzzdev"))
def test_the_decoder_agrees_with_the_judge_on_every_hostile_message(msgs):
    now = int(time.time() * 1000)
    for m in msgs:
        verdict = judge(m.topic, m.payload, now)
        try:
            got = decode_checked(m.payload, Limits(), now)
        except EnvelopeError as exc:
            assert str(exc), "a rejection always has a reason"
            assert verdict.dead_letter and not verdict.stored, (m.payload[:300], str(exc))
            continue
        topic_ok = m.topic.split("/")[:2] == [got.source, got.device]
        kept = {r.ts: r.metrics for r in got.readings} if topic_ok else {}
        assert kept == verdict.stored, m.payload[:500]
        assert bool(got.rejected or not topic_ok) == verdict.dead_letter, (m.payload[:500], got.rejected)
        assert all(r.reason for r in got.rejected)
        for r in got.readings:
            assert is_name(r.device) and 0 <= r.ts <= TS_MAX
            assert r.seq is None or 0 <= r.seq <= INT64_MAX
            assert all(k in METRICS and -VALUE_MAX <= v <= VALUE_MAX for k, v in r.metrics.items())
            assert all(r.metrics[k] >= 0 for k in COUNTERS if k in r.metrics)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_are_rejected_with_a_reason_never_a_crash(payload):
    for fn in (lambda: decode(payload), lambda: decode_checked(payload, Limits(), int(time.time() * 1000))):
        try:
            fn()
        except EnvelopeError as exc:
            assert str(exc)


@FUZZ
@given(st.text(max_size=80))
def test_names_and_topics_are_full_matches(text):
    assert is_name(text) == (re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", text) is not None)
    assert (re.search(NAME_PATTERN, text) is not None) == is_name(text)  # the pattern plugins use agrees
    parsed = parse_device_topic(text)
    if parsed is not None:
        assert text.count("/") == 2 and is_name(parsed[0]) and is_name(parsed[1])


def _real_nan(obj):
    if obj is NAN:
        return float("nan")
    if isinstance(obj, dict):
        return {k: _real_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_real_nan(v) for v in obj]
    return obj


@FUZZ
@given(st.lists(item(T0), min_size=1, max_size=5))
def test_the_producers_fast_batch_check_agrees_with_the_item_by_item_one(items):
    """What a producer publishes is checked in one msgspec pass; when that says no, item by item (to name the
    bad ones). Both must agree, or a bad reading could slip through, or a good one be held back."""
    items = [_real_nan(it) for it in items]
    now = int(time.time() * 1000)
    one_by_one = [batch_item_problem(it, Limits(), now, "hhpc") for it in items]
    assert items_ok(items, Limits(), now, "hhpc") == all(p is None for p in one_by_one), one_by_one
