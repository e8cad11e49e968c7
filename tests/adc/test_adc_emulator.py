"""The emulated MCP3208 and MCP3008 answer frames bit by bit as their datasheets describe: right frames give
the right codes (12 and 10 bits), wrong frames give the wrong codes a real chip would give."""

import math

import pytest

from bus.clock import EmulatedClock
from producers.adc.chips import CHIPS
from producers.adc.emulator import Jitter, McpEmulator, Waveform, code_of_volts
from producers.adc.sampler import Sampler

VREF = 3.3
BOTH = pytest.mark.parametrize("name", list(CHIPS))


def dc(volts: float) -> Waveform:
    return Waveform(amplitude_v=0.0, bias_v=volts)


def chip(name: str = "mcp3208", **pins: float) -> McpEmulator:
    emu = McpEmulator({int(k[2:]): dc(v) for k, v in pins.items()}, vref=VREF, chip=name)
    emu.open(0, 0)
    return emu


def expected(volts: float, name: str = "mcp3208") -> int:
    return math.floor(volts * CHIPS[name].counts / VREF)


def test_the_frames_are_the_datasheets():
    """MCP3208: 00000 1 SGL D2 | D1 D0 xxxxxx | x (DS21298 fig. 6-1); MCP3008: 0000000 1 | SGL D2 D1 D0 xxxx
    | x (DS21295 fig. 6-1): the start bit placed so the result ends on the last clock."""
    assert CHIPS["mcp3208"].frame(0) == [0x06, 0x00, 0x00]
    assert CHIPS["mcp3208"].frame(5) == [0x07, 0x40, 0x00]
    assert CHIPS["mcp3008"].frame(0) == [0x01, 0x80, 0x00]
    assert CHIPS["mcp3008"].frame(5) == [0x01, 0xD0, 0x00]
    assert CHIPS["mcp3208"].decode([0xFF, 0xEA, 0xBC]) == 0xABC
    assert CHIPS["mcp3008"].decode([0xFF, 0xFE, 0xBC]) == 0x2BC
    with pytest.raises(ValueError):
        CHIPS["mcp3008"].frame(8)


@BOTH
def test_single_ended_frame_reads_each_channel(name):
    volts = {f"ch{c}": 0.2 + 0.37 * c for c in range(8)}
    emu = chip(name, **volts)
    c = CHIPS[name]
    for ch in range(8):
        assert c.decode(emu.xfer2(c.frame(ch))) == expected(volts[f"ch{ch}"], name)


def test_reply_bits_follow_the_datasheet_mcp3208():
    emu = chip(ch5=1.0)
    rx = emu.xfer2([0x07, 0x40, 0x00])  # channel 5
    code = expected(1.0)
    assert rx[0] == 0xFF                        # DOUT high-impedance (floating high) for the first byte
    assert rx[1] >> 5 == 0b111                  # ... and through the sample clock
    assert rx[1] & 0x10 == 0                    # null bit
    assert ((rx[1] & 0x0F) << 8 | rx[2]) == code


def test_reply_bits_follow_the_datasheet_mcp3008():
    emu = chip("mcp3008", ch5=1.0)
    rx = emu.xfer2([0x01, 0xD0, 0x00])  # channel 5
    code = expected(1.0, "mcp3008")
    assert rx[0] == 0xFF                        # DOUT high-impedance through the start bit (clock 7) ...
    assert rx[1] >> 3 == 0b11111                # ... the config bits and the sample clock (clocks 8..12)
    assert rx[1] & 0x04 == 0                    # null bit, clock 13
    assert ((rx[1] & 0x03) << 8 | rx[2]) == code  # B9..B0 on clocks 14..23


