"""`wattbus export --sink URL` reads back from every network sink exactly what was stored."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from bus.envelope import Reading, to_dict
from bus.sinks.base import open_sink
from tests.conftest import unique
from tests.store.conftest import MONGO_URL, T0, readings
from tests.support.processes import run_cli

KINDS = ["mysql", "influx"] + (["mongo"] if MONGO_URL else [])


@pytest.fixture(params=KINDS)
def url(request) -> str:
    if request.param == "mysql":
        return request.getfixturevalue("mariadb").url(unique("wb"))
    if request.param == "influx":
        return request.getfixturevalue("victoria").url()
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(MONGO_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{unique('wattbus_test')}", parts.query, ""))


def stored(url: str, rs: list[Reading], victoria) -> None:
    sink = open_sink(url)
    sink.ensure_schema()
    sink.write(rs)
    sink.close()
    if url.startswith("influx"):
        victoria.flush()


def test_export_jsonl_gives_back_the_readings_of_the_range(url, victoria):
    device = unique("house")
    rs = readings(device, 1500)
    stored(url, rs, victoria)
    # one day (UTC) out of the stored 25 hours, epoch-ms bounds
    res = run_cli("export", "--sink", url, "--source", "hhpc", "--device", device,
                  "--from", str(T0), "--to", str(T0 + 86_400_000))
    assert res.returncode == 0, res.stderr
    got = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert got == [orjson.loads(orjson.dumps(to_dict(r))) for r in rs[:1440]]


def test_export_csv_has_one_row_per_reading_and_a_column_per_metric(url, victoria):
    device = unique("house")
    rs = readings(device, 100)
    stored(url, rs, victoria)
    res = run_cli("export", "--sink", url, "--source", "hhpc", "--device", device, "--format", "csv",
                  "--from", "2024-01-01T00:00:00+00:00", "--to", "2024-01-02T00:00:00+00:00")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 100
    assert rows[0]["time_utc"] == "2024-01-01T00:00:00.000Z"
    assert float(rows[5]["power_w"]) == rs[5].metrics["power_w"]
    assert rows[96]["quality"] == "missing" and rows[96]["power_w"] == ""
