"""The adc producer's config: one MCP3208 or MCP3008, its sampling settings, one table per measured circuit.

```toml
[producer.adc]
type = "adc"
spi = "sim"                       # or "spidev" on a Pi
[producer.adc.circuits.mains]     # one circuit = one device on the bus (adc/mains/reading)
role = "grid"
voltage_channel = 0
current_channels = [1]
```
Every circuit is sampled in turn with the producer-wide settings (samples per wave, waves per reading,
mains frequency, Vref); calibration and the channel map are per circuit.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from bus.config import PluginConfig
from bus.envelope import NAME_PATTERN, SOURCES
from producers.adc.chips import CHIPS

Channel = Annotated[int, msgspec.Meta(ge=0, le=7)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNeg = Annotated[float, msgspec.Meta(ge=0)]
Role = Literal["grid", "solar", "load", "battery"]
Pair = tuple[float, float]
HarmonicSpec = Annotated[list[float], msgspec.Meta(min_length=2, max_length=3)]
"""[order, fraction of the fundamental] or [order, fraction, phase in degrees]."""

_VOLTAGE_FROM = re.compile(rf"^({'|'.join(SOURCES)})/[a-z0-9][a-z0-9_-]{{0,63}}$")


class SimCircuit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What flows through an emulated circuit (``spi = "sim"`` only)."""

    current_a: NonNeg | list[NonNeg] = 5.0
    """rms current through each current channel (one number for all, or one per channel)."""
    power_factor: float | list[float] = 0.95
    """-1..1 per channel; negative: power flows against the sensor's arrow (a grid circuit exporting)."""
    lagging: bool = True
    """Current lags the voltage (inductive load); false: leads (capacitive)."""
    harmonics: list[HarmonicSpec] = msgspec.field(default_factory=list)
    """Current harmonics, e.g. [[3, 0.2], [5, 0.1]] for a rectifier load."""
    profile: list[Pair] = msgspec.field(default_factory=list)
    """Load profile over time: [[seconds, scale], ...], linear in between, repeating after the last point."""
    voltage_cal: Positive | None = None
    """The emulated voltage sensor's true VCAL; default: the circuit's ``voltage_cal`` (perfectly calibrated).
    Set it apart to emulate a miscalibrated adapter (what ``wattbus calibrate`` finds)."""
    current_cal: float | list[float] | None = None
    """The emulated CTs' true ICAL (default: the circuit's ``current_cal``)."""
    phase_deg: float | list[float] | None = None
    """How far the emulated CTs really lead the voltage sensor, degrees (default: the circuit's ``phase_deg``,
    which then compensates it exactly)."""


Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]


class SimJitter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a Linux host does to the sampling loop, injected in ``clock = "host"`` mode."""

    late_p: Probability = 0.0
    """Chance that a step wakes up late, by up to ``late_max_us``."""
    late_max_us: Annotated[float, msgspec.Meta(ge=0, le=100_000)] = 300.0
    preempt_every: Annotated[int, msgspec.Meta(ge=0)] = 0
    """A preemption of ``preempt_ms`` about every this many conversions (0: none)."""
    preempt_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 5.0
    slow_p: Probability = 0.0
    """Chance that one SPI transfer takes ``slow_us`` longer."""
    slow_us: Annotated[float, msgspec.Meta(ge=0, le=100_000)] = 150.0


class SimGrid(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The emulated mains and ADC front end (``spi = "sim"`` only)."""

    voltage_v: NonNeg = 230.0
    frequency_hz: Positive | None = None
    """Actual grid frequency; default: ``mains_hz``."""
    harmonics: list[HarmonicSpec] = msgspec.field(default_factory=list)
    noise_v: NonNeg = 0.001
    """rms noise at every ADC input, volts (0.8 mV is one code at Vref 3.3 V)."""
    bias_v: NonNeg | None = None
    """DC bias of every input; default Vref/2 (the usual divider)."""
    sample_period_us: Positive | None = None
    """Emulated time of one conversion; default 24 SPI clocks at ``max_speed_hz``."""
    seed: int = 0
    clock: Literal["emulated", "host"] = "emulated"
    """"host": sample the pins at the host's real clock, as on a Pi, with ``jitter`` injected (costs a core
    while sampling); "emulated": the emulator's own exact time."""
    jitter: SimJitter = msgspec.field(default_factory=lambda: SimJitter())

    def __post_init__(self) -> None:
        _check_harmonics(self.harmonics, "sim.harmonics")


