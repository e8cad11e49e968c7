"""The ADC chips the producer reads, as data: one row per chip, everything else derives from it.

Both are Microchip successive-approximation ADCs with 8 single-ended inputs and the same serial protocol
(datasheets DS21298 for the MCP3208, DS21295 for the MCP3008): leading zeros, a start bit, SGL/DIFF, D2 D1 D0,
one clock to sample, a null bit, the result MSB first, then (while CS stays low) the result again LSB first.
They differ in resolution, hence where the start bit sits in a 3-byte frame so the result ends on a byte
boundary:

=========  ======  ==========================================  =================================
chip       bits    request for channel N (single-ended)        result
=========  ======  ==========================================  =================================
MCP3208    12      ``[0x06 | N >> 2, (N & 3) << 6, 0]``          ``(rx[1] & 0x0F) << 8 | rx[2]``
MCP3008    10      ``[0x01, 0x80 | N << 4, 0]``                  ``(rx[1] & 0x03) << 8 | rx[2]``
=========  ======  ==========================================  =================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chip:
    name: str
    bits: int
    max_clock_hz: int
    """Datasheet SPI clock limit at VDD = 5 V (at 2.7 V it is about half: the Pi's 3.3 V is in between)."""

    @property
    def counts(self) -> int:
        """Codes in the range (emonLib's ADC_COUNTS): 4096 or 1024."""
        return 1 << self.bits

    @property
    def full_scale(self) -> int:
        return self.counts - 1

    @property
    def high_mask(self) -> int:
        """Bits of reply byte 1 that carry the result's high bits."""
        return (1 << (self.bits - 8)) - 1

    def frame(self, channel: int) -> list[int]:
        """The 3-byte single-ended conversion request for ``channel`` (0..7): the start bit placed so the
        result's last bit is the frame's last clock."""
        if not 0 <= channel <= 7:
            raise ValueError(f"{self.name.upper()} channel {channel} does not exist (0..7)")
        word = (0b11000 | channel) << (self.bits + 2)  # start, SGL = 1, D2 D1 D0, sample, null, result
        return list(word.to_bytes(3, "big"))

    def decode(self, rx: list[int] | bytes) -> int:
        """The result in a reply to :meth:`frame`."""
        return ((rx[1] & self.high_mask) << 8) | rx[2]


CHIPS: dict[str, Chip] = {
    "mcp3208": Chip("mcp3208", 12, 2_000_000),
    "mcp3008": Chip("mcp3008", 10, 3_600_000),
}
