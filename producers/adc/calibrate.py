"""``wattbus calibrate adc CIRCUIT``: voltage_cal, current_cal and phase_deg from a reference meter and a
resistive load, with the error before and after shown.

What each reference calibrates, the seed's "compare with an accurate power measurement device" done once and
written down:

* a voltmeter reading of the mains -> ``voltage_cal`` (scaled by reference / measured);
* an ammeter (clamp meter) on the conductor of each CT -> that channel's ``current_cal``; or, instead, the
  power a reference meter shows for the circuit -> every channel's ``current_cal`` by the same factor
  (after the voltage is right);
* a purely resistive load (a kettle, a heater: PF 1.00) -> ``phase_deg``: the measured lead of the current's
  fundamental over the voltage's is the sensors' phase error (the maths measures it; no trial and error).

The same device the producer reads is opened (SPI, or the emulator for ``spi = "sim"``, where
``sim.voltage_cal`` / ``sim.current_cal`` / ``sim.phase_deg`` emulate a miscalibrated front end). Interactive
unless a reference is given as an option; with options it asks nothing (scripts and tests).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from bus.config import AppConfig, ConfigError
from producers.adc.circuit import CircuitRunner
from producers.adc.config import Circuit, Config
from producers.adc.device import open_device
from producers.adc.sampler import Sampler

MAX_PHASE_ERROR = 20.0
"""Degrees; a larger "phase error" on a load said to be resistive means it is not: no phase_deg is written."""


@dataclass(frozen=True)
class Figures:
    """A circuit's mean over several readings."""

    vrms: float | None
    irms: list[float]
    power: float | None
    lead_deg: list[float] | None

    @property
    def pf(self) -> float | None:
        if self.vrms is None or self.power is None or not sum(self.irms):
            return None
        return self.power / (self.vrms * sum(self.irms))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wattbus calibrate adc CIRCUIT", description=__doc__.split("\n\n")[0])
    p.add_argument("--voltage", type=float, help="the mains voltage a reference meter shows (V)")
    p.add_argument("--current", type=float, nargs="+", help="what a reference ammeter shows on each CT's "
                   "conductor (A), one per current channel in order")
    p.add_argument("--power", type=float, help="the circuit's power a reference meter shows (W), instead of "
                   "--current")
    p.add_argument("--resistive", action="store_true", help="the load now on is purely resistive: calibrate "
                   "phase_deg")
    p.add_argument("--readings", type=int, default=5, help="readings averaged per measurement (default 5)")
    p.add_argument("--producer", help="the [producer.NAME] section, when several adc sections have the "
                   "circuit")
    return p


def find_circuit(app: AppConfig, name: str, producer: str | None = None) -> tuple[str, str]:
    """(producer section, circuit table) of the circuit called ``name`` (table or device name); a section
    name with a single circuit will do too."""
    found = []
    for section, cfg in app.producers.items():
        if not isinstance(cfg, Config) or (producer and section != producer):
            continue
        for table, c in cfg.circuits.items():
            if name in (table, c.device or table) or (name == section and len(cfg.circuits) == 1):
                found.append((section, table))
    if len(found) == 1:
        return found[0]
    known = [f"{s}: {', '.join(c.circuits)}" for s, c in app.producers.items() if isinstance(c, Config)]
    if not found:
        raise ConfigError([f"{app.path}: no adc circuit named {name!r} (circuits by producer: "
                           f"{'; '.join(known) or 'no adc producer configured'})"])
    raise ConfigError([f"{app.path}: circuit {name!r} is in several adc producers "
                       f"({', '.join(s for s, _ in found)}): say which with --producer"])


def measure(adc: Sampler, cfg: Config, table: str, circuit: Circuit, readings: int) -> Figures:
    """The mean of ``readings`` clean readings of ``circuit`` with its calibration as given."""
    runner = CircuitRunner(table, circuit, cfg)
    got = []
    for _ in range(readings * 4):
        m = runner.measure(adc, cfg.steps, cfg.step_ns)
        if m.usable:
            got.append(m.analysis)
        if len(got) == readings:
            break
    if not got:
        raise SystemExit("wattbus calibrate: no undisturbed sampling window: is the host very busy?")
    has_v = got[0].vrms is not None
    n = len(circuit.current_channels)
    leads = [a.lead_deg for a in got if a.lead_deg is not None]
    return Figures(
        vrms=statistics.fmean(a.vrms for a in got) if has_v else None,
        irms=[statistics.fmean(float(a.irms[k]) for a in got) for k in range(n)],
        power=statistics.fmean(float(a.real_power.sum()) * (-1 if circuit.invert else 1) for a in got)
        if has_v else None,
        lead_deg=[_circular_mean([float(x[k]) for x in leads]) for k in range(n)] if leads else None)