class Circuit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One measured circuit: a voltage channel (or a voltage from elsewhere) and one or more current
    channels whose powers add up; published as one device."""

    device: str | None = None
    """Device name in topics; default: the circuit's table name."""
    role: Role = "load"
    current_channels: list[Channel]
    voltage_channel: Channel | None = None
    voltage_cal: Positive = 234.26
    """emonLib VCAL: mains volts per volt at the ADC input."""
    current_cal: float | list[float] = 90.9
    """emonLib ICAL: amps per volt at the ADC input (CT turns / burden ohms: 2000 / 22 = 90.9); one
    number for all current channels or one per channel; negative flips that channel."""
    phase_deg: float | list[float] = 0.0
    """How far each current sensor leads the voltage sensor, degrees at the mains frequency (CT phase
    error minus VT phase error); the delay between the V and I conversions is compensated anyway."""
    invert: bool = False
    """Flip the sign of power (sensors clamped the other way round)."""
    voltage_from: str | None = None
    """Current-only circuit: take the voltage from another device's readings, e.g. "adc/mains"."""
    voltage_metric: str = "voltage_v"
    voltage_max_age_s: Positive = 10.0
    """A remote voltage older than this is not used (the nominal voltage is)."""
    nominal_voltage_v: Positive = 230.0
    """Current-only circuit: the voltage to use when no measured one is available."""
    sim: SimCircuit = msgspec.field(default_factory=SimCircuit)

    def __post_init__(self) -> None:
        if self.device is not None and not re.match(NAME_PATTERN, self.device):
            raise ValueError(f"`device` must match {NAME_PATTERN}, got {self.device!r}")
        if not self.current_channels:
            raise ValueError("`current_channels` must list at least one channel (0..7)")
        if len(set(self.current_channels)) != len(self.current_channels):
            raise ValueError("`current_channels` lists a channel twice")
        if self.voltage_channel is not None and self.voltage_channel in self.current_channels:
            raise ValueError("`voltage_channel` is also in `current_channels`")
        if self.voltage_channel is not None and self.voltage_from is not None:
            raise ValueError("`voltage_from` is for circuits without a `voltage_channel`; set one of them")
        if self.voltage_from is not None and not _VOLTAGE_FROM.match(self.voltage_from):
            raise ValueError(f"`voltage_from` must be \"source/device\" "
                             f"(source one of {', '.join(SOURCES)}), "
                             f"got {self.voltage_from!r}")
        n = len(self.current_channels)
        for key in ("current_cal", "phase_deg"):
            _per_channel(self, key, n)
        for key in ("current_a", "power_factor", "current_cal", "phase_deg"):
            _per_channel(self.sim, key, n, prefix="sim.")
        if any(c == 0 for c in self.current_cals) or (self.sim.current_cal is not None
                                                       and 0 in _listify(self.sim.current_cal, n)):
            raise ValueError("`current_cal` must not be 0")
        if any(not -1 <= pf <= 1 for pf in _listify(self.sim.power_factor, n)):
            raise ValueError("`sim.power_factor` must be -1..1")
        _check_harmonics(self.sim.harmonics, "sim.harmonics")
        _check_profile(self.sim.profile)

    @property
    def current_cals(self) -> list[float]:
        return _listify(self.current_cal, len(self.current_channels))

    @property
    def phases_deg(self) -> list[float]:
        return _listify(self.phase_deg, len(self.current_channels))

    @property
    def channels(self) -> list[int]:
        """The channels converted in each sampling step, in order: the voltage first."""
        v = [] if self.voltage_channel is None else [self.voltage_channel]
        return v + list(self.current_channels)


def _check_harmonics(harmonics: list[list[float]], key: str) -> None:
    for h in harmonics:
        if h[0] != int(h[0]) or h[0] < 2:
            raise ValueError(f"`{key}`: each entry is [order, fraction(, phase_deg)] "
                             f"with a whole order >= 2, "
                             f"got {h}")


