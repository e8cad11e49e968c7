"""The site balance and every kind of price, with the expected money worked out by hand in each test."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bus.config import ConfigError, parse_config
from bus.tariff import parse_price_message
from tests.aggregate.conftest import MIN, Run, local_ms, make_engine, reading
from wattbus.plugins import resolve

FLAT = {"currency": "EUR", "import": {"price": 0.30}, "export": {"price": 0.05}}


def meter(device: str, ts: int, imp: float, exp: float = 0.0, source: str = "shelly", **extra) -> object:
    return reading(device, ts, {"energy_import_wh": imp, "energy_export_wh": exp, **extra}, source=source)


def steady(device: str, start: str, hours: float, watts: float, every_min: int = 15, source: str = "shelly"):
    """Counter readings of a constant ``watts`` import, every ``every_min`` minutes, from ``start``."""
    t0 = local_ms(start)
    n = int(hours * 60 / every_min)
    return [
        meter(device, t0 + k * every_min * MIN, 10_000 + watts * k * every_min / 60, source=source)
        for k in range(n + 1)
    ]


# -- the site balance ----------------------------------------------------------------------------------
def site_hour() -> list:
    """One hour in four quarters (Wh per quarter):
    solar 200, 500, 400, 0; grid import 100, 0, 50, 400; grid export 0, 300, 150, 0."""
    t = [local_ms("2024-06-03 10:00") + k * 15 * MIN for k in range(6)]
    mains_imp = [1000, 1100, 1100, 1150, 1550, 1550]
    mains_exp = [500, 500, 800, 950, 950, 950]
    solar = [2000, 2200, 2700, 3100, 3100, 3100]
    return [meter("mains", t[k], mains_imp[k], mains_exp[k]) for k in range(6)] + [
        meter("solar", t[k], solar[k]) for k in range(6)
    ]


def site_engine(**tariff):
    return make_engine(grid=["shelly/mains"], solar=["shelly/solar"], site="home", tariff={**FLAT, **tariff})


def test_site_balance_of_an_hour_with_export():
    run = Run(site_engine()).feed(site_hour())
    h = run.get("site", "home", "1h", local_ms("2024-06-03 10:00"))
    assert h.grid_import_wh == pytest.approx(550.0) and h.grid_export_wh == pytest.approx(450.0)
    assert h.solar_wh == pytest.approx(1100.0)
    assert h.home_wh == pytest.approx(1200.0)  # 550 + 1100 - 450
    assert h.self_consumption_wh == pytest.approx(200 + 200 + 250 + 0)  # solar - export, per quarter
    assert h.self_sufficiency_pct == pytest.approx(100 * (1200 - 550) / 1200)
    assert h.cost == pytest.approx(0.55 * 0.30) and h.revenue == pytest.approx(0.45 * 0.05)
    assert h.cost_without_solar == pytest.approx(1.2 * 0.30)
    assert h.solar_profit == pytest.approx(0.36 - (0.165 - 0.0225))
    assert h.currency == "EUR" and h.coverage == 1.0 and h.status == "complete"
    q2 = run.get("site", "home", "15m", local_ms("2024-06-03 10:15"))
    assert (q2.grid_import_wh, q2.grid_export_wh, q2.solar_wh, q2.home_wh) == (0.0, 300.0, 500.0, 200.0)
    assert q2.self_sufficiency_pct == 100.0
    mains = run.get("shelly", "mains", "1h", local_ms("2024-06-03 10:00"))
    assert mains.cost == pytest.approx(0.165) and mains.revenue == pytest.approx(0.0225)
    solar = run.get("shelly", "solar", "1h", local_ms("2024-06-03 10:00"))
    assert solar.cost is None and solar.energy_import_wh == pytest.approx(1100.0)


def test_the_daily_site_bucket_holds_the_seed_003_totals_with_the_fixed_charge():
    run = Run(site_engine(fixed_per_day=0.50)).feed(site_hour())
    d = run.get("site", "home", "1d", local_ms("2024-06-03 00:00"))
    # consumed (grid import), returned, direct consumption, solar, cost, profit: the seed's daily totals
    assert (d.grid_import_wh, d.grid_export_wh, d.self_consumption_wh, d.solar_wh) == pytest.approx(
        (550.0, 450.0, 650.0, 1100.0)
    )
    assert d.cost == pytest.approx(0.165 + 0.50) and d.cost_without_solar == pytest.approx(0.36 + 0.50)
    assert d.solar_profit == pytest.approx(0.2175)  # the fixed charge is paid either way
    assert run.get("site", "home", "1h", local_ms("2024-06-03 10:00")).cost == pytest.approx(0.165)


def test_the_site_does_not_depend_on_which_meter_reported_first():
    rs = site_hour()
    a = Run(site_engine()).feed(rs)
    solar_first = [r for r in rs if r.device == "solar"] + [r for r in rs if r.device == "mains"]
    b = Run(site_engine())
    for r in solar_first:
        b.feed([r])
    key = ("site", "home", "1d", local_ms("2024-06-03 00:00"))
    va, vb = (msgspec.structs.asdict(x.buckets[key]) for x in (a, b))
    va.pop("rev"), vb.pop("rev")
    assert va == vb


def test_a_missing_solar_meter_makes_the_balance_partial():
    rs = [r for r in site_hour() if r.device == "mains"]
    h = Run(site_engine()).feed(rs).get("site", "home", "1h", local_ms("2024-06-03 10:00"))
    assert h.coverage == 0.0 and h.status == "partial"
    assert h.grid_import_wh == pytest.approx(550.0)


# -- prices ------------------------------------------------------------------------------------------
def grid_cost(rs, tariff: dict, period: str, start: str) -> float:
    run = Run(make_engine(grid=["shelly/mains"], tariff=tariff)).feed(rs)
    return run.get("shelly", "mains", period, local_ms(start))


def test_flat_import_and_export_prices():
    rs = [
        meter("mains", local_ms("2024-06-03 10:00") + k * 15 * MIN, 1000 + 500 * k, 200 + 125 * k)
        for k in range(6)
    ]
    h = grid_cost(rs, FLAT, "1h", "2024-06-03 10:00")
    assert h.energy_import_wh == 2000.0 and h.cost == pytest.approx(2.0 * 0.30)
    assert h.energy_export_wh == 500.0 and h.revenue == pytest.approx(0.5 * 0.05)


def test_register_prices_follow_the_meters_t1_and_t2_registers():
    t0 = local_ms("2024-06-03 06:00")
    rs = []
    for k in range(
        9
    ):  # 06:00..08:00 in quarters: 1 kWh on register 2 before 07:00, 3 kWh on register 1 after
        t2 = 5000 + 250 * min(k, 4)
        t1 = 8000 + 750 * max(0, k - 4)
        rs.append(
            reading(
                "meter",
                t0 + k * 15 * MIN,
                {"energy_import_t1_wh": t1, "energy_import_t2_wh": t2, "energy_import_wh": t1 + t2},
                source="p1",
            )
        )
    tariff = {"import": {"t1": 0.32, "t2": 0.24}}
    run = Run(make_engine(grid=["p1/meter"], tariff=tariff)).feed(rs)
    d = run.get("p1", "meter", "1d", local_ms("2024-06-03 00:00"))
    assert d.energy_import_t1_wh == 3000.0 and d.energy_import_t2_wh == 1000.0
    assert d.cost == pytest.approx(3 * 0.32 + 1 * 0.24)


def test_register_prices_for_a_meter_without_registers_use_the_t2_windows():
    tariff = {
        "import": {
            "t1": 0.32,
            "t2": 0.24,
            "t2_windows": [{"days": "mon-fri", "from": "22:00", "to": "07:00"}, {"days": "weekend"}],
        }
    }
    rs = steady("mains", "2024-06-03 00:00", 24, 1000.0)  # Monday, 1 kWh every hour
    d = grid_cost(rs, tariff, "1d", "2024-06-03 00:00")
    # on a weekday, register 2 before 07:00 and from 22:00: 9 hours
    assert d.cost == pytest.approx(9 * 0.24 + 15 * 0.32)


def test_time_of_use_windows_by_weekday_and_local_time():
    tariff = {
        "import": {
            "price": 0.25,
            "windows": [{"days": "mon-fri", "from": "07:00", "to": "22:00", "price": 0.40}],
        }
    }
    monday = steady("mains", "2024-06-03 00:00", 24, 400.0)  # 0.1 kWh per quarter hour
    d = grid_cost(monday, tariff, "1d", "2024-06-03 00:00")
    assert d.cost == pytest.approx(60 * 0.1 * 0.40 + 36 * 0.1 * 0.25)  # 3.30
    saturday = steady("mains", "2024-06-08 00:00", 24, 400.0)
    assert grid_cost(saturday, tariff, "1d", "2024-06-08 00:00").cost == pytest.approx(96 * 0.1 * 0.25)


def test_a_night_window_wraps_midnight():
    tariff = {
        "import": {"price": 0.30, "windows": [{"days": "all", "from": "22:00", "to": "06:00", "price": 0.10}]}
    }
    rs = steady("mains", "2024-06-03 00:00", 24, 1000.0)
    assert grid_cost(rs, tariff, "1d", "2024-06-03 00:00").cost == pytest.approx(8 * 0.10 + 16 * 0.30)


def hourly_csv(path: Path, day: str, hours: int, price=lambda h: 0.10 + h / 100, offset="+02:00") -> Path:
    lines = ["start;price"]
    for h in range(hours):
        lines.append(f"{day}T{h:02d}:00:00{offset};{str(round(price(h), 6)).replace('.', ',')}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dynamic_hourly_prices_from_a_csv_file(tmp_path):
    csv = hourly_csv(tmp_path / "prices.csv", "2024-06-03", 24)
    rs = steady("mains", "2024-06-03 00:00", 24, 1000.0)
    d = grid_cost(rs, {"import": {"dynamic_csv": str(csv)}}, "1d", "2024-06-03 00:00")
    assert d.cost == pytest.approx(sum(0.10 + h / 100 for h in range(24)))  # 5.16


def test_dynamic_prices_per_mwh_with_the_suppliers_markup(tmp_path):
    csv = hourly_csv(tmp_path / "belpex.csv", "2024-06-03", 24, price=lambda h: 100 + 10 * h)
    rs = steady("mains", "2024-06-03 00:00", 24, 1000.0)
    tariff = {"import": {"dynamic_csv": str(csv), "dynamic_unit": "MWh", "dynamic_markup": 0.02}}
    assert grid_cost(rs, tariff, "1d", "2024-06-03 00:00").cost == pytest.approx(5.16 + 24 * 0.02)


def test_dynamic_quarter_hour_prices_and_a_flat_fallback_where_the_list_stops(tmp_path):
    csv = tmp_path / "q.csv"
    t0 = local_ms("2024-06-03 00:00")
    csv.write_text("\n".join(f"{t0 + q * 15 * MIN},{0.2 if q % 2 else 0.1}" for q in range(48)))  # 12 hours
    rs = steady("mains", "2024-06-03 00:00", 24, 1000.0)
    tariff = {"import": {"dynamic_csv": str(csv), "price": 0.30}}
    d = grid_cost(rs, tariff, "1d", "2024-06-03 00:00")
    assert d.cost == pytest.approx(24 * 0.25 * 0.1 + 24 * 0.25 * 0.2 + 12 * 0.30)  # 5.4


def test_dynamic_prices_published_later_reprice_the_buckets_that_can_still_change():
    engine = make_engine(grid=["shelly/mains"], tariff={"import": {"dynamic_topic": "prices/import"}})
    run = Run(engine).feed(steady("mains", "2024-06-03 00:00", 24, 1000.0))
    day = local_ms("2024-06-03 00:00")
    assert run.get("shelly", "mains", "1d", day).cost is None  # no price known yet
    payload = msgspec.json.encode(
        {"prices": [{"start": f"2024-06-03T{h:02d}:00+02:00", "price": 0.2} for h in range(24)]}
    )
    entries = parse_price_message(payload, engine.cal.tz)
    span = engine.tariff.import_.dynamic.merge(entries)
    engine.reprice(*span)
    run.flush()
    assert run.get("shelly", "mains", "1d", day).cost == pytest.approx(24 * 0.2)


def test_export_prices_of_the_dynamic_kind(tmp_path):
    csv = hourly_csv(tmp_path / "export.csv", "2024-06-03", 24, price=lambda h: 0.01 * (h % 3))
    t0 = local_ms("2024-06-03 00:00")
    rs = [meter("mains", t0 + k * 15 * MIN, 1000, 500 + 250 * k) for k in range(97)]  # 1 kWh out per hour
    d = grid_cost(
        rs, {"import": {"price": 0.3}, "export": {"dynamic_csv": str(csv)}}, "1d", "2024-06-03 00:00"
    )
    assert d.revenue == pytest.approx(sum(0.01 * (h % 3) for h in range(24)))  # 0.24
    assert d.cost == 0.0


def test_capacity_charge_on_the_months_highest_quarter_hour():
    t0 = local_ms("2024-06-03 10:00")
    imp = [0, 250, 500, 2000, 2250]  # quarters: 1 kW, 1 kW, 6 kW (1.5 kWh in 15 min), 1 kW
    rs = [meter("mains", t0 + k * 15 * MIN, 10_000 + imp[k]) for k in range(5)]
    tariff = {"import": {"price": 0.0}, "capacity_per_kw": 4.0, "capacity_min_kw": 2.5}
    run = Run(make_engine(grid=["shelly/mains"], tariff=tariff)).feed(rs)
    month = run.get("site", "home", "1mo", local_ms("2024-06-01 00:00"))
    assert month.demand_peak_w == pytest.approx(6000.0)
    assert month.cost == pytest.approx(4.0 * 6.0)
    year = run.get("site", "home", "1y", local_ms("2024-01-01 00:00"))
    assert year.cost == pytest.approx(24.0)
    low = [meter("mains", t0 + k * 15 * MIN, 10_000 + 250 * k) for k in range(5)]
    run2 = Run(make_engine(grid=["shelly/mains"], tariff=tariff)).feed(low)
    assert run2.get("site", "home", "1mo", local_ms("2024-06-01 00:00")).cost == pytest.approx(4.0 * 2.5)


def test_a_tariff_config_error_names_the_file_the_key_and_what_is_expected(tmp_path):
    text = (
        '[tariff]\ncurrency = "EUR"\n[tariff.import]\nprice = 0.3\n'
        '[[tariff.import.windows]]\ndays = "mon-fri"\nfrom = "07:10"\nto = "22:00"\nprice = 0.4\n'
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, tmp_path / "wattbus.toml", resolve)
    msg = str(err.value)
    assert "wattbus.toml:" in msg and "tariff.import.windows" in msg and "quarter hour" in msg
    with pytest.raises(ConfigError, match=r"tariff\.import\.t2: give both"):
        parse_config("[tariff.import]\nt1 = 0.3\n", tmp_path / "wattbus.toml", resolve)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config("[tariff]\nfixed_per_dag = 1\n", tmp_path / "wattbus.toml", resolve)
    ok = parse_config(
        "[tariff]\nfixed_per_day = 0.5\n[tariff.import]\nprice = 0.3\n", tmp_path / "w.toml", resolve
    )
    assert ok.tariff is not None and ok.tariff.import_.price == 0.3


def test_after_a_restart_the_site_uses_the_stored_slots_of_a_meter_that_has_not_reported_yet(tmp_path):
    from bus.sinks.sqlite import SqliteSink

    rs = site_hour()
    db = tmp_path / "w.db"
    sink = SqliteSink(f"sqlite:///{db}")
    sink.ensure_schema()
    sink.write(rs)  # the store
    t = local_ms("2024-06-03 10:00")
    before = [r for r in rs if r.device == "solar" or r.ts < t + 15 * MIN]  # solar all, grid until 10:15
    after = [r for r in rs if r.device == "mains" and r.ts >= t + 15 * MIN]
    first = Run(make_engine(grid=["shelly/mains"], solar=["shelly/solar"], tariff=FLAT, rollups=sink,
                            readings=sink), sink=sink)
    first.feed(before)
    second = Run(make_engine(grid=["shelly/mains"], solar=["shelly/solar"], tariff=FLAT, rollups=sink,
                             readings=sink), sink=sink)
    second.feed(after)  # only the grid meter reports after the restart
    h = sink.read_buckets("site", "home", "1h", t, t + 1)[0]
    want = Run(site_engine()).feed(rs).get("site", "home", "1h", t)
    assert (h.solar_wh, h.home_wh, h.cost_without_solar) == pytest.approx(
        (want.solar_wh, want.home_wh, want.cost_without_solar))
    assert h.solar_wh == pytest.approx(1100.0)
