"""Corrupt input (bad CRC, noise in a line, truncation, line noise between telegrams, a broken value in a
CRC-less telegram) is reported with its reason and skipped; the next good telegram is still read."""

from __future__ import annotations

from p1_helpers import fixture_bytes, read_via

from producers.p1.emulator import bad_crc, corrupt_body, noise, truncated
from producers.p1.reader import Decoded, Framer, Rejected


def kinds(results: list) -> list[str]:
    return ["telegram" if isinstance(r, Decoded) else r.reason for r in results]


def test_corrupt_telegrams_are_rejected_with_their_reason_and_the_next_one_is_read(transport):
    good = fixture_bytes("nl_dsmr50_iskra_mt382_v5.txt")
    frames = [good, noise(40), bad_crc(good), corrupt_body(good), truncated(good, 0.5), good,
              truncated(good, 0.97), good]
    got = read_via(transport, frames, "5", want=8, chunk=64)
    assert kinds(got) == ["telegram", "noise", "bad_crc", "bad_crc", "truncated", "telegram",
                          "truncated", "telegram"]
    assert all(r.sample.metrics["energy_import_t1_wh"] == 4426 for r in got if isinstance(r, Decoded))
    rejected = [r for r in got if isinstance(r, Rejected)]
    assert rejected[1].raw == bad_crc(good)[:len(rejected[1].raw)]   # the dead letter carries the telegram
    assert "CRC" in rejected[1].detail


def test_a_broken_value_in_a_telegram_without_crc_is_rejected(transport):
    good = fixture_bytes("nl_dsmr22_iskra_v2_2.txt")
    broken = good.replace(b"1-0:1.8.1(00001.001*kWh)", b"1-0:1.8.1(0000x.001*kWh)")
    got = read_via(transport, [good, broken, good], "2.2", want=3)
    assert kinds(got) == ["telegram", "parse_error", "telegram"]


def test_a_connection_dropped_mid_telegram_returns_the_fragment_as_truncated(transport):
    good = fixture_bytes("be_fluvius_emucs_v171.txt")
    got = read_via(transport, [good, truncated(good, 0.4)], "5B", want=3, timeout=2.0)
    assert kinds(got) == ["telegram", "truncated"]


def test_a_telegram_of_another_meter_type_yields_no_data():
    framer_out = Framer().feed(b"/XYZ5\\2UNKNOWN\r\n\r\n0-0:96.99.9(42)\r\n!\r\n")
    assert framer_out == [("telegram", "/XYZ5\\2UNKNOWN\r\n\r\n0-0:96.99.9(42)\r\n!\r\n")]
    from p1_helpers import TZ

    from producers.p1.decode import DecodeError, Decoder
    from producers.p1.obis import VERSIONS

    try:
        Decoder(VERSIONS["2.2"], TZ).decode(framer_out[0][1])
    except DecodeError as exc:
        assert exc.reason == "no_data"
    else:
        raise AssertionError("a telegram without any known line must be rejected")


def test_endless_noise_without_a_telegram_end_is_dropped_and_reading_recovers():
    framer = Framer(max_buffer=4096)
    out = []
    for _ in range(10):
        out += framer.feed(noise(1000))
    assert out and {k for k, _ in out} == {"noise"}
    assert len(framer._buffer) <= 4096
    good = fixture_bytes("nl_dsmr50_iskra_mt382_v5.txt")
    assert framer.feed(good)[-1] == ("telegram", good.decode("latin-1"))


def test_padding_and_blank_lines_between_telegrams_are_not_errors():
    good = fixture_bytes("se_ell5_han.txt")
    framer = Framer()
    out = framer.feed(good + b"\r\n\x00\xff\xff" + good)
    assert [k for k, _ in out] == ["telegram", "telegram"]
