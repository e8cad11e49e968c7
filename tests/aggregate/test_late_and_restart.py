"""Late data, duplicates, closing and restarts: buckets must come out as if everything had arrived once, in
order, in one go.

The from-scratch reference is the same engine fed every reading once, sorted, in a single batch; the tests
change only *how* the readings arrive (batches, redelivery, out of order, a restart in between).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.sinks.sqlite import SqliteSink
from tests.aggregate.conftest import MIN, Run, local_ms, make_engine, reading, values


def shelly_day(
    start: str = "2024-06-03 00:00",
    minutes: int = 24 * 60,
    outage: tuple[int, int] | None = None,
    seed: int = 3,
) -> list:
    """A grid meter polled every minute (device time jitters a second), counters and power, one outage."""
    rng = random.Random(seed)
    t0 = local_ms(start)
    imp = exp = 0.0
    out = []
    for k in range(minutes):
        p = rng.choice([350.0, 800.0, 2400.0, -1500.0])
        if p > 0:
            imp += p / 60
        else:
            exp -= p / 60
        ts = t0 + k * MIN + rng.choice([0, 1000, -1000])
        if outage and outage[0] <= k < outage[1]:
            continue
        out.append(
            reading(
                "mains",
                ts,
                {"power_w": p, "energy_import_wh": round(imp, 3), "energy_export_wh": round(exp, 3)},
                seq=k,
            )
        )
    return out


def reference(readings: list, **cfg) -> dict:
    run = Run(make_engine(**cfg)).feed(sorted(readings, key=lambda r: r.ts))
    return {k: values(b) for k, b in run.buckets.items()}


def final(run: Run) -> dict:
    return {k: values(b) for k, b in run.buckets.items()}


def test_batching_redelivery_and_shuffling_change_nothing():
    rs = shelly_day(outage=(300, 420))
    want = reference(rs)
    rng = random.Random(1)
    run = Run(make_engine())
    i = 0
    while i < len(rs):
        n = rng.randint(1, 400)
        batch = rs[i : i + n]
        run.engine.feed(rng.sample(batch, len(batch)))  # out of order within a batch
        run.flush()
        if rng.random() < 0.3:  # a crash before the ack: the broker sends the batch again
            run.engine.feed(list(batch))
            run.flush()
        i += n
    assert final(run) == want
    assert run.engine.counters["duplicates"] > 0


def test_a_late_backfill_fills_a_partial_hour_which_becomes_complete_and_is_written_again():
    rs = shelly_day(outage=(600, 640))  # 10:00 .. 10:40 missing
    live = [r for r in rs]
    backfill = [
        r for r in shelly_day() if local_ms("2024-06-03 10:00") <= r.ts < local_ms("2024-06-03 10:40")
    ]
    run = Run(make_engine()).feed(live, batch=97)
    hour = run.get("shelly", "mains", "1h", local_ms("2024-06-03 10:00"))
    assert hour.status == "partial" and hour.coverage < 0.4
    writes_before = len(run.writes)
    run.feed(backfill, batch=25)  # the producer's backfill: minute readings inside the gap, after the fact
    after = run.get("shelly", "mains", "1h", local_ms("2024-06-03 10:00"))
    assert after.status == "complete" and after.coverage == 1.0
    assert after.rev > hour.rev and len(run.writes) > writes_before
    assert run.engine.counters["late_filled"] == len(backfill)
    # identical to having had every reading in time, the backfill included
    assert final(run) == reference(shelly_day())
    # and a second delivery of the backfill changes nothing
    run.feed(backfill)
    assert final(run) == reference(shelly_day())


def test_counter_energy_of_an_outage_is_the_same_before_and_after_the_backfill():
    """Before the backfill the outage's energy is spread evenly; after, it is where it was used; the day's
    total is the meters' difference both times."""
    rs = shelly_day(outage=(600, 900))
    run = Run(make_engine()).feed(rs)
    day_before = run.get("shelly", "mains", "1d", local_ms("2024-06-03 00:00")).energy_import_wh
    full = shelly_day()
    run.feed([r for r in full if r.ts not in {x.ts for x in rs}])
    day_after = run.get("shelly", "mains", "1d", local_ms("2024-06-03 00:00")).energy_import_wh
    assert day_before == pytest.approx(day_after, abs=1e-6)


