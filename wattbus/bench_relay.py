"""``wattbus bench relay``: the relay's controller against a naive threshold rule, over simulated days.

Days come from the producers' own models: the sim producer's household with solar panels under a sunny, a
cloudy and a broken-cloud sky (its ``cloudiness``), and the generated hhpc household (the dataset the hhpc
producer replays) under the sim's panels. A 2 kW load (a boiler, an EV charging at 9 A) that would run
all day is switched minute by minute, by the real controller (``consumers/relay/engine.py``, the same code
the consumer runs, with the config's defaults) and by the naive rule: on whenever the export covers the
load, off at the first import above 500 W, no delays. Printed per day and in total: switchings, the load's
energy from solar and from the grid, and its cost (grid energy at the import price plus the feed-in
revenue the solar energy would have earned). Lives in ``wattbus/`` because it joins producers' models to a
consumer's engine, which plugins never import from each other.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from consumers.relay import RelayConfig
from consumers.relay.engine import Controller

TZ = ZoneInfo("Europe/Brussels")
STEP_S = 60
IMPORT_PRICE, EXPORT_PRICE = 0.30, 0.04
SKIES = {"sunny": 0.05, "cloudy": 0.85, "broken": 0.5}


@dataclass
class Day:
    label: str
    start: float
    house_w: np.ndarray
    solar_w: np.ndarray


@dataclass
class Tally:
    switchings: int = 0
    solar_wh: float = 0.0
    grid_wh: float = 0.0

    @property
    def cost(self) -> float:
        return self.grid_wh / 1000 * IMPORT_PRICE + self.solar_wh / 1000 * EXPORT_PRICE

    def add(self, other: "Tally") -> None:
        self.switchings += other.switchings
        self.solar_wh += other.solar_wh
        self.grid_wh += other.grid_wh


def sim_days(dates: list[date]) -> Iterator[Day]:
    """The sim producer's household (10 kWh/day, 5 kWp) under each sky, on each date."""
    from producers.sim.config import MeterParams
    from producers.sim.profile import LoadProfile, Site

    for sky, cloudiness in SKIES.items():
        profile = LoadProfile(f"bench-{sky}", MeterParams(daily_kwh=10.0, solar_kwp=5.0, cloudiness=cloudiness),
                              Site(TZ))
        for d in dates:
            start = datetime.combine(d, time(), tzinfo=TZ).timestamp()
            times = start + STEP_S * np.arange(1, 24 * 60 + 1)
            s = profile.sample(times)
            yield Day(f"{d} sim {sky}", start, s["load_w"], s["solar_w"])


def hhpc_days(dates: list[date]) -> Iterator[Day]:
    """The generated hhpc household (its Global_active_power) under the sim's panels, broken clouds."""
    from producers.hhpc.generate import generate_year
    from producers.sim.config import MeterParams
    from producers.sim.profile import LoadProfile, Site

    panels = LoadProfile("bench-hhpc-panels", MeterParams(daily_kwh=1.0, base_w=0.0, solar_kwp=5.0,
                                                          cloudiness=SKIES["broken"]), Site(TZ))
    for d in dates:
        text = io.StringIO()
        generate_year(d.year, text, start=d, end=d + timedelta(days=1))
        rows = text.getvalue().splitlines()[1:]
        house = np.array([float(r.split(";")[2] or "nan") * 1000 for r in rows[:24 * 60]])
        house = np.nan_to_num(house, nan=float(np.nanmean(house)))
        start = datetime.combine(d, time(), tzinfo=TZ).timestamp()
        solar = panels.sample(start + STEP_S * np.arange(1, len(house) + 1))["solar_w"]
        yield Day(f"{d} hhpc broken", start, house, solar)


Rule = Callable[[float, float], bool]
"""(time, grid power with the load as it is now) -> the load on for the next minute?"""


