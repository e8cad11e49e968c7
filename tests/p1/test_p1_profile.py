"""Generated telegrams look like a real meter's: valid CRC, parse with dsmr_parser's full specification,
counters that only increase and agree with the power, sub-meters captured every 5 minutes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser

from producers.p1.decode import Decoder
from producers.p1.obis import VERSIONS
from producers.p1.profile import TelegramGenerator

TZ = ZoneInfo("Europe/Brussels")
STEP = 60  # simulated seconds between telegrams
SPECS = {"5": telegram_specifications.V5, "5B": telegram_specifications.BELGIUM_FLUVIUS}


def crc16_arc(data: bytes) -> int:
    """Written out independently of dsmr_parser: reflected poly 0xA001, init 0."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@pytest.mark.parametrize("profile", ["5", "5B"])
def test_generated_telegrams_carry_a_correct_crc_and_parse_with_the_real_specification(profile):
    gen = TelegramGenerator(profile, TZ, seed=4)
    t = datetime(2024, 7, 1, 10, 0, tzinfo=timezone.utc)
    raw = gen.telegram(t)
    body, _, tail = raw.rpartition(b"!")
    assert tail[:4] == f"{crc16_arc(body + b'!'):04X}".encode() and tail[4:] == b"\r\n"
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    full = TelegramParser(SPECS[profile]).parse(raw.decode("ascii"), throw_ex=True)
    assert full.P1_MESSAGE_TIMESTAMP.value == t


@pytest.mark.parametrize("profile", ["5", "5B"])
def test_a_simulated_day_has_increasing_counters_that_match_the_power(profile):
    gen = TelegramGenerator(profile, TZ, seed=2)
    dec = Decoder(VERSIONS[profile], TZ)
    start = datetime(2024, 6, 12, 22, 0, tzinfo=timezone.utc)
    prev = None
    energy_from_power = 0.0
    exported = False
    gas_times = set()
    for n in range(0, 24 * 3600, STEP):
        s = dec.decode(gen.telegram(start + timedelta(seconds=n)).decode("ascii"))
        m = s.metrics
        assert m["power_w"] == pytest.approx(m["power_l1_w"] + m["power_l2_w"] + m["power_l3_w"], abs=3)
        exported |= m["power_w"] < 0
        if prev is not None:
            for key in ("energy_import_t1_wh", "energy_import_t2_wh", "energy_export_t1_wh", "energy_export_t2_wh"):
                assert m[key] >= prev[key]
            energy_from_power += m["power_w"] * STEP / 3600
        gas_times.update(sub.ts for sub in s.subs if sub.key == "gas_m3")
        prev_first = prev is None
        prev = m
        if prev_first:
            first = m
    net = (prev["energy_import_wh"] - first["energy_import_wh"]) - (prev["energy_export_wh"] - first["energy_export_wh"])
    assert net == pytest.approx(energy_from_power, rel=0.02, abs=20)
    assert exported                                   # PV at noon pushes power below zero
    assert all(ts % 300_000 == 0 for ts in gas_times) and len(gas_times) >= 24 * 12 - 1
    assert prev["tariff"] in (1, 2)


def test_the_belgian_quarter_hour_demand_and_its_monthly_peak():
    gen = TelegramGenerator("5B", TZ, seed=5)
    dec = Decoder(VERSIONS["5B"], TZ)
    start = datetime(2024, 1, 10, 17, 0, tzinfo=timezone.utc)      # winter evening: no PV, cooking
    peaks = []
    for n in range(0, 2 * 3600, 30):
        m = dec.decode(gen.telegram(start + timedelta(seconds=n)).decode("ascii")).metrics
        assert m["demand_avg_w"] >= 0
        peaks.append(m["demand_peak_month_w"])
    assert peaks == sorted(peaks) and peaks[0] >= 2500


def test_our_crc_is_dsmr_parsers_crc():
    import random
    from pathlib import Path

    from producers.p1.decode import crc16

    rng = random.Random(3)
    samples = [p.read_bytes() for p in sorted((Path(__file__).with_name("telegrams")).glob("*.txt"))]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))) for _ in range(20)]
    for data in samples:
        assert crc16(data) == TelegramParser.crc16(data.decode("latin-1")) == crc16_arc(data)


def test_a_restarted_emulator_continues_the_counters_instead_of_starting_over():
    t1 = datetime(2025, 5, 3, 12, 0, tzinfo=timezone.utc)
    dec = Decoder(VERSIONS["5"], TZ)
    first = TelegramGenerator("5", TZ)
    before = [dec.decode(first.telegram(t1 + timedelta(seconds=n)).decode("ascii")).metrics for n in range(0, 600, 7)]
    again = TelegramGenerator("5", TZ)          # a new process later on: same registers for the same time
    after = dec.decode(again.telegram(t1 + timedelta(seconds=599)).decode("ascii")).metrics
    for key in ("energy_import_t1_wh", "energy_import_t2_wh", "energy_export_t1_wh", "energy_export_t2_wh"):
        assert before[-1][key] <= after[key] <= before[-1][key] + 20
