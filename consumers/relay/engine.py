"""The relay's decisions, as a pure function of what it has seen and the time it is told.

Why pure: the same controller runs live (``service.py``), in ``wattbus bench relay`` over simulated days at
thousands of days per second, and in tests that step the clock by hand. Nothing here does I/O or reads a
clock; every answer carries the reason a user sees on ``relay/{name}/state``.

How the rules combine, in order of precedence:

1. manual mode (``on``/``off`` from ``relay/{name}/set``) wins, until it expires back to ``auto``;
2. in ``auto``, stale or missing input puts the relay in its safe state at once;
3. otherwise the relay wants to be on when any rule says so: a schedule window, the cheapest hours of the
   price window, or the surplus rule (export above ``on_export_w`` for ``on_delay``; it lets go after
   import above ``off_import_w`` for ``off_delay``);
4. an automatic change waits for the minimum on/off time and the cap on switchings per hour.

The surplus rule looks at the surplus the site would have without this relay's load, so the load it
switches on never counts against itself: with the relay on, that is grid export plus the load's own draw
(metered when a load device is configured, else the nominal ``load_w``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

MODES = ("auto", "on", "off")


class Window(Protocol):
    """A local-time window (``bus.tariff.Window``: days, from, to)."""

    def matches(self, weekday: int, minute: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Surplus:
    on_export_w: float
    off_import_w: float
    on_delay_s: float
    off_delay_s: float


@dataclass(frozen=True, slots=True)
class Cheapest:
    """On during the cheapest ``hours`` of each daily window ``start``..``end`` (local minutes)."""

    hours: float
    start: int
    end: int
    slot_s: int = 3600


@dataclass(frozen=True, slots=True)
class Rules:
    load_w: float = 0.0
    surplus: Surplus | None = None
    cheapest: Cheapest | None = None
    windows: tuple[Window, ...] = ()
    min_on_s: float = 0.0
    min_off_s: float = 0.0
    max_switches_per_hour: int = 0
    """0 = no cap."""
    safe_state: bool = False
    stale_after_s: float = 60.0
    manual_timeout_s: float = 0.0
    """0 = a manual mode stays until the next command."""


@dataclass(slots=True)
class Decision:
    on: bool
    reason: str


PriceAt = Callable[[int], "float | None"]
"""Import price per kWh at an epoch-ms instant, None when unknown."""


@dataclass
class Controller:
    """One relay. Feed it readings and commands, ask :meth:`decide` at any time, tell it what switched."""

    rules: Rules
    tz: ZoneInfo
    price_at: PriceAt | None = None
    on: bool = field(init=False)
    mode: str = field(default="auto", init=False)
    manual_until: float | None = field(default=None, init=False)
    since: float | None = field(default=None, init=False)
    """When the output last changed (None: not since start, so no minimum time holds)."""
    _grid: tuple[float, float] | None = field(default=None, init=False)
    _load: tuple[float, float] | None = field(default=None, init=False)
    _wants: bool = field(default=False, init=False)
    _pending_since: float | None = field(default=None, init=False)
    _switches: deque[float] = field(default_factory=deque, init=False)
    _cheap_cache: tuple[int, frozenset[int]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.on = self.rules.safe_state

    # -- input -----------------------------------------------------------------------------------
    def grid(self, ts_s: float, power_w: float) -> None:
        """Net grid power, import positive (DESIGN.md's sign for a ``grid`` device)."""
        if self._grid is None or ts_s >= self._grid[0]:
            self._grid = (ts_s, power_w)

    def load(self, ts_s: float, power_w: float) -> None:
        """The switched load's own draw, when a meter measures it."""
        if self._load is None or ts_s >= self._load[0]:
            self._load = (ts_s, max(0.0, power_w))

    def command(self, mode: str, now: float) -> None:
        """``on``/``off``: manual (expiring after ``manual_timeout_s``); ``auto``: back to the rules."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode[:40]!r}")
        self.mode = mode
        timeout = self.rules.manual_timeout_s
        self.manual_until = now + timeout if mode != "auto" and timeout > 0 else None

    def restore(self, mode: str, manual_until: float | None, now: float) -> None:
        """A manual mode from the retained state of a previous run, unless it has expired since."""
        if mode in ("on", "off") and (manual_until is None or manual_until > now):
            self.mode, self.manual_until = mode, manual_until

    def switched(self, on: bool, now: float) -> None:
        """The output confirmed ``on``: minimum times and the switch cap count from here."""
        if on != self.on:
            self.on, self.since = on, now
            self._switches.append(now)

    def prices_changed(self) -> None:
        """New dynamic prices: the cheapest hours are chosen again."""
        self._cheap_cache = None

    # -- the decision ------------------------------------------------------------------------------
    def decide(self, now: float) -> Decision:
        """What the output should be now, and why. Call it on every reading and on a clock tick."""
        note = ""
        if self.manual_until is not None and now >= self.manual_until:
            note = f"manual {self.mode} expired, back to auto: "
            self.mode, self.manual_until, self._pending_since = "auto", None, None
        if self.mode != "auto":
            return Decision(self.mode == "on", f"manual {self.mode}")
        stale = self._stale(now)
        if stale:
            self._wants, self._pending_since = self.rules.safe_state, None
            return Decision(self.rules.safe_state, f"{note}safe state: {stale}")
        want, why = self._auto(now)
        hold = self._hold(now) if want != self.on else ""
        return Decision(self.on, note + hold) if hold else Decision(want, note + why)

    # -- internals ---------------------------------------------------------------------------------
    def _stale(self, now: float) -> str:
        if self.rules.surplus is None:
            return ""
        if self._grid is None:
            return "no grid reading yet"
        age = now - self._grid[0]
        if age > self.rules.stale_after_s:
            return f"grid reading {age:.0f} s old (stale_after {self.rules.stale_after_s:g} s)"
        return ""

    def _local(self, now: float) -> datetime:
        return datetime.fromtimestamp(now, self.tz)

    def _auto(self, now: float) -> tuple[bool, str]:
        local = self._local(now)
        minute = local.hour * 60 + local.minute
        for w in self.rules.windows:
            if w.matches(local.weekday(), minute):
                return True, "schedule window"
        if self.rules.cheapest is not None and self._in_cheapest(now, local):
            return True, f"cheapest {self.rules.cheapest.hours:g} h of the price window"
        if self.rules.surplus is not None:
            return self._surplus(now)
        return False, "no rule wants it on"

    def surplus_w(self) -> float:
        """The export the site would have without this relay's load (negative: import)."""
        grid = self._grid[1] if self._grid is not None else 0.0
        own = 0.0
        if self.on:
            own = self._load[1] if self._load is not None else self.rules.load_w
        return own - grid

    def _surplus(self, now: float) -> tuple[bool, str]:
        rule = self.rules.surplus
        assert rule is not None
        surplus = self.surplus_w()
        expected = self._load[1] if (self.on and self._load is not None) else self.rules.load_w
        if not self._wants:
            crossing, delay = surplus >= rule.on_export_w, rule.on_delay_s
            what = f"surplus {surplus:.0f} W >= {rule.on_export_w:g} W"
        else:
            crossing, delay = expected - surplus > rule.off_import_w, rule.off_delay_s
            what = f"import {expected - surplus:.0f} W > {rule.off_import_w:g} W"
        if not crossing:
            self._pending_since = None
            return self._wants, ("solar surplus" if self._wants else "waiting for surplus")
        if self._pending_since is None:
            self._pending_since = now
        held = now - self._pending_since
        if held >= delay:
            self._wants, self._pending_since = not self._wants, None
            return self._wants, f"{what} for {held:.0f} s"
        return self._wants, f"{what} for {held:.0f} of {delay:g} s"

    def _hold(self, now: float) -> str:
        """Why an automatic change must wait, or ''."""
        r = self.rules
        if self.since is not None:
            least = r.min_on_s if self.on else r.min_off_s
            left = least - (now - self.since)
            if left > 0:
                return f"{'on' if self.on else 'off'} for at least {least:g} s ({left:.0f} s left)"
        if r.max_switches_per_hour:
            while self._switches and self._switches[0] <= now - 3600:
                self._switches.popleft()
            if len(self._switches) >= r.max_switches_per_hour:
                return f"switch cap: {len(self._switches)} switchings in the last hour"
        return ""

    def _in_cheapest(self, now: float, local: datetime) -> bool:
        rule = self.rules.cheapest
        assert rule is not None
        start = self._window_start(local, rule)
        if start is None:
            return False
        begin = start.timestamp()
        key = int(begin)
        if self._cheap_cache is None or self._cheap_cache[0] != key:
            self._cheap_cache = (key, self._cheapest_slots(begin, start, rule))
        slot = int((now - begin) // rule.slot_s)
        return slot in self._cheap_cache[1]

    @staticmethod
    def _window_start(local: datetime, rule: Cheapest) -> datetime | None:
        """The local start of the price window containing ``local``, or None outside it."""
        minute = local.hour * 60 + local.minute
        day = local.date()
        if rule.start < rule.end:
            if not rule.start <= minute < rule.end:
                return None
        elif minute < rule.end:
            day -= timedelta(days=1)  # the part of last night's window after midnight
        elif minute < rule.start:
            return None
        return (datetime.combine(day, time()) + timedelta(minutes=rule.start)).replace(tzinfo=local.tzinfo)

    def _cheapest_slots(self, begin: float, start: datetime, rule: Cheapest) -> frozenset[int]:
        length_min = (rule.end - rule.start) % 1440 or 1440
        end = (start.replace(tzinfo=None) + timedelta(minutes=length_min)).replace(tzinfo=start.tzinfo)
        n = max(0, int(math.ceil((end.timestamp() - begin) / rule.slot_s)))
        priced = []
        for i in range(n):
            p = self.price_at(int((begin + i * rule.slot_s) * 1000)) if self.price_at else None
            priced.append((p if p is not None else math.inf, i))
        take = int(round(rule.hours * 3600 / rule.slot_s))
        known = sorted(x for x in priced if x[0] != math.inf)
        return frozenset(i for _, i in known[:take])
