"""Local-time buckets: DST days of 23 and 25 hours, the repeated hour told apart by its label, ISO weeks,
months and years, in the northern and southern hemisphere and in zones with a 30- or 45-minute offset.

Expected boundaries are written out by hand as UTC instants (from the zones' published rules), not derived
with the code under test.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from consumers.aggregate.calendar import SLOT_MS, Calendar, CalendarError


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


def hours_of(cal: Calendar, d: date) -> list[tuple[str, float]]:
    day = cal.day(d)
    return [(cal.label("1h", h), (cal.end("1h", h) - h) / 3.6e6) for h in day.hours]


def test_brussels_spring_forward_day_has_23_hours_and_no_2_oclock():
    cal = Calendar(ZoneInfo("Europe/Brussels"))
    day = cal.day(date(2024, 3, 31))
    assert day.start == utc("2024-03-30T23:00") and day.end == utc("2024-03-31T22:00")
    assert (day.end - day.start) / 3.6e6 == 23
    labels = [lbl for lbl, _ in hours_of(cal, date(2024, 3, 31))]
    assert len(labels) == 23
    assert labels[:4] == [
        "2024-03-31T00:00+01:00",
        "2024-03-31T01:00+01:00",
        "2024-03-31T03:00+02:00",
        "2024-03-31T04:00+02:00",
    ]
    assert all(length == 1.0 for _, length in hours_of(cal, date(2024, 3, 31)))


def test_brussels_autumn_back_day_has_25_hours_and_two_2_oclock_buckets():
    cal = Calendar(ZoneInfo("Europe/Brussels"))
    day = cal.day(date(2024, 10, 27))
    assert day.start == utc("2024-10-26T22:00") and day.end == utc("2024-10-27T23:00")
    hours = hours_of(cal, date(2024, 10, 27))
    assert len(hours) == 25 and all(length == 1.0 for _, length in hours)
    labels = [lbl for lbl, _ in hours]
    assert labels[2:4] == ["2024-10-27T02:00+02:00", "2024-10-27T02:00+01:00"]
    assert len(set(labels)) == 25
    # the two 02:00 buckets are consecutive real hours
    assert cal.day(date(2024, 10, 27)).hours[2] == utc("2024-10-27T00:00")
    assert cal.day(date(2024, 10, 27)).hours[3] == utc("2024-10-27T01:00")
    assert cal.label("1d", day.start) == "2024-10-27"


def test_slots_nest_in_hours_days_weeks_months_and_years():
    cal = Calendar(ZoneInfo("Europe/Brussels"))
    slot = utc("2024-10-27T01:15")  # 02:15 CET, the second pass
    assert cal.parents_of_slot(slot) == (
        utc("2024-10-27T01:00"),
        utc("2024-10-26T22:00"),
        utc("2024-10-20T22:00"),
        utc("2024-09-30T22:00"),
        utc("2023-12-31T23:00"),
    )
    assert cal.label("1w", utc("2024-10-20T22:00")) == "2024-W43"
    assert cal.label("1mo", utc("2024-09-30T22:00")) == "2024-10"
    assert cal.label("1y", utc("2023-12-31T23:00")) == "2024"
    assert cal.end("15m", slot) - slot == SLOT_MS


def test_iso_weeks_start_on_monday_and_cross_the_year():
    cal = Calendar(ZoneInfo("Europe/Brussels"))
    # 2024-12-30 is a Monday: week 2025-W01 starts there and runs into January
    w = cal.bucket_start("1w", utc("2025-01-01T12:00"))
    assert w == utc("2024-12-29T23:00")
    assert cal.label("1w", w) == "2025-W01"
    assert cal.end("1w", w) == utc("2025-01-05T23:00")
    weeks = cal.starts("1w", utc("2024-01-01T00:00"), utc("2024-12-31T00:00"))
    assert all(datetime.fromtimestamp(s / 1000, ZoneInfo("Europe/Brussels")).weekday() == 0 for s in weeks)
    assert len(weeks) == 52


def test_a_year_has_twelve_months_that_tile_it():
    cal = Calendar(ZoneInfo("Europe/Brussels"))
    y = cal.bucket_start("1y", utc("2024-06-01T00:00"))
    months = cal.children("1y", y)
    assert len(months) == 12
    assert months[0] == y and months[2] == utc("2024-02-29T23:00") and months[3] == utc("2024-03-31T22:00")
    ends = [cal.end("1mo", m) for m in months]
    assert ends[:-1] == months[1:] and ends[-1] == cal.end("1y", y) == utc("2024-12-31T23:00")
    assert [cal.label("1mo", m) for m in months][::11] == ["2024-01", "2024-12"]


def test_southern_hemisphere_sydney_autumn_back_in_april_and_spring_forward_in_october():
    cal = Calendar(ZoneInfo("Australia/Sydney"))
    april = cal.day(date(2024, 4, 7))  # 03:00 AEDT -> 02:00 AEST
    assert april.start == utc("2024-04-06T13:00") and april.end == utc("2024-04-07T14:00")
    assert len(april.hours) == 25
    assert [cal.label("1h", h) for h in april.hours[2:4]] == [
        "2024-04-07T02:00+11:00",
        "2024-04-07T02:00+10:00",
    ]
    october = cal.day(date(2024, 10, 6))  # 02:00 AEST -> 03:00 AEDT
    assert (october.end - october.start) / 3.6e6 == 23 and len(october.hours) == 23
    assert cal.label("1d", october.start) == "2024-10-06"


def test_half_hour_and_three_quarter_offsets_keep_slots_on_the_quarter():
    india = Calendar(ZoneInfo("Asia/Kolkata"))  # +05:30, no DST
    day = india.day(date(2024, 6, 1))
    assert day.start == utc("2024-05-31T18:30") and len(day.hours) == 24
    assert india.label("1h", day.hours[0]) == "2024-06-01T00:00+05:30"
    assert india.parents_of_slot(utc("2024-05-31T19:15"))[0] == utc("2024-05-31T18:30")
    nepal = Calendar(ZoneInfo("Asia/Kathmandu"))  # +05:45
    assert nepal.day(date(2024, 6, 1)).start == utc("2024-05-31T18:15")
    # Lord Howe Island moves its clock by 30 minutes: 02:00 -> 02:30 on 2024-10-06
    lord_howe = Calendar(ZoneInfo("Australia/Lord_Howe"))
    d = lord_howe.day(date(2024, 10, 6))
    assert (d.end - d.start) / 3.6e6 == 23.5
    assert sum(lord_howe.end("1h", h) - h for h in d.hours) == d.end - d.start


def test_an_offset_that_is_not_a_quarter_hour_is_refused():
    cal = Calendar(ZoneInfo("Europe/Amsterdam"))  # local mean time +00:19:32 until 1937
    with pytest.raises(CalendarError, match="15 minutes"):
        cal.day(date(1930, 6, 1))


def test_buckets_of_a_range_are_listed_in_order():
    cal = Calendar(ZoneInfo("Europe/Brussels"))
    lo, hi = utc("2024-10-26T22:00"), utc("2024-10-27T23:00")
    assert len(cal.starts("1h", lo, hi)) == 25 and len(cal.starts("15m", lo, hi)) == 100
    assert cal.starts("1d", lo, hi) == [lo]