def naive(load_w: float, off_import_w: float = 500.0) -> Callable[[], Rule]:
    def make() -> Rule:
        state = [False]

        def rule(now: float, grid: float) -> bool:
            surplus = -grid + (load_w if state[0] else 0.0)
            if not state[0] and surplus >= load_w:
                state[0] = True
            elif state[0] and grid > off_import_w:
                state[0] = False
            return state[0]

        return rule

    return make


def controller(cfg: RelayConfig) -> Callable[[], Rule]:
    def make() -> Rule:
        ctl = Controller(cfg.rules(), TZ)

        def rule(now: float, grid: float) -> bool:
            ctl.grid(now, grid)
            ctl.switched(ctl.decide(now).on, now)
            return ctl.on

        return rule

    return make


def replay(day: Day, rule: Rule, load_w: float) -> Tally:
    tally, on = Tally(), False
    for i, (house, solar) in enumerate(zip(day.house_w.tolist(), day.solar_w.tolist())):
        now = day.start + (i + 1) * STEP_S
        grid = house - solar + (load_w if on else 0.0)  # what the meter shows at the end of the minute
        want = rule(now, grid)
        tally.switchings += want != on
        on = want
        if on:
            from_solar = min(load_w, max(0.0, solar - house))
            tally.solar_wh += from_solar * STEP_S / 3600
            tally.grid_wh += (load_w - from_solar) * STEP_S / 3600
    return tally


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="wattbus bench relay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=4, help="dates per sky (default 4, from --start)")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2024, 5, 20))
    ap.add_argument("--load-w", type=float, default=2000.0)
    args = ap.parse_args(argv)
    if not 1 <= args.days <= 60:
        ap.error("--days must be 1..60")
    dates = [args.start + timedelta(days=7 * i) for i in range(args.days)]  # weekly: seasons move a little
    cfg = msgspec.convert({"load_w": args.load_w, "surplus": {}, "output": {"kind": "mqtt", "command_topic": "x"}},
                          RelayConfig)
    rules = {"controller": controller(cfg), "naive": naive(args.load_w)}
    r = cfg.rules()
    print(f"relay bench: a {args.load_w:g} W load; controller: on at >= {r.surplus.on_export_w:g} W export for "
          f"{r.surplus.on_delay_s:g} s, off at > {r.surplus.off_import_w:g} W import for {r.surplus.off_delay_s:g} s, "
          f"min on/off {r.min_on_s:g}/{r.min_off_s:g} s, at most {r.max_switches_per_hour} switchings/h; "
          f"naive: no delays. Cost = grid kWh x {IMPORT_PRICE} + solar kWh x {EXPORT_PRICE} (feed-in given up)")
    head = f"{'day':28} {'rule':10} {'switchings':>10} {'solar kWh':>10} {'grid kWh':>9} {'cost EUR':>9}"
    print(head)
    print("-" * len(head))
    totals = {name: Tally() for name in rules}
    for day in [*sim_days(dates), *hhpc_days(dates)]:
        for name, make in rules.items():
            t = replay(day, make(), args.load_w)
            totals[name].add(t)
            print(f"{day.label:28} {name:10} {t.switchings:10d} {t.solar_wh / 1000:10.2f} {t.grid_wh / 1000:9.2f} "
                  f"{t.cost:9.2f}")
    print("-" * len(head))
    for name, t in totals.items():
        print(f"{'total':28} {name:10} {t.switchings:10d} {t.solar_wh / 1000:10.2f} {t.grid_wh / 1000:9.2f} "
              f"{t.cost:9.2f}")
    c, n = totals["controller"], totals["naive"]
    sw = c.switchings / n.switchings if n.switchings else float("nan")
    solar = c.solar_wh / n.solar_wh if n.solar_wh else float("nan")
    cost = c.cost / n.cost if n.cost else float("nan")
    print(f"controller / naive: switchings {sw:.1%} (target <= 10%), solar energy used {solar:.1%} "
          f"(target >= 95%), grid energy {c.grid_wh / 1000:.1f} vs {n.grid_wh / 1000:.1f} kWh, cost {cost:.0%} "
          f"(riding through passing clouds costs grid energy)")
    return 0