def _check_profile(profile: list[Pair]) -> None:
    times = [t for t, _ in profile]
    if times and (times[0] < 0 or times != sorted(times)):
        raise ValueError("`sim.profile`: [[seconds, scale], ...] with seconds from 0 upwards")


def _listify(value: float | list[float], n: int) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) else [float(value)] * n


def _per_channel(obj: msgspec.Struct, key: str, n: int, prefix: str = "") -> None:
    value = getattr(obj, key)
    if isinstance(value, list) and len(value) != n:
        raise ValueError(f"`{prefix}{key}` has {len(value)} values for {n} current channel(s): "
                         f"give one number, or one per channel")


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    """``[producer.NAME] type = "adc"``; circuits in ``[producer.NAME.circuits.CIRCUIT]`` tables."""

    chip: Literal[tuple(CHIPS)] = "mcp3208"  # type: ignore[valid-type]
    """The ADC: "mcp3208" (12 bits) or "mcp3008" (10 bits); same wiring, own frame and result."""
    spi: Literal["spidev", "sim"] = "spidev"
    spi_bus: Annotated[int, msgspec.Meta(ge=0)] = 0
    spi_cs: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Chip select: 0 = CE0 (/dev/spidev0.0), 1 = CE1."""
    max_speed_hz: Annotated[int, msgspec.Meta(ge=10_000, le=3_600_000)] = 1_000_000
    """SPI clock; the MCP3208 is specified up to 2 MHz at 5 V (1 MHz at 2.7 V), the MCP3008 to 3.6 MHz
    (1.35 MHz at 2.7 V)."""
    spi_mode: Literal[0, 3] = 0
    """The chips speak SPI modes 0,0 and 1,1 only."""
    vref: Positive = 3.3
    """Volts on the chip's VREF pin."""
    mains_hz: Annotated[float, msgspec.Meta(ge=40, le=70)] = 50.0
    samples_per_wave: Annotated[int, msgspec.Meta(ge=8, le=1000)] = 60
    """Sampling steps per mains cycle; each step converts every channel of the circuit once."""
    waves_per_reading: Annotated[int, msgspec.Meta(ge=3, le=1000)] = 10
    interval: Positive = 1.0
    """Seconds between readings of each circuit."""
    circuits: dict[str, Circuit]
    sim: SimGrid = msgspec.field(default_factory=SimGrid)

    def __post_init__(self) -> None:
        limit = CHIPS[self.chip].max_clock_hz
        if self.max_speed_hz > limit:
            raise ValueError(f"`max_speed_hz`: the {self.chip.upper()} is specified up to {limit:,} Hz "
                             f"(at 5 V; about half at 2.7 V), got {self.max_speed_hz:,}")
        if not self.circuits:
            raise ValueError("`circuits` must hold at least one [producer.NAME.circuits.CIRCUIT] table")
        devices: dict[str, str] = {}
        current_owner: dict[int, str] = {}
        voltage_channels: set[int] = set()
        for name, c in self.circuits.items():
            device = c.device or name
            if not re.match(NAME_PATTERN, device):
                raise ValueError(f"circuit {name!r}: device name must match {NAME_PATTERN} "
                                 f"(set `device` or rename the table)")
            if device in devices:
                raise ValueError(f"circuits {devices[device]!r} and {name!r} publish the same "
                                 f"device {device!r}")
            devices[device] = name
            for ch in c.current_channels:
                if ch in current_owner:
                    raise ValueError(f"channel {ch} is a current channel of both {current_owner[ch]!r} "
                                     f"and {name!r}")
                current_owner[ch] = name
            if c.voltage_channel is not None:
                voltage_channels.add(c.voltage_channel)
        if both := voltage_channels & set(current_owner):
            raise ValueError(f"channel(s) {sorted(both)} used as a voltage and as a current channel")

    def device_of(self, circuit: str) -> str:
        return self.circuits[circuit].device or circuit

    @property
    def step_ns(self) -> int:
        return round(1e9 / (self.mains_hz * self.samples_per_wave))

    @property
    def steps(self) -> int:
        return self.samples_per_wave * self.waves_per_reading
