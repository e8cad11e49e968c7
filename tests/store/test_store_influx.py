"""The InfluxDB sink: against a real VictoriaMetrics, and its Flux path against recorded InfluxDB answers."""

from __future__ import annotations

import threading

import orjson
import pytest
from aiohttp import web

from bus.envelope import Reading
from bus.sinks.influx import InfluxSink, line
from bus.sinks.base import SinkError
from tests.conftest import unique
from tests.store.conftest import T0, readings
from tests.support.ports import free_port, wait_port


def test_one_reading_is_one_line_with_every_metric_as_a_field():
    metrics = {"power_w": 1500.5, "power_l1_w": 500.0, "voltage_l1_v": 231.2}
    r = Reading("shelly", "pro3em", T0, metrics, 7, 60.0)
    assert line(r) == ("shelly,device=pro3em power_w=1500.5,power_l1_w=500.0,voltage_l1_v=231.2,seq=7i,"
                       "period_s=60.0,quality=0i 1704067200000")
    missing = Reading("hhpc", "house", T0, {}, None, 60.0, "missing")
    assert line(missing) == "hhpc,device=house period_s=60.0,quality=1i 1704067200000"


def test_readings_written_to_victoria_come_back_exactly(victoria, influx_url):
    device = unique("house")
    sink = InfluxSink(influx_url + "&batch=700")  # several requests per write
    sink.ensure_schema()
    rs = readings(device, 3000)
    sink.write(rs)
    victoria.flush()
    assert list(sink.read("hhpc", device, T0, T0 + 3000 * 60_000)) == rs
    assert sink.read_mode == "victoria"  # found out by asking the server
    assert sink.count("hhpc", device) == 3000 and sink.count("hhpc", device, rs[100].ts, rs[110].ts) == 10
    assert list(sink.read("hhpc", device, rs[100].ts, rs[110].ts)) == rs[100:110]
    assert list(sink.read("p1", device, T0, T0 + 3000 * 60_000)) == []
    sink.close()


def test_a_rewritten_reading_is_read_back_once(victoria, influx_url):
    device = unique("house")
    sink = InfluxSink(influx_url)
    rs = readings(device, 500)
    sink.write(rs)
    sink.write(rs[:200])  # redelivery
    victoria.flush()
    # VictoriaMetrics without -dedup keeps the second copy as a raw sample; read() gives each reading once
    assert len(victoria.raw_timestamps("hhpc_period_s", device)) == 700
    assert list(sink.read("hhpc", device, 0, 2**53)) == rs
    assert sink.count("hhpc", device) == 500
    sink.close()


def test_a_server_that_is_down_raises_sink_error_and_the_sink_recovers(victoria, influx_url):
    device = unique("house")
    sink = InfluxSink(influx_url)
    victoria.stop()
    try:
        with pytest.raises(SinkError, match="influx"):
            sink.write(readings(device, 5))
    finally:
        victoria.start()
    sink.write(readings(device, 5))
    victoria.flush()
    assert len(list(sink.read("hhpc", device, 0, 2**42))) == 5
    sink.close()


def test_url_needs_a_bucket_and_refuses_an_inline_token():
    with pytest.raises(ValueError, match="bucket"):
        InfluxSink("influx://127.0.0.1:8086?org=home")
    with pytest.raises(ValueError, match="token"):
        InfluxSink("influx://me:secret@127.0.0.1:8086?org=home&bucket=energy")
    with pytest.raises(ValueError, match="read"):
        InfluxSink("influx://127.0.0.1:8086?org=home&bucket=energy&read=sql")


# -- the Flux path, against a stand-in that answers like InfluxDB 2 ------------------------------------------
FLUX_ANSWER = """\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,double,double,double,long,long
#group,false,false,true,true,false,true,true,false,false,false,false,false
#default,_result,,,,,,,,,,,
,result,table,_start,_stop,_time,_measurement,device,period_s,power_l1_w,power_w,quality,seq
,,0,2024-01-01T00:00:00Z,2024-01-02T00:00:00Z,2024-01-01T00:01:00.123Z,shelly,pro3em,60,500,1500.5,0,1
,,0,2024-01-01T00:00:00Z,2024-01-02T00:00:00Z,2024-01-01T00:02:00Z,shelly,pro3em,60,,,1,2

"""
FLUX_COUNT_ANSWER = """\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,string,string,string,long
#group,false,false,true,true,true,true,true,false
#default,_result,,,,,,,
,result,table,_start,_stop,_field,_measurement,device,_value
,,0,2024-01-01T00:00:00Z,2024-01-02T00:00:00Z,quality,shelly,pro3em,2

"""