def _circular_mean(degrees: Sequence[float]) -> float:
    s = sum(math.sin(math.radians(d)) for d in degrees)
    c = sum(math.cos(math.radians(d)) for d in degrees)
    return math.degrees(math.atan2(s, c))


def _fold(lead: float) -> float:
    """A lead measured on a resistive load is the phase error, or that plus 180 degrees (power against the
    sensor's arrow): the error either way, -90..90."""
    return (lead + 90.0) % 180.0 - 90.0


def _ask(prompt: str) -> float | None:
    """A positive number typed by the user; None for Enter (skip) or end of input."""
    while True:
        try:
            text = input(prompt).strip()
        except EOFError:
            print()
            return None
        if not text:
            return None
        try:
            value = float(text.replace(",", "."))
        except ValueError:
            value = float("nan")
        if math.isfinite(value) and value > 0:
            return value
        print("  a positive number, please (or Enter to skip)")


def _yes(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        print()
        return False


def _pct(measured: float, ref: float) -> str:
    return f"{(measured - ref) / ref * 100:+.2f} %"


def calibrate(app: AppConfig, name: str, argv: list[str]) -> dict[tuple[str, ...], Any] | None:
    args = _parser().parse_args(argv)
    if args.readings < 1:
        raise SystemExit("wattbus calibrate: --readings must be at least 1")
    section, table = find_circuit(app, name, args.producer)
    cfg: Config = app.producers[section]  # type: ignore[assignment]
    c = cfg.circuits[table]
    n = len(c.current_channels)
    has_v = c.voltage_channel is not None
    interactive = args.voltage is None and args.current is None and args.power is None and not args.resistive
    if args.current is not None and len(args.current) != n:
        raise SystemExit(f"wattbus calibrate: --current needs {n} value(s), one per current channel "
                         f"{c.current_channels}")
    if args.power is not None and not has_v:
        raise SystemExit("wattbus calibrate: --power needs a circuit with a voltage channel (this one has "
                         "none: give --current)")

    where = "the emulator" if cfg.spi == "sim" else f"/dev/spidev{cfg.spi_bus}.{cfg.spi_cs}"
    print(f"Calibrating circuit {table!r} of [producer.{section}]: {cfg.chip.upper()} on {where}, "
          f"voltage channel {c.voltage_channel if has_v else '-'}, current channel(s) {c.current_channels}")
    print(f"  now: voltage_cal = {c.voltage_cal:g}, current_cal = {c.current_cal}, phase_deg = {c.phase_deg}")
    if cfg.spi != "sim":
        print(f"  Stop the producer first if it runs here (systemctl stop wattbus@{section}): two programs "
              "sampling one chip disturb each other.")
    if interactive:
        print("\nSwitch on a steady load of a few hundred watts or more on this circuit. A purely resistive "
              "one (a kettle,\na heater, an incandescent lamp) lets the phase be calibrated too.")
        try:
            input("Press Enter when it is on. ")
        except EOFError:
            print()
    try:
        spi = open_device(cfg)
    except (OSError, RuntimeError) as exc:
        raise SystemExit(f"wattbus calibrate: cannot open the {cfg.chip.upper()}: {exc}") from None
    try:
        adc = Sampler(spi, cfg.chip)
        before = measure(adc, cfg, table, c, args.readings)
        print(f"\nMeasured with the present calibration ({args.readings} readings): "
              + (f"voltage {before.vrms:.2f} V, " if has_v else "")
              + f"current {' + '.join(f'{i:.3f}' for i in before.irms)} A"
              + (f", power {before.power:.1f} W, power factor {before.pf:.3f}" if before.pf is not None
                 else ""))

        v_ref = args.voltage if not interactive else (
            _ask("Voltage on a reference meter (V), Enter to skip: ") if has_v else None)
        i_ref: list[float | None] = list(args.current) if args.current else [None] * n
        p_ref = args.power
        if interactive:
            for k, ch in enumerate(c.current_channels):
                i_ref[k] = _ask(f"Current on a reference ammeter, conductor of channel {ch} (A), "
                                "Enter to skip: ")
            if has_v and not any(i_ref):
                p_ref = _ask("Or: the circuit's power on a reference meter (W), Enter to skip: ")
        resistive = args.resistive or (interactive and has_v and _yes("Is the load on now purely resistive "
                                                                       "(a kettle, a heater)? [y/N] "))
        if v_ref is not None and not has_v:
            print("  (no voltage channel on this circuit: the voltage reference is not used)")
            v_ref = None

        vcal = c.voltage_cal * v_ref / before.vrms if v_ref and before.vrms else c.voltage_cal
        icals = list(c.current_cals)
        for k in range(n):
            if i_ref[k] and before.irms[k] > 0:
                icals[k] *= i_ref[k] / before.irms[k]
        if p_ref and not any(i_ref) and before.power:
            factor = p_ref / abs(before.power * vcal / c.voltage_cal)
            icals = [x * factor for x in icals]
        phases = list(c.phases_deg)
        if resistive and before.lead_deg is not None:
            for k in range(n):
                error = _fold(before.lead_deg[k])
                if abs(error) > MAX_PHASE_ERROR:
                    print(f"  channel {c.current_channels[k]}: the current is {error:+.1f} degrees off the "
                          "voltage: not a resistive load, or not this circuit's; phase_deg left as it is")
                else:
                    phases[k] += error

        changed = _changes(c, vcal, icals, phases)
        if not changed:
            return None
        after_circuit = msgspec.structs.replace(c, **changed)
        after = measure(adc, cfg, table, after_circuit, args.readings)
    finally:
        spi.close()
    _report(before, after, v_ref, i_ref, p_ref, resistive, c.current_channels)
    return {("producer", section, "circuits", table, key): value for key, value in changed.items()}


def _changes(c: Circuit, vcal: float, icals: list[float], phases: list[float]) -> dict[str, Any]:
    """The keys whose value moves, rounded as a user would write them, in the shape the config had."""
    out: dict[str, Any] = {}
    if round(vcal, 3) != round(c.voltage_cal, 3):
        out["voltage_cal"] = round(vcal, 3)
    new_i = [round(x, 3) for x in icals]
    if new_i != [round(x, 3) for x in c.current_cals]:
        out["current_cal"] = new_i if isinstance(c.current_cal, list) or len(set(new_i)) > 1 else new_i[0]
    new_p = [round(x, 2) for x in phases]
    if new_p != [round(x, 2) for x in c.phases_deg]:
        out["phase_deg"] = new_p if isinstance(c.phase_deg, list) or len(set(new_p)) > 1 else new_p[0]
    return out


def _report(before: Figures, after: Figures, v_ref: float | None, i_ref: list[float | None],
            p_ref: float | None, resistive: bool, channels: list[int]) -> None:
    rows = []
    if v_ref and before.vrms is not None and after.vrms is not None:
        rows.append(("voltage", f"{v_ref:.2f} V", f"{before.vrms:.2f} V ({_pct(before.vrms, v_ref)})",
                     f"{after.vrms:.2f} V ({_pct(after.vrms, v_ref)})"))
    for k, ch in enumerate(channels):
        ref = i_ref[k]
        if ref:
            rows.append((f"current ch {ch}", f"{ref:.3f} A",
                         f"{before.irms[k]:.3f} A ({_pct(before.irms[k], ref)})",
                         f"{after.irms[k]:.3f} A ({_pct(after.irms[k], ref)})"))
    if p_ref and before.power is not None and after.power is not None:
        rows.append(("power", f"{p_ref:.1f} W",
                     f"{abs(before.power):.1f} W ({_pct(abs(before.power), p_ref)})",
                     f"{abs(after.power):.1f} W ({_pct(abs(after.power), p_ref)})"))
    if resistive and before.pf is not None and after.pf is not None:
        rows.append(("power factor", "1.000 (resistive)", f"{abs(before.pf):.4f}", f"{abs(after.pf):.4f}"))
        if before.lead_deg and after.lead_deg:
            rows.append(("phase error", "0.00 deg",
                         ", ".join(f"{_fold(x):+.2f} deg" for x in before.lead_deg),
                         ", ".join(f"{_fold(x):+.2f} deg" for x in after.lead_deg)))
    head = ("", "reference", "before", "after")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    print()
    for r in [head, *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    sys.stdout.flush()
