"""Hostile input never breaks the aggregate: whatever the readings hold (huge, negative, NaN-free but absurd
values, far past and future times, giant periods, counters jumping around), the engine keeps going, energies
are never negative, and every bucket it writes is a valid record a sink accepts. Price lists the same."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import rollup
from bus.sinks.sqlite import SqliteSink
from bus.tariff import TariffError, parse_price_message, read_price_csv
from tests.aggregate.conftest import BRUSSELS, MIN, WALL_2030, Run, local_ms, make_engine, reading

T0 = local_ms("2024-06-03 10:00")
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**15), 10**15).map(float),
    st.sampled_from([0.0, -0.0, 1e300, -1e300, 5e-324, 1e12, 999_999_999_999.0]),
)
keys = st.sampled_from(
    [
        "power_w",
        "energy_import_wh",
        "energy_export_wh",
        "energy_import_t1_wh",
        "energy_import_t2_wh",
        "energy_export_t1_wh",
        "energy_export_t2_wh",
        "gas_m3",
        "energy_wh",
        "sub1_energy_wh",
        "sub2_energy_wh",
        "sub3_energy_wh",
        "tariff",
        "voltage_v",
    ]
)
readings = st.lists(
    st.tuples(
        st.one_of(st.integers(T0 - 3 * 86_400_000, T0 + 3 * 86_400_000), st.integers(0, 32503680000000)),
        st.dictionaries(keys, values, max_size=6),
        st.sampled_from([0.0, 1.0, 60.0, 900.0, 86_400.0, 31 * 86_400.0, 1e9]),
        st.sampled_from(["ok", "missing", "estimated"]),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rs=readings, batch=st.integers(1, 20))
def test_any_readings_give_valid_buckets_and_no_negative_energy(rs, batch, tmp_path_factory):
    sink = SqliteSink(f"sqlite:///{tmp_path_factory.mktemp('h') / 'w.db'}")
    sink.ensure_schema()
    engine = make_engine(
        grid=["shelly/mains"],
        loads=["shelly/plug"],
        tariff={"import": {"price": 0.3}, "export": {"price": 0.05}},
    )
    run = Run(engine, sink=sink)
    for i, (ts, metrics, period, quality) in enumerate(rs):
        dev = "mains" if i % 3 else "plug"
        run.feed([reading(dev, ts, metrics, period_s=period, quality=quality)], batch=batch)
    for b in run.writes:
        rollup.decode(rollup.encode(b))  # a valid record
        for f in (
            "energy_import_wh",
            "energy_export_wh",
            "energy_import_t1_wh",
            "energy_import_t2_wh",
            "energy_export_t1_wh",
            "energy_export_t2_wh",
            "gas_m3",
            "grid_import_wh",
            "grid_export_wh",
        ):
            v = getattr(b, f)
            assert v is None or v >= 0, (f, b)
        assert 0.0 <= b.coverage <= 1.0 and b.readings >= 0
    far = [x for x in rs if x[0] > WALL_2030 * 1000 + engine.s.max_future_ms]
    assert engine.counters["future_refused"] == len(far)
    sink.close()


@settings(max_examples=200, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.one_of(
                st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(), st.text(max_size=30)
            ),
            lambda inner: st.one_of(
                st.lists(inner, max_size=4),
                st.dictionaries(st.sampled_from(["start", "price", "prices", "x"]), inner, max_size=4),
            ),
            max_leaves=20,
        ).map(lambda x: msgspec.json.encode(x)),
    )
)
def test_any_price_message_is_parsed_or_refused_with_a_reason(payload):
    try:
        entries = parse_price_message(payload, BRUSSELS)
    except TariffError as exc:
        assert str(exc).startswith("price list")
    else:
        assert all(isinstance(t, int) and isinstance(p, float) for t, p in entries)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=400))
def test_any_price_file_is_read_or_refused_naming_the_file_and_line(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "prices.csv"
    path.write_text(text, encoding="utf-8")
    try:
        read_price_csv(path, BRUSSELS)
    except TariffError as exc:
        assert str(exc).startswith(str(path))


def test_a_live_meter_that_falls_silent_sees_its_buckets_close_by_the_clock():
    now = [T0 / 1000 + 60]
    engine = make_engine(grace="1h", clock=lambda: now[0])
    run = Run(engine).feed(
        [reading("mains", T0 + k * MIN, {"energy_import_wh": 100.0 + k}) for k in range(2)]
    )
    hour = run.get("shelly", "mains", "1h", T0)
    assert hour.status == "open"
    now[0] += 3 * 3600  # no reading for three hours: the hour ended, and its grace too
    engine.tick()
    run.flush()
    assert run.get("shelly", "mains", "1h", T0).status == "closed"


def test_a_replay_of_old_data_goes_by_its_own_time_not_the_clock():
    engine = make_engine(grace="2h")  # the wall clock is in 2030, the data in 2024
    run = Run(engine).feed(
        [reading("mains", T0 + k * MIN, {"energy_import_wh": 100.0 + k}) for k in range(62)]
    )
    engine.tick()
    run.flush()
    assert run.get("shelly", "mains", "1h", T0).status == "complete"  # over, but not yet 2 h past its end
    assert run.get("shelly", "mains", "1h", T0 + 3_600_000).status == "open"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"[",
        b'{"prices": 5}',
        b'[{"start": "never", "price": 1}]',
        b'[{"start": 1, "price": 1e308, "x": 1}]',
        "\u00e9".encode("latin-1"),
    ],
)
def test_known_bad_price_messages_are_refused(bad):
    with pytest.raises(TariffError):
        parse_price_message(bad, BRUSSELS)