class FakeInflux:
    """Answers /health like InfluxDB 2, records writes and queries, replies to queries with FLUX_ANSWER."""

    def __init__(self):
        self.port = free_port()
        self.writes: list[tuple[dict, str, str]] = []
        self.queries: list[tuple[dict, str]] = []
        self._loop = None
        threading.Thread(target=self._serve, daemon=True).start()
        wait_port(self.port)

    def _serve(self):
        import asyncio

        async def health(request):
            return web.json_response({"name": "influxdb", "status": "pass", "version": "v2.7.10"})

        async def write(request):
            auth = request.headers.get("Authorization", "")
            self.writes.append((dict(request.query), auth, await request.text()))
            return web.Response(status=204)

        async def query(request):
            body = orjson.loads(await request.read())
            self.queries.append((dict(request.query), body["query"]))
            answer = FLUX_COUNT_ANSWER if "count()" in body["query"] else FLUX_ANSWER
            return web.Response(text=answer, content_type="text/csv")

        app = web.Application()
        app.add_routes([web.get("/health", health), web.post("/api/v2/write", write),
                        web.post("/api/v2/query", query)])
        self._loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._loop.run_forever()


@pytest.fixture(scope="module")
def fake_influx():
    return FakeInflux()


def test_writes_carry_org_bucket_ms_precision_and_the_token_from_its_file(fake_influx, tmp_path):
    token = tmp_path / "influx.token"
    token.write_text("s3cret-token\n")
    sink = InfluxSink(f"influx://127.0.0.1:{fake_influx.port}?org=home&bucket=energy&token_file={token}")
    sink.write([Reading("p1", "meter", T0, {"power_w": 250.0}, 1, 0.0)])
    query, auth, body = fake_influx.writes[-1]
    assert query["org"] == "home" and query["bucket"] == "energy" and query["precision"] == "ms"
    assert auth == "Token s3cret-token"
    assert body == "p1,device=meter power_w=250.0,seq=1i,period_s=0.0,quality=0i 1704067200000"
    assert "s3cret" not in sink.describe()
    sink.close()


def test_the_token_may_come_from_the_environment(fake_influx, monkeypatch):
    monkeypatch.setenv("WATTBUS_INFLUX_TOKEN", "from-env")
    sink = InfluxSink(f"influx://127.0.0.1:{fake_influx.port}?org=home&bucket=energy")
    sink.write([Reading("p1", "meter", T0, {"power_w": 250.0})])
    assert fake_influx.writes[-1][1] == "Token from-env"
    sink.close()


def test_influxdb_is_read_in_flux_and_pivoted_rows_become_readings(fake_influx):
    sink = InfluxSink(f"influx://127.0.0.1:{fake_influx.port}?org=home&bucket=energy")
    got = list(sink.read("shelly", "pro3em", T0, T0 + 86_400_000))
    assert sink.read_mode == "flux"
    assert got == [
        Reading("shelly", "pro3em", T0 + 60_123, {"power_w": 1500.5, "power_l1_w": 500.0}, 1, 60.0, "ok"),
        Reading("shelly", "pro3em", T0 + 120_000, {}, 2, 60.0, "missing"),
    ]
    org, flux = fake_influx.queries[-1]
    assert org["org"] == "home"
    assert 'from(bucket: "energy")' in flux
    assert "range(start: 2024-01-01T00:00:00.000Z, stop: 2024-01-02T00:00:00.000Z)" in flux
    assert 'r._measurement == "shelly" and r.device == "pro3em"' in flux
    assert 'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")' in flux
    assert sink.count("shelly", "pro3em", T0, T0 + 86_400_000) == 2
    assert 'r._field == "quality")\n  |> count()' in fake_influx.queries[-1][1]
    sink.close()
