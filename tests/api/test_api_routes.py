"""Every route of DESIGN.md's table against the real stack, as the seeds' users call them."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import orjson
import pytest

from bus.envelope import encode_reading
from tests.api.conftest import DAYS, HOUSE, TOKEN, local_ms, wait_for

pytestmark = pytest.mark.slow


def raw_rows(db, start: int, end: int) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT ts, power_w FROM readings WHERE device = ? AND ts >= ? AND ts < ? ORDER BY ts",
                         (HOUSE, start, end)).fetchall()


def test_gethpc_answers_the_seeds_bytes(stack):
    # seed 000: 2025-06-25 23:33:00 local (UTC+2 in summer), 0.288 kW, 0.12 kvar, 242.41 V, 1.2 A, 2/1/0 Wh
    ts = local_ms_at(2025, 6, 25, 23, 33)
    c = stack.collector()
    c.publish("hhpc/gethpc1/reading", encode_reading("hhpc", "gethpc1", ts, {
        "power_w": 288.0, "reactive_power_var": 120.0, "voltage_v": 242.41, "current_a": 1.2,
        "sub1_energy_wh": 2.0, "sub2_energy_wh": 1.0, "sub3_energy_wh": 0.0}, period_s=60))
    c.close()
    r = wait_for(lambda: (x := stack.get("/api/v1/gethpc")).status_code == 200 and x, 10, "gethpc")
    assert r.content == (b'{"timestamp":"2025-06-25 23:33:00","gapower":0.288,"grpower":0.12,"voltage":242.41,'
                         b'"gintens":1.2,"sm1":2,"sm2":1,"sm3":0}\n')
    assert r.headers["content-type"] == "application/json"


def local_ms_at(y, mo, d, h, mi) -> int:
    from datetime import datetime

    from tests.api.conftest import TZ

    return int(datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp() * 1000)


def test_devices_lists_the_replayed_house_with_role_status_and_last_time(stack):
    devices = {(d["source"], d["device"]): d for d in stack.get("/api/v1/devices").json()}
    house = devices[("hhpc", HOUSE)]
    last = raw_rows(stack.db, 0, 2**53)[-1]
    assert house["role"] == "load"
    assert house["status"] == "online"
    assert house["last_ts"] == last[0]
    assert house["last_time"] == "2024-04-01T23:59:00+02:00"  # the dataset's last row, local summer time
    assert house["power_w"] == last[1]
    assert ("sim", "kili") in devices


def test_latest_is_the_newest_reading_with_units(stack):
    r = stack.get(f"/api/v1/devices/hhpc/{HOUSE}/latest")
    assert r.status_code == 200
    doc = r.json()
    last = raw_rows(stack.db, 0, 2**53)[-1]
    assert (doc["ts"], doc["metrics"]["power_w"]) == last
    assert doc["units"]["power_w"] == "W" and doc["units"]["voltage_v"] == "V"
    assert doc["origin"] == "bus"


def test_a_dst_day_of_raw_readings_has_23_hours(stack):
    r = stack.get(f"/api/v1/devices/hhpc/{HOUSE}/readings", params={"from": "2024-03-31", "to": "2024-04-01"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["count"] == 1380 == len(doc["readings"])
    assert doc["from"] == local_ms(DAYS[1]) and doc["to"] == local_ms(DAYS[2])
    assert [x["ts"] for x in doc["readings"]] == [t for t, _ in raw_rows(stack.db, doc["from"], doc["to"])]


def test_readings_downsampled_to_an_hour_average_the_raw_power(stack):
    start, end = local_ms(DAYS[0]), local_ms(DAYS[0], 6)
    doc = stack.get(f"/api/v1/devices/hhpc/{HOUSE}/readings",
                    params={"from": str(start), "to": "2024-03-30T06:00", "step": "1h"}).json()
    assert doc["step_s"] == 3600 and doc["count"] == 6
    raw = raw_rows(stack.db, start, end)
    for slot in doc["readings"]:
        inside = [p for t, p in raw if slot["ts"] <= t < slot["ts"] + 3_600_000 and p is not None]
        assert slot["metrics"]["power_w"] == pytest.approx(sum(inside) / len(inside))


def test_energy_buckets_come_back_as_stored_in_local_days(stack):
    r = stack.get("/api/v1/energy/1d", params={"device": HOUSE, "from": "2024-03-30", "to": "2024-04-02"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["source"] == "hhpc" and doc["timezone"] == "Europe/Brussels"
    assert [b["label"] for b in doc["buckets"]] == ["2024-03-30T00:00+01:00", "2024-03-31T00:00+01:00",
                                                    "2024-04-01T00:00+02:00"]
    dst = doc["buckets"][1]
    assert dst["end"] - dst["start"] == 23 * 3_600_000
    with sqlite3.connect(stack.db) as c:
        stored = c.execute("SELECT energy_import_wh FROM rollups WHERE device = ? AND period = '1d' "
                           "ORDER BY start", (HOUSE,)).fetchall()
    assert [b["energy_import_wh"] for b in doc["buckets"]] == [s[0] for s in stored]
    # same answer with the source named and the range in epoch ms
    again = stack.get("/api/v1/energy/1d", params={"source": "hhpc", "device": HOUSE,
                                                   "from": doc["from"], "to": doc["to"]}).json()
    assert again["buckets"] == doc["buckets"]


def test_site_balance_with_cost_and_profit(stack):
    doc = stack.get("/api/v1/site/1d", params={"from": "2024-03-31", "to": "2024-04-01"}).json()
    assert doc["source"] == "site" and doc["device"] == "home"
    (b,) = doc["buckets"]
    assert b["currency"] == "EUR" and b["solar_profit"] == 0.5 and b["grid_import_wh"] > 0
    info = stack.get("/api/v1/site").json()
    assert info["site"] == "home" and info["timezone"] == "Europe/Brussels" and info["writable"] is True


@pytest.mark.parametrize(("path", "params", "status", "reason"), [
    (f"/api/v1/devices/hhpc/{HOUSE}/readings", {"from": "2024-13-40"}, 400, "from: expected a local date"),
    (f"/api/v1/devices/hhpc/{HOUSE}/readings", {"from": "2024-01-01", "to": "2024-03-01"}, 400, "at most 7 days"),
    (f"/api/v1/devices/hhpc/{HOUSE}/readings", {"from": "2024-03-31", "to": "2024-03-30"}, 400, "before `to`"),
    (f"/api/v1/devices/hhpc/{HOUSE}/readings", {"step": "fortnight"}, 400, "step: expected a duration"),
    (f"/api/v1/devices/hhpc/{HOUSE}/readings", {"from": "2000-01-01", "to": "2024-01-01", "step": "1m"}, 400,
     "larger step"),
    ("/api/v1/devices/hhpc/nosuchhouse/latest", {}, 404, "unknown device hhpc/nosuchhouse"),
    ("/api/v1/devices/hhpc/Bad Name!/latest", {}, 400, "device"),
    ("/api/v1/energy/1d", {"device": "nosuchhouse"}, 404, "unknown"),
    ("/api/v1/energy/2d", {"device": HOUSE}, 400, "period"),
    ("/api/v1/energy/15m", {"device": HOUSE, "from": "2020-01-01", "to": "2024-01-01"}, 400, "5000 buckets"),
    ("/api/v1/energy/1d", {}, 400, "device"),
    ("/api/v1/meter", {"serial": "nosuchmeter"}, 404, "unknown meter"),
    ("/api/v1/meter", {"serial": "kili", "day": "yesterday"}, 400, "day: expected a local date"),
    ("/api/v1/no/such/route", {}, 404, ""),
])
def test_bad_requests_are_problem_documents_with_the_reason(stack, path, params, status, reason):
    r = stack.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["status"] == status and reason in doc["detail"]


def test_processes_show_status_health_and_dead_letters(stack):
    c = stack.collector()
    c.publish(f"hhpc/{HOUSE}/reading", b'{"v": 1, "source": "hhpc", "device": "' + HOUSE.encode() + b'", "ts": -5}')
    c.close()

    def api_dlq():
        procs = {p["name"]: p for p in stack.get("/api/v1/processes").json()}
        return procs if procs["store"]["dlq_seen"] >= 1 and procs["api"]["dlq_seen"] >= 1 else None

    procs = wait_for(api_dlq, 15, "the dead letter to show")
    assert "schema" in procs["store"]["dlq_last_reason"]
    for name in ("store", "api", HOUSE, "meters"):
        assert procs[name]["configured"] and procs[name]["status"] == "online", procs[name]
    assert procs["store"]["kind"] == "consumer" and procs[HOUSE]["type"] == "hhpc"
    assert procs["api"]["health"]["rss_mb"] > 0


def test_sim_meters_head_end(stack):
    hb = wait_for(lambda: [h for h in stack.get("/api/v1/heartbeats").json() if h["serial"] == "kili"], 15,
                  "a heartbeat")[0]
    assert hb["status"] == "online" and hb["energy_import_wh"] is not None
    meters = {m["serial"]: m for m in stack.get("/api/v1/meters").json()}
    assert meters["kili"]["config"]["solar_kwp"] == 4.0
    day = wait_for(lambda: (d := stack.get("/api/v1/meter", params={"serial": "kili", "day": "2024-03-31"}).json())
                   ["day"]["readings"] and d, 20, "sim readings stored")
    rows = day["day"]["readings"]
    assert all(local_ms(DAYS[1]) <= r["ts"] < local_ms(DAYS[2]) for r in rows)
    counters = [r["metrics"]["energy_import_wh"] for r in rows]
    assert counters == sorted(counters)


def test_write_route_needs_the_token_and_reaches_the_meter(stack):
    url = stack.base + "/api/v1/meter/config"
    body = {"daily_kwh": 12.5}
    assert httpx.post(url, params={"serial": "kili"}, json=body).status_code == 401
    wrong = httpx.post(url, params={"serial": "kili"}, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["content-type"].startswith("application/problem+json")
    ok = httpx.post(url, params={"serial": "kili"}, json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=10)
    assert ok.status_code == 200, ok.text
    doc = ok.json()
    assert doc["answered"] and doc["answer"]["ok"] and doc["answer"]["config"]["daily_kwh"] == 12.5
    meters = {m["serial"]: m for m in stack.get("/api/v1/meters").json()}
    assert meters["kili"]["config"]["daily_kwh"] == 12.5


def test_live_feed_streams_readings_buckets_and_status(stack):
    events: list[tuple[str, dict]] = []
    opened = threading.Event()

    def listen():
        with httpx.stream("GET", stack.base + "/api/v1/live", params={"device": "feedtest"}, timeout=20) as r:
            opened.set()
            event = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event:
                    events.append((event, orjson.loads(line[6:])))
                    if len(events) >= 2:
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert opened.wait(10)
    time.sleep(0.5)
    c = stack.collector()
    c.publish("hhpc/feedtest/status", b"online", retain=True)
    c.publish("hhpc/feedtest/reading", encode_reading("hhpc", "feedtest", 1_700_000_000_000, {"power_w": 321.0}))
    c.close()
    t.join(15)
    assert ("status", {"source": "hhpc", "device": "feedtest", "status": "online"}) in events
    readings = [d for e, d in events if e == "reading"]
    assert readings and readings[0]["metrics"] == {"power_w": 321.0}


def test_openapi_31_documents_every_route_of_the_design(stack):
    doc = stack.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/api/v1/gethpc", "/api/v1/devices", "/api/v1/devices/{source}/{device}/latest",
                 "/api/v1/devices/{source}/{device}/readings", "/api/v1/energy/{period}", "/api/v1/site/{period}",
                 "/api/v1/meters", "/api/v1/heartbeats", "/api/v1/meter", "/api/v1/processes", "/api/v1/live"):
        assert path in doc["paths"], path
    period = next(p for p in doc["paths"]["/api/v1/energy/{period}"]["get"]["parameters"] if p["name"] == "period")
    assert period["schema"]["enum"] == ["15m", "1h", "1d", "1w", "1mo", "1y"]


def test_cors_is_off_and_every_request_is_one_log_line(stack):
    r = stack.get("/api/v1/devices", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    marker = f"/api/v1/devices/hhpc/{HOUSE}/latest?probe={time.monotonic_ns()}"
    stack.get(marker)
    wait_for(lambda: marker in stack.api.output(), 5, "the request's log line")
    lines = [line for line in stack.api.output().splitlines() if marker in line]
    assert len(lines) == 1 and " 200 " in lines[0] and "wattbus.api" in lines[0]


def test_dashboard_pages_and_static_files_are_served_by_the_same_process(stack):
    for path in ("/", "/history", "/meters", "/processes"):
        r = stack.get(path)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "/static/vendor/uplot/uPlot.iife.min.js" in r.text
    js = stack.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert js.status_code == 200 and b"uPlot" in js.content


def test_sigterm_with_a_live_client_connected_stops_within_10_s(stack):
    import re
    import signal

    from tests.support.ports import wait_port
    from tests.support.processes import WattbusProcess

    port = int(re.search(r"\[consumer\.api2\][^\[]*port = (\d+)", stack.config.read_text()).group(1))
    c = stack.collector("wattbus/api2/status")
    api2 = WattbusProcess(stack.config, "api2").start()
    try:
        wait_port(port, timeout=20)
        connected = threading.Event()

        def hold_a_feed_open():
            try:
                with httpx.stream("GET", f"http://127.0.0.1:{port}/api/v1/live", timeout=30) as r:
                    connected.set()
                    for _ in r.iter_lines():
                        pass
            except httpx.HTTPError:
                pass

        threading.Thread(target=hold_a_feed_open, daemon=True).start()
        assert connected.wait(10)
        t0 = time.monotonic()
        api2.proc.send_signal(signal.SIGTERM)
        assert api2.proc.wait(10) == 0
        assert time.monotonic() - t0 < 10
        c.wait_for(lambda: c.on("wattbus/api2/status") and c.on("wattbus/api2/status")[-1][1] == b"offline", 5,
                   "offline status")
    finally:
        api2.kill()
        c.close()
