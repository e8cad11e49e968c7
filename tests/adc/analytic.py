"""The analytic truth of a circuit the emulator is told to carry, written out from the physics, independently
of the emulator's and the maths' code: V = V1 (sin wt + sum fv_h sin h wt), I = I1 (sin(wt + phi) +
sum fi_h sin h(wt + phi)), rms values, real power as the sum over harmonics present in both, power factor."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Truth:
    vrms: float
    irms: float
    power: float

    @property
    def pf(self) -> float:
        return self.power / (self.vrms * self.irms)


def truth(volts: float, amps: float, pf: float, *, lagging: bool = True, v_harmonics=(),
          i_harmonics=()) -> Truth:
    """``pf`` negative: the current flows against the sensor's arrow (its phase turned by 180 degrees)."""
    alpha = math.acos(min(1.0, abs(pf)))
    phi = (-alpha if lagging else alpha) + (math.pi if pf < 0 else 0.0)
    fv = {int(h[0]): h[1] for h in v_harmonics}
    fi = {int(h[0]): h[1] for h in i_harmonics}
    power = volts * amps * (math.cos(phi) + sum(fv[h] * fi[h] * math.cos(h * phi) for h in fv if h in fi))
    vrms = volts * math.sqrt(1 + sum(f * f for f in fv.values()))
    irms = amps * math.sqrt(1 + sum(f * f for f in fi.values()))
    return Truth(vrms, irms, power)
