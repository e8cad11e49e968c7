"""The emulated MCP3208 answers frames bit by bit as the datasheet describes: right frames give the right
12-bit codes, wrong frames give the wrong codes a real chip would give."""

import math

import pytest

from bus.clock import EmulatedClock
from producers.adc.emulator import Mcp3208Emulator, Waveform, code_of_volts
from producers.adc.mcp3208 import Mcp3208, decode, frame

VREF = 3.3


def dc(volts: float) -> Waveform:
    return Waveform(amplitude_v=0.0, bias_v=volts)


def chip(**pins: float) -> Mcp3208Emulator:
    emu = Mcp3208Emulator({int(k[2:]): dc(v) for k, v in pins.items()}, vref=VREF)
    emu.open(0, 0)
    return emu


def expected(volts: float) -> int:
    return math.floor(volts * 4096 / VREF)


def test_single_ended_frame_reads_each_channel():
    volts = {f"ch{c}": 0.2 + 0.37 * c for c in range(8)}
    emu = chip(**volts)
    for c in range(8):
        rx = emu.xfer2(frame(c))
        assert decode(rx) == expected(volts[f"ch{c}"])


def test_reply_bits_follow_the_datasheet():
    emu = chip(ch5=1.0)
    rx = emu.xfer2([0x07, 0x40, 0x00])  # channel 5
    code = expected(1.0)
    assert rx[0] == 0xFF                        # DOUT high-impedance (floating high) for the first byte
    assert rx[1] >> 5 == 0b111                  # ... and through the sample clock
    assert rx[1] & 0x10 == 0                    # null bit
    assert ((rx[1] & 0x0F) << 8 | rx[2]) == code


def test_frame_with_start_bit_elsewhere_answers_aligned_to_it():
    """A 4-byte frame with the start bit at clock 7: B11..B0 land on clocks 14..25, then the LSB-first
    tail B1.. follows while CS stays low."""
    emu = chip(ch3=2.5)
    rx = emu.xfer2([0x01, 0x80 | (3 << 4), 0x00, 0x00])
    word = int.from_bytes(bytes(rx), "big")
    code = expected(2.5)
    assert (word >> 6) & 0xFFF == code
    tail = word & 0x3F  # clocks 26..31 carry B1..B6
    assert tail == int(f"{code:012b}"[::-1][1:7], 2)


def test_differential_frame_reads_the_difference_not_the_channel():
    """The common 4 + (ch >> 2) trap sets only the start bit: SGL/DIFF = 0 is a pseudo-differential read."""
    emu = chip(ch0=2.0, ch1=0.5)
    right = decode(emu.xfer2(frame(0)))
    trap = decode(emu.xfer2([0x04, 0x00, 0x00]))      # CH0 = IN+, CH1 = IN-
    swapped = decode(emu.xfer2([0x04, 0x40, 0x00]))   # CH1 = IN+, CH0 = IN-: negative -> 0
    assert right == expected(2.0)
    assert trap == expected(1.5) != right
    assert swapped == 0


def test_wrong_channel_bits_read_another_channel():
    emu = chip(ch1=0.3, ch2=1.2, ch4=2.9)
    assert decode(emu.xfer2([0x06, 0x80, 0x00])) == expected(1.2)   # channel 2
    assert decode(emu.xfer2([0x06, 0x40, 0x00])) == expected(0.3)   # channel 1
    # channel 4 needs D2 in byte 0: (ch & 3) << 6 without 0x06 | ch >> 2 reads channel 0 (grounded)
    assert decode(emu.xfer2([0x06, (4 & 3) << 6, 0x00])) == 0
    assert decode(emu.xfer2(frame(4))) == expected(2.9)


def test_missing_start_bit_starts_no_conversion():
    emu = chip(ch0=1.0)
    rx = emu.xfer2([0x00, 0x00, 0x00])
    assert rx == [0xFF, 0xFF, 0xFF]         # MISO floats for the whole transfer
    assert decode(rx) == 4095 != expected(1.0)
    late = emu.xfer2([0x00, 0x00, 0x06])     # start bit too late: config bits never arrive
    assert late == [0xFF, 0xFF, 0xFF]


def test_wrong_bit_order_or_spi_mode_gives_wrong_codes():
    emu = chip(ch0=1.0, ch6=2.2)
    good = expected(1.0)
    emu.lsbfirst = True
    assert decode(emu.xfer2(frame(0))) != good
    emu.lsbfirst = False
    emu.mode = 1
    assert decode(emu.xfer2(frame(0))) != good
    emu.mode = 3
    assert decode(emu.xfer2(frame(0))) == good


def test_twelve_bit_quantisation_and_clipping():
    assert code_of_volts(VREF / 4096 * 100.99, VREF) == 100
    assert code_of_volts(-0.2, VREF) == 0
    assert code_of_volts(VREF, VREF) == 4095
    emu = Mcp3208Emulator({0: Waveform(amplitude_v=2.0, bias_v=1.65)}, vref=VREF, sample_period_s=1e-4)
    emu.open(0, 0)
    codes = [decode(emu.xfer2(frame(0))) for _ in range(400)]
    assert min(codes) == 0 and max(codes) == 4095         # clipped at both rails
    assert all(isinstance(c, int) and 0 <= c <= 4095 for c in codes)


def test_each_conversion_advances_the_emulated_clock():
    wave = Waveform(amplitude_v=1.0, bias_v=1.65, frequency_hz=50.0)
    emu = Mcp3208Emulator({0: wave}, vref=VREF, sample_period_s=50e-6)
    emu.open(0, 0)
    adc = Mcp3208(emu)
    codes = [adc.read(0) for _ in range(8)]
    assert emu.clock.now_ns() == 8 * 50_000
    assert codes == [code_of_volts(wave.at(n * 50e-6), VREF) for n in range(8)]
    window = adc.sample([0, 0], steps=5, step_ns=1_000_000)
    assert window.step_s == pytest.approx(1e-3)
    assert list(window.delays_s) == pytest.approx([0.0, 50e-6])


def test_closed_device_refuses_transfers():
    emu = chip(ch0=1.0)
    emu.close()
    with pytest.raises(OSError):
        emu.xfer2(frame(0))


def test_idle_gaps_in_real_time_move_the_emulated_clock():
    real = EmulatedClock(100.0)  # the host's clock, moved by hand
    emu = Mcp3208Emulator({0: dc(1.0)}, sample_period_s=1e-3, realtime=real, resync_gap_s=0.1)
    emu.open(0, 0)
    emu.xfer2(frame(0))
    real.advance(0.05)                    # a short pause (Python being slow): emulated time is not disturbed
    emu.xfer2(frame(0))
    assert emu.clock.now_ns() == 2_000_000
    real.advance(0.8)                     # the producer waiting for its next interval
    assert emu.clock.now_ns() == 2_000_000 + 800_000_000


def test_load_profile_scales_the_current_over_time():
    from producers.adc.emulator import LoadCurve

    profile = LoadCurve(((0.0, 1.0), (10.0, 0.0), (20.0, 1.0)))
    assert [profile.scale_at(t) for t in (0, 5, 10, 25)] == pytest.approx([1.0, 0.5, 0.0, 0.5])
    wave = Waveform(amplitude_v=1.0, bias_v=1.65, frequency_hz=50.0, phase_deg=90.0, profile=profile)
    assert wave.at(0.0) == pytest.approx(2.65)          # a crest at full scale
    assert wave.at(10.0) == pytest.approx(1.65)         # ... and none at scale 0
