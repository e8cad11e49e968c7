"""Hostile HTTP parameters (hypothesis) and property-based tests from the OpenAPI document (schemathesis).

Whatever arrives, the answer is never a 5xx, a 4xx is a problem document with a reason, and every response
matches the schema the API publishes.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from tests.api.conftest import HOUSE

pytestmark = pytest.mark.slow

hostile_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=3000),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["2024-02-30", "2024-12-14T25:61", "9999-12-31", "0000-01-01", "1969-12-31",
                     "2024-12-14T17:58+99:00", "2024-W50-1", "20241214", "%00", "../../etc/passwd",
                     "2024-12-14T17:58:00.123456789", "1e308", "-1", "0", "99999999999999999999999"]),
)


def check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["detail"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=hostile_text, end=hostile_text, step=st.one_of(st.none(), hostile_text))
def test_hostile_range_parameters_never_break_the_readings_route(stack, start, end, step):
    params = {"from": start, "to": end} | ({"step": step} if step is not None else {})
    check_answer(stack.get(f"/api/v1/devices/hhpc/{HOUSE}/readings", params=params))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(period=hostile_text, device=hostile_text, source=hostile_text, start=hostile_text)
def test_hostile_energy_and_device_parameters(stack, period, device, source, start):
    check_answer(stack.get(f"/api/v1/energy/{quote(period, safe='')}",
                           params={"device": device, "source": source, "from": start}))
    check_answer(stack.get("/api/v1/meter", params={"serial": device, "day": start}))
    check_answer(stack.get("/api/v1/site/1d", params={"from": start, "to": period}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=5000), st.text(max_size=200).map(str.encode)),
       ctype=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
def test_hostile_bodies_on_the_write_route(stack, body, ctype):
    from tests.api.conftest import TOKEN

    r = httpx.post(stack.base + "/api/v1/meter/config", params={"serial": "nosuchmeter"}, content=body,
                   headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype}, timeout=10)
    check_answer(r)
    assert r.status_code in (400, 404, 415)


def test_openapi_document_holds_for_generated_requests(stack):
    """schemathesis generates requests for every GET operation from the published document."""
    schema = schemathesis.openapi.from_url(stack.base + "/api/v1/openapi.json")
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
    tested, calls = [], []
    for result in schema.get_all_operations():
        op = result.ok()
        # the live feed never ends and the write route changes a meter: both have their own tests
        if op.method.upper() != "GET" or op.path == "/api/v1/live":
            continue

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def run(case):
            case.call_and_validate(checks=checks)
            calls.append(case.path)

        run()
        tested.append(op.path)
    assert len(tested) >= 11, tested
    assert len(calls) >= 5 * len(tested)  # hypothesis really generated requests for each