def test_a_bucket_closes_after_the_grace_time_and_later_readings_are_counted_not_applied():
    rs = shelly_day(outage=(600, 640))
    run = Run(make_engine(grace="2h")).feed(rs)
    hour_start = local_ms("2024-06-03 10:00")
    closed = run.get("shelly", "mains", "1h", hour_start)
    assert closed.status == "closed"
    late = [r for r in shelly_day() if hour_start + 5 * MIN <= r.ts < hour_start + 10 * MIN]
    assert len(late) >= 4
    run.feed(late)
    again = run.get("shelly", "mains", "1h", hour_start)
    assert again.late == len(late) and again.energy_import_wh == closed.energy_import_wh
    assert again.coverage == closed.coverage and again.status == "closed"
    assert run.get("shelly", "mains", "1d", local_ms("2024-06-03 00:00")).late == len(late)
    assert run.engine.counters["late_closed"] == len(late)


def test_a_restart_resumes_from_the_rollups_table_and_the_stored_readings(tmp_path):
    """Stop after part of the data (the last batch written but not acknowledged), start a new engine on the
    same database: its buckets end up identical to a from-scratch run, backfill after the restart included."""
    full = shelly_day(minutes=2 * 24 * 60, outage=None)
    gap = (1500, 1600)
    rs = [r for k, r in enumerate(full) if not gap[0] <= k < gap[1]]
    backfill = full[gap[0] : gap[1]]
    db = tmp_path / "wattbus.db"
    store, rollups = SqliteSink(f"sqlite:///{db}"), SqliteSink(f"sqlite:///{db}")
    store.ensure_schema()
    rollups.ensure_schema()
    store.write(rs)  # what the store consumer keeps
    cut = 2000
    first = Run(make_engine(rollups=rollups, readings=store), sink=rollups).feed(rs[:cut], batch=300)
    assert first.engine.counters["readings"] == cut
    second = Run(make_engine(rollups=SqliteSink(f"sqlite:///{db}"), readings=store), sink=rollups)
    second.feed(rs[cut - 250 :], batch=400)  # 250 redelivered: already counted
    assert second.engine.counters["duplicates"] == 250
    assert second.engine.counters["restored_devices"] == 1
    second.feed(backfill, batch=30)  # the outage before the restart, backfilled after it
    assert second.engine.counters["late_filled"] == len(backfill)
    stored = {
        (b.source, b.device, b.period, b.start): values(b)
        for p in ("15m", "1h", "1d", "1w", "1mo", "1y")
        for b in rollups.read_buckets("shelly", "mains", p, 0, 2**62)
    }
    assert stored == reference(full)


def test_without_stored_readings_a_restart_leaves_a_gap_but_never_counts_twice(tmp_path):
    rs = shelly_day()
    db = tmp_path / "rollups.db"
    rollups = SqliteSink(f"sqlite:///{db}")
    rollups.ensure_schema()
    Run(make_engine(rollups=rollups), sink=rollups).feed(rs[:700], batch=100)
    empty_store = SqliteSink(f"sqlite:///{tmp_path / 'empty.db'}")
    empty_store.ensure_schema()
    second = Run(make_engine(rollups=rollups, readings=empty_store, restore_wait="0s"), sink=rollups)
    second.feed(rs[600:])
    day = rollups.read_buckets("shelly", "mains", "1d", local_ms("2024-06-03 00:00"), 2**62)[0]
    whole = reference(rs)[("shelly", "mains", "1d", day.start)]
    # the minute across the restart is missing (no tail to start from), nothing is counted twice
    assert day.energy_import_wh <= whole["energy_import_wh"] + 1e-6
    assert day.readings == whole["readings"]
    assert day.coverage < whole["coverage"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=1439), max_size=6),
    redeliver=st.lists(st.booleans(), min_size=7, max_size=7),
    seed=st.integers(0, 10_000),
)
def test_any_batching_with_redelivery_gives_the_from_scratch_buckets(cuts, redeliver, seed):
    rs = shelly_day(seed=seed, outage=(seed % 1000, seed % 1000 + 30))
    edges = sorted(set([0, *(c % len(rs) for c in cuts), len(rs)]))
    run = Run(make_engine())
    for k, (a, b) in enumerate(zip(edges, edges[1:])):
        run.feed(rs[a:b])
        if redeliver[k % 7]:
            run.feed(rs[max(0, a - 50) : b])
    assert final(run) == reference(rs)