@BOTH
def test_frame_with_start_bit_elsewhere_answers_aligned_to_it(name):
    """A 4-byte frame with the start bit at clock 7: the result lands 7 clocks after it, MSB first, then the
    LSB-first tail B1.. follows while CS stays low."""
    emu = chip(name, ch3=2.5)
    bits = CHIPS[name].bits
    rx = emu.xfer2([0x01, 0x80 | (3 << 4), 0x00, 0x00])
    word = int.from_bytes(bytes(rx), "big")
    code = expected(2.5, name)
    end = 7 + 6 + bits                              # clock of B0
    assert (word >> (31 - end)) & ((1 << bits) - 1) == code
    tail = word & ((1 << (31 - end)) - 1)           # clocks after B0 carry B1, B2, ...
    n = 31 - end
    assert tail == int(f"{code:0{bits}b}"[::-1][1:1 + n], 2)


def test_the_other_chips_frame():
    """What a reader configured for the wrong chip gets, as from real hardware: the MCP3208's frame on an
    MCP3008 reads the 10-bit result shifted up two bits with two bits of the LSB-first tail below it (about 4x
    the value); the MCP3008's frame on an MCP3208 reads its 12-bit result's top 10 bits."""
    c12, c10 = CHIPS["mcp3208"], CHIPS["mcp3008"]
    on_3008 = chip("mcp3008", ch2=0.9)
    code10 = expected(0.9, "mcp3008")
    tail = int(f"{code10:010b}"[::-1][1:3], 2)       # B1 B2
    assert c12.decode(on_3008.xfer2(c12.frame(2))) == (code10 << 2) | tail != expected(0.9)
    on_3208 = chip("mcp3208", ch2=0.9)
    assert c10.decode(on_3208.xfer2(c10.frame(2))) == expected(0.9) >> 2


def test_differential_frame_reads_the_difference_not_the_channel():
    """The common 4 + (ch >> 2) trap sets only the start bit: SGL/DIFF = 0 is a pseudo-differential read."""
    emu = chip(ch0=2.0, ch1=0.5)
    c = CHIPS["mcp3208"]
    right = c.decode(emu.xfer2(c.frame(0)))
    trap = c.decode(emu.xfer2([0x04, 0x00, 0x00]))      # CH0 = IN+, CH1 = IN-
    swapped = c.decode(emu.xfer2([0x04, 0x40, 0x00]))   # CH1 = IN+, CH0 = IN-: negative -> 0
    assert right == expected(2.0)
    assert trap == expected(1.5) != right
    assert swapped == 0
    emu8 = chip("mcp3008", ch0=2.0, ch1=0.5)
    assert CHIPS["mcp3008"].decode(emu8.xfer2([0x01, 0x00, 0x00])) == expected(1.5, "mcp3008")


def test_wrong_channel_bits_read_another_channel():
    emu = chip(ch1=0.3, ch2=1.2, ch4=2.9)
    c = CHIPS["mcp3208"]
    assert c.decode(emu.xfer2([0x06, 0x80, 0x00])) == expected(1.2)   # channel 2
    assert c.decode(emu.xfer2([0x06, 0x40, 0x00])) == expected(0.3)   # channel 1
    # channel 4 needs D2 in byte 0: (ch & 3) << 6 without 0x06 | ch >> 2 reads channel 0 (grounded)
    assert c.decode(emu.xfer2([0x06, (4 & 3) << 6, 0x00])) == 0
    assert c.decode(emu.xfer2(c.frame(4))) == expected(2.9)


@BOTH
def test_missing_start_bit_starts_no_conversion(name):
    emu = chip(name, ch0=1.0)
    rx = emu.xfer2([0x00, 0x00, 0x00])
    assert rx == [0xFF, 0xFF, 0xFF]         # MISO floats for the whole transfer
    assert CHIPS[name].decode(rx) == CHIPS[name].full_scale != expected(1.0, name)
    late = emu.xfer2([0x00, 0x00, 0x06])     # start bit too late: config bits never arrive
    assert late == [0xFF, 0xFF, 0xFF]


@BOTH
def test_wrong_bit_order_or_spi_mode_gives_wrong_codes(name):
    emu = chip(name, ch0=1.0, ch1=0.4, ch6=2.2)
    c = CHIPS[name]
    good = expected(1.0, name)
    emu.lsbfirst = True
    assert c.decode(emu.xfer2(c.frame(0))) != good
    emu.lsbfirst = False
    emu.mode = 1
    assert c.decode(emu.xfer2(c.frame(0))) != good
    emu.mode = 3
    assert c.decode(emu.xfer2(c.frame(0))) == good


