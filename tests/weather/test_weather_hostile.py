"""Hostile service answers (hypothesis): huge, nested, wrong types, wrong encoding, NaN, out of range, the
wrong units. At the parser level an answer becomes observations of finite, plausible numbers plus named
problems, or is refused with a reason; over the real HTTP path (the emulator answering with the bytes drawn) a
fetch never crashes, what is published passes the envelope, garbage is counted and dead-lettered."""

from __future__ import annotations

import copy
import json
import math
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from weather_support import JUNE, KEY, Forecasts, context, poller

from bus.clock import EmulatedClock
from bus.envelope import item_problem
from producers.weather.emulator import EmulatedWeather
from producers.weather.providers import Refused, add_pv_estimate, parse_open_meteo, parse_owm
from tests.fuzz.hostile import NAN, dumps, hostile_value

FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
with EmulatedWeather(clock=EmulatedClock(JUNE), owm_key=KEY) as _emu:
    names = "temperature_2m,cloud_cover,shortwave_radiation"
    OPEN_METEO = _emu.open_meteo({"latitude": "50.85", "longitude": "4.35", "current": names, "hourly": names,
                                  "forecast_hours": "12", "timeformat": "unixtime"})[1]
    OWM = _emu.onecall({"lat": "50.85", "lon": "4.35", "appid": KEY, "units": "metric"})[1]
    OWM["hourly"] = OWM["hourly"][:12]


def _slots(obj, prefix=()):
    """Every place in a document a value can be swapped: dict keys and list positions."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _slots(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield prefix + (i,)
            yield from _slots(v, prefix + (i,))


@st.composite
def mutated(draw, doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    slots = list(_slots(doc))
    for _ in range(draw(st.integers(1, 6))):
        path = draw(st.sampled_from(slots))
        parent = doc
        for k in path[:-1]:
            try:
                parent = parent[k]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if not isinstance(parent, dict | list):
            continue
        try:
            parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.integers(0, 4))
        if action == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 1:
            parent[path[-1]] = draw(hostile_value)
        elif action == 2:
            parent[path[-1]] = draw(st.sampled_from([NAN, 1e308, -1e308, 2**70, -0.0, True, "12.5", None,
                                                     1e12, "°F", "kW/m²", [1, 2, 3] * 200]))
        elif action == 3:
            nested: object = 1.0
            for _ in range(draw(st.integers(1, 60))):
                nested = [nested] if draw(st.booleans()) else {"time": nested}
            parent[path[-1]] = nested
        else:
            parent[path[-1]] = list(range(draw(st.integers(0, 1000))))
    return doc


def _check(observations) -> None:
    now = int(time.time() * 1000)
    for o in observations:
        assert 946_684_800_000 <= o.ts <= 4_102_444_800_000
        for key, value in o.metrics.items():
            assert type(value) is float and math.isfinite(value), (key, value)
        assert item_problem(now, o.metrics, None, o.period_s) is None


@FUZZ
@given(st.one_of(st.tuples(st.just("open-meteo"), mutated(OPEN_METEO)),
                 st.tuples(st.just("owm"), mutated(OWM))))
def test_any_answer_parses_to_plausible_numbers_or_is_refused_with_a_reason(case):
    provider, doc = case
    doc = json.loads(dumps(doc).replace(b"NaN", b"null"))  # (the bare NaN literal cannot reach a parser)
    try:
        parsed = (parse_open_meteo if provider == "open-meteo" else parse_owm)(doc)
    except Refused as exc:
        assert str(exc)
        return
    observations = ([parsed.current] if parsed.current else []) + parsed.hourly
    add_pv_estimate(observations, 5000.0, 50.85, 4.35)
    _check(observations)
    assert all(0 <= o.metrics.get("pv_estimate_w", 0) <= 5000 for o in observations)


def _body(doc: dict, how: int, junk: bytes) -> bytes:
    raw = dumps(doc)
    return [raw, raw[: len(raw) // 2], raw.replace(b'"hourly"', b'"h\xffourly"', 1),
            b"[" * 5000 + b"]" * 5000, b'{"current":' * 3000, b'{"pad": "' + b"x" * (2 << 20) + b'"}',
            junk][how]


@pytest.fixture(scope="module")
def emu():
    with EmulatedWeather(clock=EmulatedClock(JUNE), owm_key=KEY) as e:
        yield e


@FUZZ
@given(doc=mutated(OPEN_METEO), how=st.integers(0, 6), junk=st.binary(max_size=300))
def test_any_answer_over_http_is_published_whole_or_counted(emu, doc, how, junk):
    emu.raw = _body(doc, how, junk)
    ctx, forecasts = context(EmulatedClock(JUNE)), Forecasts()
    p = poller(ctx, emu, forecasts, retries=2, pv_peak_w=4000)
    published = p.poll_once()                   # never raises
    p.http.close()
    for r in ctx.readings:                       # decoded by the real validator on the way in
        assert all(math.isfinite(v) for v in r.metrics.values())
    for _, points in forecasts:
        assert all(p.period_s == 3600 for p in points)
    if not published:
        assert ctx.count("fetch_failures") + ctx.count("bad_fields") + ctx.count("stale_readings") >= 1 or \
            not forecasts
    try:
        orjson.loads(emu.raw)
    except orjson.JSONDecodeError:
        assert not published and ctx.count("bad_responses") == 2 and len(ctx.dead) == 1
