"""One measured circuit: from a sampled window to the metrics of its reading.

A circuit with a voltage channel measures real power signed (the direction of flow), apparent power,
power factor and frequency. A current-only circuit (the seed's "without voltage measurement" mode) knows
only current: its power is that current times a voltage taken from another device's readings
(``voltage_from``), else a nominal voltage, and is unsigned, as in the seed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bus import envelope
from producers.adc.chips import CHIPS
from producers.adc.config import Circuit, Config
from producers.adc.energy import EnergyCounter
from producers.adc.power import Analysis, analyse, ratio
from producers.adc.sampler import SampleWindow, Sampler

MIN_APPARENT_VA = 1.0
"""Below this the power factor is the ratio of two noise figures: it is left out."""
METRICS = ("voltage_v", "current_a", "power_w", "apparent_power_va", "power_factor", "frequency_hz",
           "energy_import_wh", "energy_export_wh")
"""Every metric a circuit's reading may carry."""
ATTEMPTS = 3
"""Windows sampled at most for one reading when the host was so busy that a gap hit every cycle."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One reading's sampling: the analysis of the last window, how many windows it took, late steps."""

    analysis: Analysis
    windows: int
    late_steps: int

    @property
    def usable(self) -> bool:
        return self.analysis.clean


class RemoteVoltage:
    """The latest voltage from another device's readings (``{voltage_from}/reading``, any producer)."""

    def __init__(self, metric: str = "voltage_v", max_age_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.metric, self.max_age_s, self._clock = metric, max_age_s, clock
        self._value: float | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def on_message(self, payload: bytes) -> str | None:
        """Take the voltage from one message; return the reason when the payload is unusable."""
        try:
            readings = envelope.decode(payload)
        except envelope.EnvelopeError as exc:
            return str(exc)
        values = [r.metrics[self.metric] for r in readings
                  if r.quality != "missing" and self.metric in r.metrics]
        if not values:
            return None  # a reading without the metric (e.g. quality missing) is not an error
        value = values[-1]
        if not 0 <= value < 100_000:
            return f"implausible {self.metric} {value!r}"
        with self._lock:
            self._value, self._at = float(value), self._clock()
        return None

    def set(self, value: float) -> None:
        """A voltage measured in this same process (``voltage_from`` names one of our own circuits)."""
        with self._lock:
            self._value, self._at = value, self._clock()

    def value(self) -> float | None:
        with self._lock:
            if self._value is None or self._clock() - self._at > self.max_age_s:
                return None
            return self._value


class CircuitRunner:
    """Calibration, energy counters and metric-building for one circuit (one device)."""

    def __init__(self, name: str, circuit: Circuit, cfg: Config):
        self.name = name
        self.circuit = circuit
        self.device = circuit.device or name
        self.channels = circuit.channels
        self.has_voltage = circuit.voltage_channel is not None
        self.chip = CHIPS[cfg.chip]
        self.v_ratio = ratio(circuit.voltage_cal, cfg.vref, self.chip.counts)
        self.i_ratios = [ratio(c, cfg.vref, self.chip.counts) for c in circuit.current_cals]
        self.phase_deg = circuit.phases_deg
        self.nominal_hz = cfg.mains_hz
        self.sign = -1.0 if circuit.invert else 1.0
        self.energy = EnergyCounter(cfg.interval)
        self.remote: RemoteVoltage | None = None
        if circuit.voltage_from is not None:
            self.remote = RemoteVoltage(circuit.voltage_metric, circuit.voltage_max_age_s)
        self.used_nominal = 0

    def analyse(self, window: SampleWindow) -> Analysis:
        return analyse(window.codes, window.times_s, took_s=window.took_s, has_voltage=self.has_voltage,
                       v_ratio=self.v_ratio, i_ratios=self.i_ratios, phase_deg=self.phase_deg,
                       nominal_hz=self.nominal_hz, full_scale=self.chip.full_scale)

    def measure(self, adc: Sampler, steps: int, step_ns: int) -> Measurement:
        """Sample and analyse a window; again (up to ``ATTEMPTS``) while the host was too busy for any whole
        cycle to come through clean. ``OSError`` from the SPI device passes through."""
        late = 0
        for attempt in range(1, ATTEMPTS + 1):
            window = adc.sample(self.channels, steps, step_ns)
            late += window.late_steps
            a = self.analyse(window)
            if a.clean:
                break
        return Measurement(a, attempt, late)

    def metrics(self, a: Analysis, now_s: float) -> dict[str, float]:
        """The reading's metrics; also advances the energy counters by this reading's power."""
        current = float(a.irms.sum())
        m: dict[str, float] = {}  # plain floats only: numpy scalars do not serialise
        if a.vrms is not None and a.real_power is not None:
            power = self.sign * float(a.real_power.sum())
            apparent = a.vrms * current
            m["voltage_v"] = round(a.vrms, 2)
            m["current_a"] = round(current, 3)
            m["power_w"] = round(power, 1)
            m["apparent_power_va"] = round(apparent, 1)
            if apparent >= MIN_APPARENT_VA:
                m["power_factor"] = round(max(-1.0, min(1.0, power / apparent)), 3)
            if a.frequency_hz is not None:
                m["frequency_hz"] = round(a.frequency_hz, 3)
            self.energy.add(power, now_s)
            m["energy_import_wh"] = round(self.energy.import_wh, 3)
            m["energy_export_wh"] = round(self.energy.export_wh, 3)
        else:
            volts = self.remote.value() if self.remote is not None else None
            if volts is None:
                volts = self.circuit.nominal_voltage_v
                self.used_nominal += 1
            power = volts * current
            m["current_a"] = round(current, 3)
            m["power_w"] = round(power, 1)
            m["apparent_power_va"] = round(power, 1)
            self.energy.add(power, now_s)
            m["energy_import_wh"] = round(self.energy.import_wh, 3)
        return m
