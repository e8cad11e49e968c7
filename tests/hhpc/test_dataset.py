"""Reading the household-power-consumption text format: the three dialects, bad rows, DST, the year table."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from producers.hhpc import dataset
from producers.hhpc.dataset import COLUMNS, HEADER, BadRow, iter_rows
from producers.hhpc.localtime import NonexistentLocalTime, iter_epochs, local_to_epoch_ms
from producers.hhpc.yeartable import load_year
from producers.hhpc.generate import generate_year
from tests.conftest import SEED_SAMPLE

BRUSSELS = ZoneInfo("Europe/Brussels")

# (power_w, reactive_power_var, voltage_v, current_a, sub1, sub2, sub3) of the seed's ten rows.
SEED_VALUES = [
    (2278.0, 50.0, 236.74, 9.6, 0.0, 0.0, 17.0),
    (2466.0, 92.0, 236.80, 10.4, 0.0, 0.0, 17.0),
    (2464.0, 92.0, 236.95, 10.4, 0.0, 0.0, 17.0),
    (2470.0, 94.0, 237.28, 10.4, 0.0, 0.0, 17.0),
    (2482.0, 96.0, 237.90, 10.4, 0.0, 0.0, 18.0),
    (2484.0, 96.0, 237.82, 10.4, 0.0, 0.0, 17.0),
    (2484.0, 98.0, 237.96, 10.4, 0.0, 0.0, 17.0),
    (2490.0, 98.0, 238.48, 10.4, 0.0, 0.0, 18.0),
    (2492.0, 98.0, 238.52, 10.4, 0.0, 0.0, 17.0),
    (2482.0, 96.0, 238.12, 10.4, 0.0, 0.0, 18.0),
]
KEYS = ("power_w", "reactive_power_var", "voltage_v", "current_a",
        "sub1_energy_wh", "sub2_energy_wh", "sub3_energy_wh")

# The original UCI file: d/m/yyyy not zero-padded, '?' for missing, the last column empty instead.
UCI = """Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3
16/12/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000
28/4/2007;00:20:00;0.254;0.000;243.470;1.000;0.000;0.000;0.000
28/4/2007;00:21:00;?;?;?;?;?;?;
1/1/2007;00:00:00;2.580;0.136;241.970;10.600;0.000;0.000;0.000
"""


def read(text: str, **kw) -> tuple[list[dataset.Row], list[BadRow]]:
    bad: list[BadRow] = []
    rows = list(iter_rows(io.StringIO(text), on_bad=bad.append, **kw))
    return rows, bad


def test_seed_sample_reads_as_the_ten_rows_in_metric_units():
    bad: list[BadRow] = []
    rows = list(iter_rows(SEED_SAMPLE, on_bad=bad.append))
    assert bad == []
    assert [r.line for r in rows] == list(range(2, 12))
    assert [r.local for r in rows] == [datetime(2024, 12, 14, 17, 58) + timedelta(minutes=i) for i in range(10)]
    for row, expected in zip(rows, SEED_VALUES):
        assert row.metrics == {**dict(zip(KEYS, expected)), "energy_wh": expected[0] / 60}
    first = rows[0].metrics
    assert first["power_w"] == 2278.0 and first["reactive_power_var"] == 50.0
    assert first["voltage_v"] == 236.74 and first["current_a"] == 9.6 and first["sub3_energy_wh"] == 17.0
    assert first["energy_wh"] == pytest.approx(37.9667, abs=1e-4)


def test_columns_table_maps_every_dataset_column_to_a_metric_and_scale():
    assert {name: (c.metric, c.scale) for name, c in COLUMNS.items()} == {
        "Global_active_power": ("power_w", 1000.0),
        "Global_reactive_power": ("reactive_power_var", 1000.0),
        "Voltage": ("voltage_v", 1.0),
        "Global_intensity": ("current_a", 1.0),
        "Sub_metering_1": ("sub1_energy_wh", 1.0),
        "Sub_metering_2": ("sub2_energy_wh", 1.0),
        "Sub_metering_3": ("sub3_energy_wh", 1.0),
    }
    assert HEADER == SEED_SAMPLE.read_text().splitlines()[0]


def test_kilowatts_become_whole_watts_without_float_noise():
    # 0.092 * 1000 is 92.00000000000001 in floating point; readings must say 92.0.
    values = [f"{w / 1000:.3f}" for w in range(0, 12000, 2)]
    text = HEADER + "\n" + "".join(
        f"01/01/2024;{i // 60 % 24:02d}:{i % 60:02d}:00;{v};{v};230.000;1.000;0.000;0.000;0.000\n"
        for i, v in enumerate(values)
    )
    rows, bad = read(text)
    assert bad == []
    assert [r.metrics["power_w"] for r in rows] == [float(w) for w in range(0, 12000, 2)]
    assert [r.metrics["reactive_power_var"] for r in rows] == [float(w) for w in range(0, 12000, 2)]


def test_uci_dialect_question_marks_are_missing_and_unpadded_dates_read():
    rows, bad = read(UCI)
    assert bad == []
    assert [r.local for r in rows] == [datetime(2006, 12, 16, 17, 24), datetime(2007, 4, 28, 0, 20),
                                       datetime(2007, 4, 28, 0, 21), datetime(2007, 1, 1, 0, 0)]
    assert rows[0].metrics["power_w"] == 4216.0 and rows[0].metrics["sub2_energy_wh"] == 1.0
    assert rows[2].metrics is None
    assert rows[3].metrics["voltage_v"] == 241.97


def test_empty_fields_mark_a_missing_row_as_in_the_seeds_2024_file():
    text = HEADER + "\n" + "\n".join([
        "14/12/2024;17:58:00;2.278;0.050;236.740;9.600;0.000;0.000;17.000",
        "14/12/2024;17:59:00;;;;;;;",
        "14/12/2024;18:00:00;2.464;0.092;236.950;10.400;0.000;0.000;17.000",
    ]) + "\n"
    rows, bad = read(text)
    assert bad == []
    assert [r.metrics is None for r in rows] == [False, True, False]
    assert rows[1].local == datetime(2024, 12, 14, 17, 59) and rows[1].line == 3


def test_a_row_with_some_values_missing_keeps_the_ones_it_has():
    text = HEADER + "\n14/12/2024;17:58:00;;0.050;236.740;;0.000;?;17.000\n"
    (row,), bad = read(text)
    assert bad == []
    assert row.metrics == {"reactive_power_var": 50.0, "voltage_v": 236.74, "sub1_energy_wh": 0.0,
                           "sub3_energy_wh": 17.0}  # no power, so no energy_wh either


def test_bad_rows_are_reported_with_their_line_numbers_and_the_rest_is_read():
    lines = [
        HEADER,                                                                   # 1
        "14/12/2024;17:58:00;2.278;0.050;236.740;9.600;0.000;0.000;17.000",       # 2
        "14/12/2024;17:59:00;2.466;0.092;236.800;10.400;0.000;0.000",             # 3 field missing
        "14/12/2024;18:00:00;2.464;0.092;abc;10.400;0.000;0.000;17.000",          # 4 non-numeric
        "31/02/2024;18:01:00;2.470;0.094;237.280;10.400;0.000;0.000;17.000",      # 5 no such date
        "14/12/2024;25:02:00;2.482;0.096;237.900;10.400;0.000;0.000;18.000",      # 6 no such time
        "",                                                                       # 7 blank: skipped quietly
        "14-12-2024;18:03:00;2.484;0.096;237.820;10.400;0.000;0.000;17.000",      # 8 wrong date format
        "14/12/2024;18:04:00;inf;0.098;237.960;10.400;0.000;0.000;17.000",        # 9 infinite
        "14/12/2024;18:05:00;2.490;0.098;238.480;10.400;0.000;0.000;18.000",      # 10
        "\x00\xff garbage",                                                       # 11
        "14/12/2024;18:07:00;2.482;0.096;238.120;10.400;0.000;0.000;18.000",      # 12
    ]
    rows, bad = read("\n".join(lines) + "\n")
    assert [b.line for b in bad] == [3, 4, 5, 6, 8, 9, 11]
    assert "expected 9 fields, found 8" in bad[0].reason
    assert "Voltage" in bad[1].reason and "abc" in bad[1].reason
    assert "date" in bad[2].reason and "time" in bad[3].reason
    assert [r.line for r in rows] == [2, 10, 12]
    assert rows[1].metrics["voltage_v"] == 238.48


def test_a_bad_row_deep_in_a_large_file_costs_only_that_row(tmp_path):
    path = tmp_path / "year.txt"
    generate_year(2024, path, seed=3, start=date(2024, 1, 1), end=date(2024, 1, 15))
    lines = path.read_text().splitlines()
    lines[12345] = lines[12345].replace(";", ";;", 1)  # line 12346: one field too many
    lines[15000] = "01/01/2024;not a time;1;1;1;1;1;1;1"
    path.write_text("\n".join(lines) + "\n")
    bad: list[BadRow] = []
    rows = list(iter_rows(path, on_bad=bad.append))
    assert [b.line for b in bad] == [12346, 15001]
    assert len(rows) == 14 * 1440 - 2
    assert rows[12343].line == 12345 and rows[12344].line == 12347


def test_the_fast_and_the_line_by_line_reader_agree(tmp_path, monkeypatch):
    path = tmp_path / "weeks.txt"
    generate_year(2024, path, seed=5, start=date(2024, 3, 25), end=date(2024, 4, 8))
    text = path.read_text() + "".join(UCI.splitlines(True)[1:])  # the UCI dialect's rows too
    text += "01/05/2024;00:00:00;0.0005;1.2345678;230.1234;-1.5;0;1;2.5\n"  # odd but valid numbers
    fast, bad_fast = read(text)
    monkeypatch.setattr(dataset.Scanner, "_fast", lambda self, block, first: None)
    slow, bad_slow = read(text)
    assert bad_fast == bad_slow == []
    assert len(fast) == 14 * 1440 + 5
    assert fast == slow
    assert fast[-1].metrics["power_w"] == 0.5 and fast[-1].metrics["reactive_power_var"] == 1234.568


def test_files_binary_streams_and_crlf_line_ends_all_read(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(SEED_SAMPLE.read_bytes().replace(b"\n", b"\r\n"))
    from_path = list(iter_rows(path))
    from_str = list(iter_rows(str(SEED_SAMPLE)))
    from_bytes = list(iter_rows(io.BytesIO(SEED_SAMPLE.read_bytes())))
    assert len(from_path) == 10
    assert from_path == from_str == from_bytes


def test_a_header_with_reordered_columns_is_followed_and_a_headerless_file_is_read():
    text = ("Time;Date;Voltage;Global_active_power;Global_reactive_power;Global_intensity;"
            "Sub_metering_3;Sub_metering_2;Sub_metering_1\n"
            "17:58:00;14/12/2024;236.740;2.278;0.050;9.600;17.000;0.000;1.000\n")
    (row,), bad = read(text)
    assert bad == []
    assert row.local == datetime(2024, 12, 14, 17, 58)
    assert row.metrics["power_w"] == 2278.0 and row.metrics["voltage_v"] == 236.74
    assert row.metrics["sub1_energy_wh"] == 1.0 and row.metrics["sub3_energy_wh"] == 17.0
    headerless = "".join(SEED_SAMPLE.read_text().splitlines(True)[1:])
    rows, bad = read(headerless)
    assert bad == [] and len(rows) == 10 and rows[0].line == 1


# -------------------------------------------------------------------------------------------- DST


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def test_ordinary_times_map_to_their_instant():
    assert local_to_epoch_ms(datetime(2024, 12, 14, 17, 58), BRUSSELS) == utc_ms(2024, 12, 14, 16, 58)
    assert local_to_epoch_ms(datetime(2024, 7, 1, 12, 0), BRUSSELS) == utc_ms(2024, 7, 1, 10, 0)


def test_spring_forward_minutes_do_not_exist():
    assert local_to_epoch_ms(datetime(2024, 3, 31, 1, 59), BRUSSELS) == utc_ms(2024, 3, 31, 0, 59)
    for minute in (0, 30, 59):
        with pytest.raises(NonexistentLocalTime):
            local_to_epoch_ms(datetime(2024, 3, 31, 2, minute), BRUSSELS)
    assert local_to_epoch_ms(datetime(2024, 3, 31, 3, 0), BRUSSELS) == utc_ms(2024, 3, 31, 1, 0)


def test_fall_back_hour_maps_by_fold_to_two_distinct_ordered_instants():
    first = local_to_epoch_ms(datetime(2024, 10, 27, 2, 30), BRUSSELS)
    second = local_to_epoch_ms(datetime(2024, 10, 27, 2, 30, fold=1), BRUSSELS)
    assert first == utc_ms(2024, 10, 27, 0, 30)
    assert second == utc_ms(2024, 10, 27, 1, 30)
    assert local_to_epoch_ms(datetime(2024, 10, 27, 3, 0), BRUSSELS) == utc_ms(2024, 10, 27, 2, 0)


@pytest.mark.parametrize("zone, days", [
    ("Europe/Brussels", {date(2024, 3, 31): 60, date(2024, 10, 27): 0, date(2024, 6, 1): 0}),
    ("Australia/Lord_Howe", {date(2024, 4, 7): 0, date(2024, 10, 6): 30}),  # half-hour shifts
    ("America/New_York", {date(2024, 3, 10): 60, date(2024, 11, 3): 0}),
])
def test_every_minute_around_a_transition_round_trips_through_the_clock(zone, days):
    """The oracle is the clock itself: each instant's wall time (fold included) must map back to it."""
    tz = ZoneInfo(zone)
    for day, gap_minutes in days.items():
        start = int(datetime.combine(day - timedelta(days=1), datetime.min.time(), tz).timestamp())
        instants = range(start, start + 3 * 86400, 60)
        walls = {}
        for ts in instants:
            wall = datetime.fromtimestamp(ts, tz).replace(tzinfo=None)  # fold set on the second pass
            walls[(wall, wall.fold)] = ts
            assert local_to_epoch_ms(wall, tz) == ts * 1000
        # Wall-clock minutes the clock never showed are the gap: they must raise, all others must not.
        first = min(w for w, _ in walls)
        last = max(w for w, _ in walls)
        gap = 0
        for k in range(int((last - first).total_seconds()) // 60):
            wall = first + timedelta(minutes=k)
            if (wall, 0) not in walls and (wall, 1) not in walls:
                gap += 1
                with pytest.raises(NonexistentLocalTime):
                    local_to_epoch_ms(wall, tz)
        assert gap == gap_minutes


def test_a_log_that_lives_through_the_fall_back_hour_twice_gets_increasing_instants():
    # A logger on local wall-clock time writes 01:58 .. 02:59, then 02:00 .. 03:01 again.
    walk = [datetime(2024, 10, 27, 1, 58) + timedelta(minutes=i) for i in range(62)]
    walk += [datetime(2024, 10, 27, 2, 0) + timedelta(minutes=i) for i in range(62)]
    text = HEADER + "\n" + "".join(f"{t:%d/%m/%Y;%H:%M:%S};1.000;0.100;230.000;4.400;0.000;0.000;0.000\n"
                                   for t in walk)
    rows, _ = read(text)
    assert [r.local.fold for r in rows] == [0] * 62 + [1] * 60 + [0] * 2
    stamps = [ts for ts, _ in iter_epochs(rows, BRUSSELS)]
    assert len(stamps) == len(walk)
    assert all(b - a == 60_000 for a, b in zip(stamps, stamps[1:]))


def test_a_generated_year_skips_and_counts_the_spring_forward_hour(tmp_path):
    path = tmp_path / "dst.txt"
    generate_year(2024, path, seed=1, start=date(2024, 3, 30), end=date(2024, 4, 1))
    gaps: list[dataset.Row] = []
    stamps = [ts for ts, _ in iter_epochs(iter_rows(path), BRUSSELS, on_gap=gaps.append)]
    assert [g.local for g in gaps] == [datetime(2024, 3, 31, 2, 0) + timedelta(minutes=i) for i in range(60)]
    assert len(stamps) == 2 * 1440 - 60
    assert all(b - a == 60_000 for a, b in zip(stamps, stamps[1:]))  # 01:59 -> 03:00 is one minute


# ------------------------------------------------------------------------------------- year table


@pytest.fixture(scope="module")
def year_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hhpc") / "2024-part.txt"
    generate_year(2024, path, seed=7, start=date(2024, 2, 27), end=date(2024, 3, 3))
    return path


def test_year_table_finds_the_row_for_a_day_and_minute(year_file):
    table = load_year(year_file)
    assert table.year == 2024 and table.days == 366
    rows = {r.local: r for r in iter_rows(year_file)}
    assert len(table) == len(rows) == 5 * 1440
    for when in (datetime(2024, 2, 27, 0, 0), datetime(2024, 2, 29, 12, 34), datetime(2024, 3, 2, 23, 59)):
        doy = when.timetuple().tm_yday
        got = table.get(doy, when.hour * 60 + when.minute)
        assert got == rows[when]
    assert table.get(1, 0) is None  # the file has no January


def test_a_table_of_one_day_holds_that_day_as_the_year_does_and_nothing_else(year_file):
    """Live mode keeps today only (46 kB instead of the year's 17 MB) and reads the next day at midnight."""
    year = load_year(year_file)
    day = load_year(year_file, days=(60, 60))  # 29 February 2024
    assert (day.year, day.first_day, day.last_day, len(day)) == (2024, 60, 60, 1440)
    assert day.values.nbytes < year.values.nbytes / 300
    for minute in (0, 754, 1439):
        assert day.get(60, minute) == year.get(60, minute)
    assert day.holds(datetime(2028, 2, 29, 10, 0)) and not day.holds(datetime(2028, 3, 1, 0, 0))
    with pytest.raises(IndexError, match="days 60-60"):
        day.get(61, 0)
    assert len(load_year(year_file, days=(1, 2))) == 0  # days the file does not have: an empty table


def test_year_table_matches_the_calendar_date_in_any_year(year_file):
    table = load_year(year_file)
    # 1 March 2025 (a common year) reads 1 March 2024, not day 60 (which was 29 February in 2024).
    assert table.for_local(datetime(2025, 3, 1, 8, 15)).local == datetime(2024, 3, 1, 8, 15)
    assert table.for_local(datetime(2025, 2, 28, 23, 59)).local == datetime(2024, 2, 28, 23, 59)


def test_a_common_dataset_year_serves_29_february_from_28_february(tmp_path):
    path = tmp_path / "2023.txt"
    generate_year(2023, path, seed=2, start=date(2023, 2, 27), end=date(2023, 3, 2))
    table = load_year(path)
    assert table.year == 2023 and table.days == 365
    leap_day = table.for_local(datetime(2028, 2, 29, 10, 0))
    assert leap_day.local == datetime(2023, 2, 28, 10, 0)
    assert leap_day == table.for_local(datetime(2027, 2, 28, 10, 0))


def test_year_table_keeps_missing_rows_apart_from_absent_ones():
    text = HEADER + "\n" + "\n".join([
        "14/12/2024;17:58:00;2.278;0.050;236.740;9.600;0.000;0.000;17.000",
        "14/12/2024;17:59:00;;;;;;;",
        "14/12/2024;18:00:00;;0.092;236.950;;0.000;0.000;17.000",
    ]) + "\n"
    table = load_year(io.StringIO(text))
    doy = date(2024, 12, 14).timetuple().tm_yday
    assert table.get(doy, 17 * 60 + 58).metrics == {**dict(zip(KEYS, SEED_VALUES[0])), "energy_wh": 2278.0 / 60}
    assert table.get(doy, 17 * 60 + 59).metrics is None
    assert table.get(doy, 18 * 60).metrics == {"reactive_power_var": 92.0, "voltage_v": 236.95,
                                               "sub1_energy_wh": 0.0, "sub2_energy_wh": 0.0,
                                               "sub3_energy_wh": 17.0}
    assert table.get(doy, 18 * 60 + 1) is None
    assert table.stats.rows == 3 and table.stats.missing == 1


def test_year_table_takes_the_best_covered_year_of_a_multi_year_file():
    bad: list[BadRow] = []
    table = load_year(io.StringIO(UCI + "oops\n"), on_bad=bad.append)
    assert table.year == 2007
    assert table.stats.rows == 3 and table.stats.other_years == 1 and table.stats.bad == 1
    assert [b.line for b in bad] == [6]
    assert table.for_local(datetime(2030, 4, 28, 0, 21)).metrics is None
    assert table.for_local(datetime(2030, 1, 1, 0, 0)).metrics["power_w"] == 2580.0
    assert load_year(io.StringIO(UCI), year=2006).stats.rows == 1


def test_year_table_keeps_the_last_of_duplicate_minutes():
    text = HEADER + "\n" + "\n".join([
        "27/10/2024;02:30:00;1.000;0.100;230.000;4.400;0.000;0.000;0.000",
        "27/10/2024;02:30:00;2.000;0.100;230.000;8.800;0.000;0.000;0.000",
    ]) + "\n"
    table = load_year(io.StringIO(text))
    assert table.stats.duplicates == 1
    assert table.for_local(datetime(2024, 10, 27, 2, 30)).metrics["power_w"] == 2000.0


def test_live_mode_reads_the_next_day_before_its_first_tick(year_file, monkeypatch):
    """Across local midnight the live loop publishes each minute's row, the new day's read in between.

    The clock is the only stand-in: the loop's ``time.time`` and ``ctx.wait`` run on a fake clock that
    starts 20 s before midnight (a real midnight cannot be waited for in a test)."""
    import logging
    from types import SimpleNamespace

    import msgspec

    from producers.hhpc import Config, player

    tz = ZoneInfo("Europe/Brussels")
    clock = [datetime(2026, 2, 28, 23, 59, 40, tzinfo=tz).timestamp()]  # 28 Feb -> 1 Mar in a common year
    published: list[tuple[int, dict]] = []
    lines: list[str] = []

    def wait(seconds: float) -> bool:
        clock[0] += max(0.0, seconds)
        return len(published) >= 8

    log = logging.getLogger("test-live")
    monkeypatch.setattr(log, "info", lambda fmt, *a: lines.append(fmt % a))
    ctx = SimpleNamespace(tz=tz, log=log, wait=wait, set_device_status=lambda *a: None,
                          counters=SimpleNamespace(inc=lambda *a: None),
                          publish_reading=lambda device, m, ts, **kw: published.append((ts, m)))
    monkeypatch.setattr(player.time, "time", lambda: clock[0])
    cfg = msgspec.convert({"type": "hhpc", "dataset": str(year_file), "mode": "live", "interval": 10}, Config)
    player._live(ctx, cfg, "house", year_file)

    year = load_year(year_file)
    for ts, metrics in published:
        local = datetime.fromtimestamp(ts / 1000, tz).replace(tzinfo=None)
        assert metrics == year.for_local(local).metrics, local
    days = {datetime.fromtimestamp(ts / 1000, tz).day for ts, _ in published}
    assert days == {28, 1} and len(published) == 8
    assert any("day 61 of 2024 read" in line for line in lines), lines  # 1 March of the leap dataset year