@BOTH
def test_quantisation_and_clipping(name):
    c = CHIPS[name]
    assert code_of_volts(VREF / c.counts * 100.99, VREF, c.bits) == 100
    assert code_of_volts(-0.2, VREF, c.bits) == 0
    assert code_of_volts(VREF, VREF, c.bits) == c.full_scale
    emu = McpEmulator({0: Waveform(amplitude_v=2.0, bias_v=1.65)}, vref=VREF, chip=name, sample_period_s=1e-4)
    emu.open(0, 0)
    codes = [c.decode(emu.xfer2(c.frame(0))) for _ in range(400)]
    assert min(codes) == 0 and max(codes) == c.full_scale          # clipped at both rails
    assert all(isinstance(x, int) and 0 <= x <= c.full_scale for x in codes)


@BOTH
def test_each_conversion_advances_the_emulated_clock(name):
    wave = Waveform(amplitude_v=1.0, bias_v=1.65, frequency_hz=50.0)
    emu = McpEmulator({0: wave}, vref=VREF, chip=name, sample_period_s=50e-6)
    emu.open(0, 0)
    adc = Sampler(emu, name)
    codes = [adc.read(0) for _ in range(8)]
    assert emu.clock.now_ns() == 8 * 50_000
    assert codes == [code_of_volts(wave.at(n * 50e-6), VREF, CHIPS[name].bits) for n in range(8)]
    window = adc.sample([0, 0], steps=5, step_ns=1_000_000)
    assert window.times_s[0] == pytest.approx([0, 1e-3, 2e-3, 3e-3, 4e-3])
    assert window.times_s[1] - window.times_s[0] == pytest.approx([50e-6] * 5)   # the second slot, one later
    assert window.took_s == pytest.approx(50e-6)


def test_host_clock_mode_samples_at_the_hosts_time_with_the_jitter_asked_for():
    """In host mode the chip samples the pins at perf_counter time: a code read between two clock readings
    is the wave somewhere between them; and the injected habits happen, counted."""
    wave = Waveform(amplitude_v=1.2, bias_v=1.65, frequency_hz=50.0)
    emu = McpEmulator({0: wave}, vref=VREF, host=Jitter(late_p=0.5, preempt_every=50, preempt_s=2e-3,
                                                         slow_p=0.2, seed=1))
    emu.open(0, 0)
    w = Sampler(emu).sample([0], steps=300, step_ns=333_333)
    start, end = w.start_ns[0] * 1e-9, w.end_ns[0] * 1e-9
    lo = [min(wave.at(a), wave.at(b)) for a, b in zip(start, end)]
    hi = [max(wave.at(a), wave.at(b)) for a, b in zip(start, end)]
    short = w.took_s[0] < 1e-4  # over a short transfer the wave is monotonic: the code lies between its ends
    assert short.sum() > 200
    assert all(code_of_volts(lo_, VREF) - 1 <= c <= code_of_volts(hi_, VREF) + 1
               for c, lo_, hi_, s in zip(w.codes[0], lo, hi, short) if s)
    injected = emu.timing.injected
    assert injected["late"] > 50 and injected["slow"] > 20 and injected["preempt"] >= 2
    assert w.took_s.max() >= 1.9e-3 or w.late_steps > 0   # a preemption shows in a transfer or in the pacing


def test_closed_device_refuses_transfers():
    emu = chip(ch0=1.0)
    emu.close()
    with pytest.raises(OSError):
        emu.xfer2(CHIPS["mcp3208"].frame(0))


def test_idle_gaps_in_real_time_move_the_emulated_clock():
    real = EmulatedClock(100.0)  # the host's clock, moved by hand
    emu = McpEmulator({0: dc(1.0)}, sample_period_s=1e-3, realtime=real, resync_gap_s=0.1)
    emu.open(0, 0)
    f = CHIPS["mcp3208"].frame(0)
    emu.xfer2(f)
    real.advance(0.05)                    # a short pause (Python being slow): emulated time is not disturbed
    emu.xfer2(f)
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
