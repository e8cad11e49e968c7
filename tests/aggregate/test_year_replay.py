"""The generated 2024 year replayed through the real broker into a store and two aggregate consumers.

- the reference aggregate's buckets are compared with an independent computation: plain SQL ``GROUP BY``
  over the raw readings the store kept, against bucket boundaries the test makes itself from the time zone's
  rules (Brussels' offsets are whole hours, so a local hour is a UTC hour; days, months and the year start at
  local midnight);
- the other aggregate is killed with SIGKILL in the middle of the year and started again: its buckets must be
  identical to the reference's, value for value.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest

from bus import rollup
from bus.sinks.sqlite import SqliteSink
from producers.hhpc.dataset import iter_rows
from producers.hhpc.generate import generate_year
from producers.hhpc.localtime import iter_epochs
from tests.support.mqtt import Collector
from tests.support.processes import WattbusProcess, write_config

TZ = ZoneInfo("Europe/Brussels")
DEVICE = "year"
U = 1e-6  # the aggregate keeps energy in µWh: each reading may be off by half of one


def year_total(db) -> int:
    try:
        sink = SqliteSink(f"sqlite:///{db}")
        got = sink.read_buckets("hhpc", DEVICE, "1y", 0, 2**62)
        sink.close()
        return sum(b.readings for b in got)
    except sqlite3.Error:
        return 0


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s: {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def replay(broker, tmp_path_factory):
    work = tmp_path_factory.mktemp("year")
    dataset = work / "hhpc-2024.txt"
    generate_year(2024, dataset, seed=5)
    expected = sum(1 for _ in iter_epochs(iter_rows(dataset), TZ))
    store_db, ref_db, kill_db = work / "store.db", work / "ref.db", work / "kill.db"
    cfg = write_config(
        work / "wattbus.toml",
        broker,
        f"""
        [producer.{DEVICE}]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        batch = 1000

        [consumer.store]
        type = "store"
        sink = "sqlite:///{store_db}"

        [consumer.aggref]
        type = "aggregate"
        sink = "sqlite:///{ref_db}"

        [consumer.aggkill]
        type = "aggregate"
        sink = "sqlite:///{kill_db}"
        readings = "sqlite:///{store_db}"
        """,
    )
    started: list[WattbusProcess] = []

    def start(name: str) -> WattbusProcess:
        p = WattbusProcess(cfg, name).start()
        started.append(p)
        return p

    retained = Collector(broker)
    try:
        for name in ("store", "aggref", "aggkill"):
            start(name).wait_output("subscribed to", timeout=30)
        start(DEVICE)
        victim = started[2]
        wait(lambda: year_total(kill_db) > expected * 0.4, 600, "the aggregate to be well into the year")
        victim.proc.kill()  # SIGKILL: no flush, no offline, unacknowledged messages stay with the broker
        victim.proc.wait(10)
        killed_at = year_total(kill_db)
        again = start("aggkill")
        wait(lambda: year_total(ref_db) == expected, 900, "the reference aggregate to count the whole year")
        wait(lambda: year_total(kill_db) == expected, 900, "the restarted aggregate to count the whole year")
        store = SqliteSink(f"sqlite:///{store_db}")
        wait(lambda: store.count("hhpc", DEVICE) == expected, 300, "the store to hold the whole year")
        store.close()
        got = retained.client  # subscribe after the fact: only retained messages come
        retained_msgs: list[bytes] = []
        got.on_message = lambda c, u, m: retained_msgs.append(m.payload)
        got.subscribe(f"agg/hhpc/{DEVICE}/1y", 1)
        wait(
            lambda: any(rollup.decode(x).readings == expected - 1 for x in retained_msgs),
            60,
            "the complete 2024 bucket on its agg topic",
        )
        yield {
            "expected": expected,
            "store": store_db,
            "ref": ref_db,
            "kill": kill_db,
            "killed_at": killed_at,
            "restart_log": again.output(),
            "retained": retained_msgs,
        }
    finally:
        retained.close()
        for p in started:
            p.kill()


def boundaries(period: str) -> list[tuple[int, int]]:
    """(start, end) of the 2024 buckets, from local midnights; hours as UTC hours (whole-hour offsets)."""

    def midnight(d: date) -> int:
        return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp() * 1000)

    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(367)]
    if period == "1d":
        return [(midnight(d), midnight(d + timedelta(days=1))) for d in days[:366]]
    if period == "1h":
        lo, hi = midnight(days[0]), midnight(days[366])
        return [(t, t + 3_600_000) for t in range(lo, hi, 3_600_000)]
    if period == "1mo":
        firsts = [date(2024, m, 1) for m in range(1, 13)] + [date(2025, 1, 1)]
        return [(midnight(a), midnight(b)) for a, b in zip(firsts, firsts[1:])]
    return [(midnight(date(2024, 1, 1)), midnight(date(2025, 1, 1)))]


def sql_buckets(store_db, period: str) -> dict[int, tuple]:
    db = sqlite3.connect(store_db)
    db.execute("CREATE TEMP TABLE b (start INTEGER PRIMARY KEY, fin INTEGER NOT NULL)")
    db.executemany("INSERT INTO b VALUES (?, ?)", boundaries(period))
    rows = db.execute(
        "SELECT b.start, b.fin, count(r.ts), count(r.energy_wh), total(r.energy_wh), "
        "total(r.sub1_energy_wh), total(r.sub2_energy_wh), total(r.sub3_energy_wh), "
        "min(r.power_w), max(r.power_w), avg(r.power_w) "
        "FROM b LEFT JOIN readings r ON r.source = 'hhpc' AND r.device = ? "
        "AND r.ts > b.start AND r.ts <= b.fin "
        "GROUP BY b.start ORDER BY b.start",
        (DEVICE,),
    ).fetchall()
    db.close()
    return {r[0]: r for r in rows}


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("period", ["1h", "1d", "1mo", "1y"])
def test_buckets_equal_an_independent_sql_computation_over_the_stored_readings(replay, period):
    agg = SqliteSink(f"sqlite:///{replay['ref']}")
    got = {b.start: b for b in agg.read_buckets("hhpc", DEVICE, period, 0, 2**62)}
    agg.close()
    want = sql_buckets(replay["store"], period)
    in_year = {k: v for k, v in got.items() if k in want}
    with_data = {k for k, v in want.items() if v[2] > 0}
    assert set(in_year) == with_data, "a bucket for every period with readings, and none without"
    assert len(want) == {"1h": 8784, "1d": 366, "1mo": 12, "1y": 1}[period]
    for start in with_data:
        _, fin, n, n_energy, energy, s1, s2, s3, pmin, pmax, pavg = want[start]
        b = in_year[start]
        assert b.end == fin and b.readings == n
        assert b.coverage == pytest.approx(n_energy * 60_000 / (fin - start), abs=1e-12)
        if not n_energy:  # only rows the dataset marks missing: nothing known, not zero
            assert b.energy_import_wh is None and b.power_avg_w is None and b.sub1_energy_wh is None
            continue
        tol = n * U / 2 + 1e-9
        assert b.energy_import_wh == pytest.approx(energy, abs=tol), b.label
        assert (b.sub1_energy_wh, b.sub2_energy_wh, b.sub3_energy_wh) == pytest.approx((s1, s2, s3), abs=tol)
        assert b.energy_export_wh == 0.0
        if n_energy:
            assert (b.power_min_w, b.power_max_w) == (pmin, pmax)
            # power is integrated in µWh per reading: a minute's integral is off by at most 0.5 µWh = 3e-5 W
            assert b.power_avg_w == pytest.approx(pavg, abs=0.5 * 3.6 / 60_000)
        assert b.status in ("complete", "partial", "closed", "open")


@pytest.mark.slow
def test_the_dst_days_of_the_replay_have_23_and_25_hours(replay):
    agg = SqliteSink(f"sqlite:///{replay['ref']}")
    for day, hours in (("2024-03-31", 23), ("2024-10-27", 25)):  # the autumn day last: used below
        d = [b for b in agg.read_buckets("hhpc", DEVICE, "1d", 0, 2**62) if b.label == day][0]
        assert d.end - d.start == hours * 3_600_000
        hs = agg.read_buckets("hhpc", DEVICE, "1h", d.start, d.end)
        assert len(hs) == hours and len({h.label for h in hs}) == hours
        assert all(h.label.startswith(day) for h in hs)
    # the dataset records local wall-clock minutes, so the repeated hour is in it once (the first pass); the
    # second pass holds only the row stamped 03:00, which ends it
    second = [h for h in hs if h.label == "2024-10-27T02:00+01:00"][0]
    first = [h for h in hs if h.label == "2024-10-27T02:00+02:00"][0]
    assert (first.readings, second.readings) == (59, 1)  # 02:01..02:59 CEST; 03:00 CET
    agg.close()


@pytest.mark.slow
def test_months_add_up_to_the_year_to_the_milliwatt_hour(replay):
    agg = SqliteSink(f"sqlite:///{replay['ref']}")
    months = [m for m in agg.read_buckets("hhpc", DEVICE, "1mo", 0, 2**62) if m.label.startswith("2024")]
    years = agg.read_buckets("hhpc", DEVICE, "1y", 0, 2**62)
    agg.close()
    # the row stamped 2024-01-01 00:00 ends the last minute of 2023: a 2023 bucket with one reading
    assert [(y.label, y.readings) for y in years[:1]] == [("2023", 1)]
    year = years[1]
    assert len(months) == 12 and year.label == "2024"
    assert abs(sum(m.energy_import_wh for m in months) - year.energy_import_wh) < 1e-3
    assert sum(m.readings for m in months) == year.readings == replay["expected"] - 1


@pytest.mark.slow
def test_a_kill_9_in_the_middle_of_the_year_ends_identical_to_the_uninterrupted_run(replay):
    assert 0 < replay["killed_at"] < replay["expected"]
    assert "restored from" in replay["restart_log"]
    ref, kill = (SqliteSink(f"sqlite:///{replay[k]}") for k in ("ref", "kill"))
    for period in rollup.PERIODS:
        a = [_values(b) for b in ref.read_buckets("hhpc", DEVICE, period, 0, 2**62)]
        b = [_values(b) for b in kill.read_buckets("hhpc", DEVICE, period, 0, 2**62)]
        assert len(a) == len(b) and a == b, period
    ref.close()
    kill.close()


@pytest.mark.slow
def test_the_newest_year_bucket_is_retained_on_its_agg_topic(replay):
    got = [rollup.decode(x) for x in replay["retained"]]
    assert all((b.source, b.device, b.period) == ("hhpc", DEVICE, "1y") for b in got)
    assert got[-1].label == "2024" and got[-1].readings == replay["expected"] - 1


def _values(b: rollup.Bucket) -> dict:
    d = msgspec.structs.asdict(b)
    d.pop("rev")  # how many times it was written depends on batching and restarts, not on the data
    return d
