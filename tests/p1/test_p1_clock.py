"""The meter's local time with its S/W flag becomes the right UTC instant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from producers.p1.clock import meter_time, to_ms
from producers.p1.profile import dsmr_stamp

BRUSSELS = ZoneInfo("Europe/Brussels")


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=timezone.utc)


@pytest.mark.parametrize("stamp, expected", [
    ("170102192002W", utc(2017, 1, 2, 18, 20, 2)),     # winter: UTC+1
    ("200512135409S", utc(2020, 5, 12, 11, 54, 9)),    # summer: UTC+2
    # The repeated autumn hour (27 Oct 2024, 02:00-03:00 happens twice): the flag tells which one.
    ("241027023000S", utc(2024, 10, 27, 0, 30, 0)),
    ("241027023000W", utc(2024, 10, 27, 1, 30, 0)),
    ("241027015959S", utc(2024, 10, 26, 23, 59, 59)),
    ("241027030000W", utc(2024, 10, 27, 2, 0, 0)),
    # Spring: 31 Mar 2024 01:59:59 W is followed by 03:00:00 S, one second later.
    ("240331015959W", utc(2024, 3, 31, 0, 59, 59)),
    ("240331030000S", utc(2024, 3, 31, 1, 0, 0)),
    ("161107190000", utc(2016, 11, 7, 18, 0, 0)),      # DSMR 2.2: no flag, plain local time
])
def test_dsmr_timestamps_in_brussels(stamp, expected):
    assert meter_time(stamp, BRUSSELS) == expected


def test_a_meter_that_stays_on_winter_time_all_year_is_read_by_its_flag():
    # Swedish HAN meters send normal time (W) in summer too.
    assert meter_time("210717120000W", ZoneInfo("Europe/Stockholm")) == utc(2021, 7, 17, 11, 0, 0)


def test_irish_meter_time_despite_negative_dst_in_the_zone_database():
    dublin = ZoneInfo("Europe/Dublin")
    assert meter_time("240715120000S", dublin) == utc(2024, 7, 15, 11, 0, 0)
    assert meter_time("240115120000W", dublin) == utc(2024, 1, 15, 12, 0, 0)


@pytest.mark.parametrize("bad", ["", "1701021920", "170102192002X", "171302192002W", "632525252525W", None])
def test_invalid_stamps_are_none(bad):
    assert meter_time(bad, BRUSSELS) is None


def test_placeholder_stamp_of_an_empty_mbus_channel_is_no_time():
    assert to_ms(meter_time("700101010000W", BRUSSELS)) is None


def test_generated_stamps_read_back_to_the_same_instant_across_both_changes():
    t = utc(2024, 10, 26, 23, 0, 0)
    while t < utc(2024, 10, 27, 3, 0, 0):
        assert meter_time(dsmr_stamp(t, BRUSSELS), BRUSSELS) == t
        t += timedelta(seconds=599)
    t = utc(2024, 3, 30, 23, 0, 0)
    while t < utc(2024, 3, 31, 3, 0, 0):
        assert meter_time(dsmr_stamp(t, BRUSSELS), BRUSSELS) == t
        t += timedelta(seconds=599)
