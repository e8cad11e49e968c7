"""The aggregation engine: readings in, changed buckets out. No MQTT here (the consumer and bench drive it).

Per device it keeps the newest reading (the *tail*, where the next span starts), the *holes* (spans longer
than ``hole`` whose end points it keeps while late readings may still fill them: the Shelly backfill of an
outage), and the buckets that can still change. 15-minute slots get the readings' contributions
(``energy.py``); every coarser bucket is recomputed as the sum of its children whenever one of them changed,
so a bucket is always a pure function of the readings, however they were batched.

A reading at or before the tail is either a duplicate (redelivery after a crash, a replay played twice: it
lands on or between readings already counted) and is ignored, or it falls inside a hole and is slotted in: the
hole's span is taken out and the two new spans put in, exactly. A reading for a ``closed`` bucket (older than
``grace``) is counted in the bucket's ``late`` and not applied.

Time for a bucket's status is the device's data time (its newest reading), or the wall clock while the device
is live: so replaying last year closes buckets as it goes, and a meter that falls silent still sees its
buckets close.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bus.envelope import Reading
from bus.log import RateLimitedLog
from bus.rollup import PERIODS, SITE_SOURCE, Bucket
from bus.sinks.base import Sink
from bus.tariff import Tariff
from consumers.aggregate.accum import DEMAND_DIV, Acc, from_bucket, to_bucket
from consumers.aggregate.balance import Site, site_slot
from consumers.aggregate.calendar import CHILD, Calendar
from consumers.aggregate.energy import (
    COST,
    CWS,
    IMP,
    LATE,
    R_BIT,
    SLOT_MS,
    TAR,
    TS,
    P,
    Point,
    R,
    Rules,
    point,
    span,
    spread,
    virtual,
)
from consumers.aggregate.pricing import capacity_charge, fixed_charge, price_device_slot


def _end(hole: tuple[int, int | None]) -> int:
    """A hole's sort key: its end. Compared by end alone, since its start may be None (open)."""
    return hole[0]


NEVER = 2**62
DAY_MS = 86_400_000
LEVELS = ("1h", "1d", "1w", "1mo", "1y")
CLOSED_HOLES = 10_000


@dataclass(frozen=True)
class Settings:
    grace_ms: int = 7 * DAY_MS
    """A bucket is final (``closed``) this long after its end; later readings are counted, not applied."""
    hole_ms: int = 60_000
    """A span longer than this may still be filled by late readings (the Shelly backfill fills > 60 s)."""
    complete: float = 0.99
    """Coverage from which a bucket that is over is ``complete`` rather than ``partial``."""
    max_future_ms: int = 400 * DAY_MS
    """Readings stamped further ahead of the wall clock are refused (one would freeze the device). Generous:
    a simulated meter running faster than real time is ahead of the clock on purpose."""
    restore_wait_s: float = 30.0
    """At start, how long to wait for the store to hold the readings counted before the stop."""
    rules: Rules = Rules()


class DeviceState:
    """Everything the engine knows about one device (or the site)."""

    def __init__(self, source: str, device: str, role: str | None):
        self.source, self.device, self.role = source, device, role
        self.tail: Point | None = None
        self.hwm: int | None = None
        self.holes: list[tuple[int, int | None]] = []  # (end, start) of spans late readings may fill, sorted
        self.pts: dict[int, Point] = {}  # the end points of the holes
        self.closed_holes: list[tuple[int, int | None]] = []  # holes behind the closed frontier: only to tell
        # a late reading (counted in `late`) from a duplicate
        self.slots: dict[int, Acc] = {}
        self.parents: dict[tuple[str, int], Acc] = {}
        self.changed: set[int] = set()  # slots changed by readings since the last settle
        self.dirty: list[Acc] = []
        self.persisted: int | None = None  # the sink may hold buckets that start at or before this
        self.loaded_from: dict[str, int] = {}  # per period: everything from here on is in memory
        self.latest: dict[str, int] = {}  # per period: newest start written (only that one is retained)
        self.initialized = False
        self.restored = False  # history found in the sink
        self.live = False  # its newest reading was recent when it came: the wall clock is its time too

    @property
    def key(self) -> tuple[str, str]:
        return self.source, self.device

    def all(self) -> Iterable[Acc]:
        yield from self.slots.values()
        yield from self.parents.values()


class Engine:
    def __init__(self, calendar: Calendar, *, settings: Settings = Settings(), tariff: Tariff | None = None,
                 site: Site | None = None, rollups: Sink | None = None, readings: Sink | None = None,
                 log: logging.Logger | None = None, clock: Callable[[], float] = time.time):
        self.cal, self.s, self.tariff, self.site = calendar, settings, tariff, site
        self.rollups, self.readings = rollups, readings
        self.log = log or logging.getLogger("wattbus.aggregate")
        self.clock = clock
        self.roles = site.roles() if site else {}
        self.devices: dict[tuple[str, str], DeviceState] = {}
        self.site_state = DeviceState(SITE_SOURCE, site.name, None) if site else None
        self.members = set(site.members) if site else set()
        self.site_changed: set[int] = set()
        self.rejected: list[tuple[Reading, str]] = []
        self.events = RateLimitedLog(self.log, every=60.0)
        self.counters: dict[str, int] = {k: 0 for k in (
            "readings", "duplicates", "late_filled", "late_closed", "counter_resets", "future_refused",
            "buckets_written", "restored_devices")}
        self.currency = tariff.currency if tariff else None

    # -- input ---------------------------------------------------------------------------------------
    def feed(self, readings: list[Reading]) -> None:
        """Take a batch (any devices, any order). Raises SinkError when the sink is needed and down:
        nothing is then half-applied for a device being restored, and readings already applied are
        duplicates on retry."""
        groups: dict[tuple[str, str], list[Reading]] = {}
        for r in readings:
            groups.setdefault((r.source, r.device), []).append(r)
        wall = int(self.clock() * 1000)
        if self.site_state is not None and not self.site_state.initialized:
            self._restore(self.site_state, wall)
        for key, rs in groups.items():
            dev = self._device(key, wall)
            self._feed(dev, rs, wall)
            self.counters["readings"] += len(rs)
        self._settle(wall)

    def _device(self, key: tuple[str, str], wall: int) -> DeviceState:
        """The device's state, restored from the sink the first time it is needed (installed only once
        the restore succeeded)."""
        dev = self.devices.get(key)
        if dev is None:
            dev = DeviceState(key[0], key[1], self.roles.get(key))
            self._restore(dev, wall)
            self.devices[key] = dev
        return dev

    def _getter(self, dev: DeviceState) -> Callable[[int], Acc]:
        slots, changed = dev.slots, dev.changed

        def get(start: int) -> Acc:
            acc = slots.get(start)
            if acc is None:
                acc = self._bucket(dev, "15m", start)
            changed.add(start)
            return acc

        return get

    def _frontier(self, dev: DeviceState, wall: int) -> int | None:
        """Slots that start before this are closed (None: nothing is)."""
        now = self.now(dev, wall)
        return None if now is None else (now - self.s.grace_ms) // SLOT_MS * SLOT_MS

    def _feed(self, dev: DeviceState, rs: list[Reading], wall: int) -> None:
        fs = self._frontier(dev, wall)
        if len(rs) > 1:
            rs.sort(key=_ts)
        get = self._getter(dev)
        rules, hole_ms = self.s.rules, self.s.hole_ms
        i, n = 0, len(rs)
        if dev.hwm is not None:
            while i < n and rs[i].ts <= dev.hwm:
                self._late(dev, rs[i], fs, get)
                i += 1
        prev = dev.tail
        last = prev[TS] if prev is not None else dev.hwm
        max_ts = wall + self.s.max_future_ms
        holes, pts = dev.holes, dev.pts
        cs, acc, v = -1, None, None  # the slot readings are going into, its accumulator and sums
        for r in rs[i:] if i else rs:
            ts = r.ts
            if ts == last:
                self.counters["duplicates"] += 1
                continue
            if ts > max_ts:
                self.counters["future_refused"] += 1
                self.rejected.append((r, f"ts {ts} is more than {self.s.max_future_ms // 1000} s ahead of "
                                         "the clock; a reading from the future would freeze the device's "
                                         "buckets"))
                continue
            s = (ts - 1) // SLOT_MS * SLOT_MS
            if fs is not None and s < fs:
                self._late_closed(dev, r)
                continue
            cur = point(r)
            if prev is None:
                if not dev.restored:
                    holes.append((ts, None))  # before the first reading ever seen: still fillable
                    pts[ts] = cur
            elif fs is not None and prev[TS] < fs:
                prev = virtual(prev, cur, fs)  # the span reaches into closed buckets: they keep what they had
            lo, citems, c0, vitems, bits, resets = span(prev, cur, rules)
            if resets:
                self._resets(dev, resets, ts)
            if s != cs:
                cs, acc = s, get(s)
                v = acc.v
            if lo >= s and c0 >= s:  # the whole span in this reading's slot: add in place
                for f, x in citems:
                    v[f] += x  # type: ignore[index]
                for f, x in vitems:
                    v[f] += x  # type: ignore[index]
            else:  # closed slots (before fs) keep what they had: a period reaching back into them is cut
                if citems:
                    spread(lo, ts, citems, 1, get, fs)
                if vitems:
                    spread(c0, ts, vitems, 1, get, fs)
                bits = 0
            v[R] += 1  # type: ignore[index]
            acc.known |= bits | R_BIT  # type: ignore[union-attr]
            p = cur[P]
            if p is not None:
                if acc.pmin is None or p < acc.pmin:  # type: ignore[union-attr]
                    acc.pmin = p  # type: ignore[union-attr]
                if acc.pmax is None or p > acc.pmax:  # type: ignore[union-attr]
                    acc.pmax = p  # type: ignore[union-attr]
            acc.last_ts = ts  # type: ignore[union-attr]
            if cur[TAR] is not None:
                acc.tar, acc.tar_ts = cur[TAR], ts  # type: ignore[union-attr]
            if prev is not None and ts - prev[TS] > hole_ms:
                holes.append((ts, prev[TS]))
                pts[prev[TS]] = prev
                pts[ts] = cur
            prev, last = cur, ts
        dev.tail, dev.hwm = prev, last
        if last is not None and i < n:
            dev.live = wall - last < max(self.s.grace_ms, DAY_MS)

    @staticmethod
    def _add_point(get: Callable[[int], Acc], cur: Point) -> None:
        ts = cur[TS]
        acc = get((ts - 1) // SLOT_MS * SLOT_MS)
        acc.v[R] += 1
        acc.known |= 1 << R
        p = cur[P]
        if p is not None:
            if acc.pmin is None or p < acc.pmin:
                acc.pmin = p
            if acc.pmax is None or p > acc.pmax:
                acc.pmax = p
        if acc.last_ts is None or ts > acc.last_ts:
            acc.last_ts = ts
        if cur[TAR] is not None and ts > acc.tar_ts:
            acc.tar, acc.tar_ts = cur[TAR], ts

    def _resets(self, dev: DeviceState, n: int, ts: int) -> None:
        self.counters["counter_resets"] += n
        self.events.warning(f"reset:{dev.source}/{dev.device}", "%s/%s: counter reset or meter swap before "
                            "%s (went down, or up faster than %.0f W could deliver): that span's counter "
                            "energy is not counted", dev.source, dev.device, _iso(ts),
                            self.s.rules.max_power_w)

    def _late(self, dev: DeviceState, r: Reading, fs: int | None, get: Callable[[int], Acc]) -> None:
        c = r.ts
        if c in dev.pts or (dev.tail is not None and c == dev.tail[TS]):
            self.counters["duplicates"] += 1
            return
        i = bisect.bisect_right(dev.holes, c, key=_end)
        start = dev.holes[i][1] if i < len(dev.holes) else None
        if i == len(dev.holes) or (start is not None and start >= c):
            j = bisect.bisect_right(dev.closed_holes, c, key=_end)
            if j < len(dev.closed_holes) and (dev.closed_holes[j][1] or -1) < c:
                self._late_closed(dev, r)  # in an outage whose buckets are closed by now
            else:
                self.counters["duplicates"] += 1  # on ground already counted: a redelivery or a revision
            return
        if fs is not None and (c - 1) // SLOT_MS * SLOT_MS < fs:
            self._late_closed(dev, r)
            return
        b, a = dev.holes[i]
        B = dev.pts[b]
        A = dev.pts[a] if a is not None else None
        if A is not None and fs is not None and A[TS] < fs:  # cut the hole where the closed buckets end
            V = virtual(A, B, fs)
            self._span(A, B, -1, get, fs)
            self._span(V, B, 1, get, fs)
            dev.holes[i] = (b, fs)
            dev.pts[fs] = V
            A, a = V, fs
        cur = point(r)
        self._span(A, B, -1, get, fs)
        self._span(A, cur, 1, get, fs)
        self._span(cur, B, 1, get, fs)
        self._add_point(get, cur)
        new: list[tuple[int, int | None]] = []
        if a is None or c - a > self.s.hole_ms:
            new.append((c, a))
        if b - c > self.s.hole_ms:
            new.append((b, c))
        dev.holes[i:i + 1] = new
        dev.pts[c] = cur
        self.counters["late_filled"] += 1

    def _span(self, prev: Point | None, cur: Point, sign: int, get: Callable[[int], Acc],
              min_slot: int | None) -> None:
        lo, citems, c0, vitems, _, _ = span(prev, cur, self.s.rules)
        spread(lo, cur[TS], citems, sign, get, min_slot)
        spread(c0, cur[TS], vitems, sign, get, min_slot)

    def _late_closed(self, dev: DeviceState, r: Reading) -> None:
        """A reading for a closed bucket: counted in ``late`` of the bucket and its parents, not applied."""
        self.counters["late_closed"] += 1
        slot = (r.ts - 1) // SLOT_MS * SLOT_MS
        for period, start in (("15m", slot), *self.cal.ancestors("15m", slot)):
            acc = self._bucket(dev, period, start)
            acc.v[LATE] += 1
            self._dirty(dev, acc)
        self.events.warning(f"late:{dev.source}/{dev.device}", "%s/%s: reading at %s arrived after its "
                            "buckets closed (grace %.0f h): counted as late, not applied", dev.source,
                            dev.device, _iso(r.ts), self.s.grace_ms / 3.6e6)

    # -- buckets in memory and in the sink ------------------------------------------------------------
    def _bucket(self, dev: DeviceState, period: str, start: int, create: bool = True) -> Acc | None:
        store = dev.slots if period == "15m" else dev.parents
        key = start if period == "15m" else (period, start)
        acc = store.get(key)  # type: ignore[call-overload]
        if acc is None:
            lo = dev.loaded_from.get(period, NEVER)
            if self.rollups is not None and dev.persisted is not None and start <= dev.persisted \
                    and start < lo:
                self._load(dev, period, start, lo)
                acc = store.get(key)  # type: ignore[call-overload]
            if acc is None and create:
                acc = Acc(period, start, self.cal.end(period, start))
                store[key] = acc  # type: ignore[index]
        return acc

    def _load(self, dev: DeviceState, period: str, lo: int, hi: int) -> None:
        assert self.rollups is not None
        for b in self.rollups.read_buckets(dev.source, dev.device, period, lo, hi):
            acc = from_bucket(b)
            if period == "15m":
                dev.slots.setdefault(acc.start, acc)
            else:
                dev.parents.setdefault((period, acc.start), acc)
        dev.loaded_from[period] = min(lo, dev.loaded_from.get(period, NEVER))

    def _restore(self, dev: DeviceState, wall: int) -> None:
        """Pick up where a previous run stopped: buckets from the rollups table, the tail and the holes
        from the stored readings. Without history this is a new device and nothing is read."""
        if self.rollups is None:
            dev.initialized = True
            return
        years = self.rollups.read_buckets(dev.source, dev.device, "1y", 0, NEVER)
        lasts = [int(y.last_ts) for y in years if y.last_ts is not None]
        if not years:
            dev.initialized = True
            return  # a new device: a first reading may still be preceded by older ones (a head hole)
        hwm = max(lasts) if lasts else max(y.end for y in years)
        dev.persisted = max(y.end for y in years)
        dev.hwm = hwm
        t0 = max(0, (self.now(dev, wall) or hwm) - self.s.grace_ms - SLOT_MS)
        froms = {"1y": 0, "1mo": self.cal.bucket_start("1y", t0),
                 "1w": self.cal.bucket_start("1w", t0),
                 "1d": min(self.cal.bucket_start("1mo", t0), self.cal.bucket_start("1w", t0)),
                 "1h": self.cal.bucket_start("1d", t0), "15m": self.cal.bucket_start("1h", t0)}
        for period in PERIODS:
            self._load(dev, period, froms[period], NEVER)
        for acc in dev.all():
            dev.latest[acc.period] = max(dev.latest.get(acc.period, acc.start), acc.start)
        if dev.source != SITE_SOURCE:
            self._restore_chain(dev, hwm, t0, wall)
        # A sink without transactions may have stopped half-way through a write: make every bucket that can
        # still change the sum of its children again.
        fs = self._frontier(dev, wall)
        touched = [s for s in dev.slots if fs is None or s >= fs]
        self._recompute_parents(dev, touched, wall, repair=True)
        dev.initialized = dev.restored = True
        self.counters["restored_devices"] += 1
        self.log.info("%s/%s: restored from %s: newest reading %s, %d holes to fill", dev.source, dev.device,
                      self.rollups.describe(), _iso(hwm), len(dev.holes))

    def _restore_chain(self, dev: DeviceState, hwm: int, t0: int, wall: int) -> None:
        """The tail (the reading at ``hwm``) and the holes since ``t0`` from the store's raw readings."""
        if self.readings is None:
            self.log.warning("%s/%s: no readings to resume from (no store sink): the span across the "
                             "restart is a gap", dev.source, dev.device)
            return
        deadline = time.monotonic() + self.s.restore_wait_s
        while True:  # streamed: a week of one-second readings must not sit in memory, only the holes' ends
            counts: dict[int, int] = {}
            holes: list[tuple[int, int | None]] = []
            ends: dict[int, Point] = {}
            prev = None
            for r in self.readings.read(dev.source, dev.device, t0, hwm + 1):
                p = point(r)
                s = (p[TS] - 1) // SLOT_MS * SLOT_MS
                counts[s] = counts.get(s, 0) + 1
                if prev is not None and p[TS] - prev[TS] > self.s.hole_ms:
                    holes.append((p[TS], prev[TS]))
                    ends[prev[TS]] = prev
                    ends[p[TS]] = p
                prev = p
            short = {s for s, acc in dev.slots.items() if s >= t0 and counts.get(s, 0) < acc.v[R]}
            if prev is not None and prev[TS] == hwm and not short:
                break
            if time.monotonic() > deadline:
                self.log.error("%s/%s: the store (%s) does not hold the readings counted before the "
                               "restart (newest %s); continuing without them: the span across the restart is "
                               "a gap and late readings before it are not filled in", dev.source, dev.device,
                               self.readings.describe(), _iso(hwm))
                return
            time.sleep(0.5)
        dev.holes, dev.pts, dev.tail = holes, ends, prev

    # -- settling a batch: slot prices, the site, parents, statuses ----------------------------------
    def _settle(self, wall: int) -> None:
        tariff = self.tariff
        for dev in self.devices.values():
            if not dev.changed:
                continue
            for s in dev.changed:
                acc = dev.slots[s]
                acc.peak = acc.v[IMP] / DEMAND_DIV if acc.has(IMP) else None
                price_device_slot(acc, tariff, dev.role)
                self._dirty(dev, acc)
            if dev.key in self.members:
                self.site_changed.update(dev.changed)
            self._recompute_parents(dev, dev.changed, wall)
            dev.changed = set()
        site = self.site_state
        if site is not None and self.site_changed:
            fs = self._frontier(site, wall)
            changed = []
            for s in self.site_changed:
                if fs is not None and s < fs:
                    continue
                acc = self._bucket(site, "15m", s)
                self._site_slot(acc)
                self._dirty(site, acc)
                changed.append(s)
            self.site_changed = set()
            self._recompute_parents(site, changed, wall)
        for dev in self._states():
            self._statuses(dev, wall)

    def _site_slot(self, acc: Acc) -> None:
        assert self.site is not None

        wall = int(self.clock() * 1000)

        def member(key: tuple[str, str]) -> Acc | None:
            # a member that has not reported since the start may still have this slot in the sink
            return self._bucket(self._device(key, wall), "15m", acc.start, create=False)

        site_slot(acc, [member(k) for k in self.site.grid], [member(k) for k in self.site.solar],
                  [member(k) for k in self.site.battery], self.tariff)

    def _recompute_parents(self, dev: DeviceState, slots: Iterable[int], wall: int,
                           repair: bool = False) -> None:
        """Every coarser bucket over the given slots becomes the sum of its children again, finest first."""
        current = {self.cal.parents_of_slot(s)[0] for s in slots}
        level_sets: dict[str, set[int]] = {"1h": current}
        for period in LEVELS:
            starts = level_sets.get(period, set())
            for start in starts:
                acc = self._bucket(dev, period, start)
                before = acc.content() if repair else None
                child = CHILD[period]
                kids = [k for k in (self._bucket(dev, child, cs, create=False)
                                    for cs in self.cal.children(period, start)) if k is not None]
                acc.set_sum(kids)
                self._extras(dev, acc)
                if not repair or acc.content() != before:
                    self._dirty(dev, acc)
                for p, ps in self._up(period, start):
                    level_sets.setdefault(p, set()).add(ps)

    def _up(self, period: str, start: int) -> list[tuple[str, int]]:
        """The buckets that sum this one (15m -> 1h -> 1d -> 1w and 1mo; 1mo -> 1y)."""
        if period == "15m":
            return [("1h", self.cal.parents_of_slot(start)[0])]
        if period == "1h":
            return [("1d", self.cal.parent("1h", start)[1])]  # type: ignore[index]
        if period == "1d":
            a = self.cal.ancestors("1d", start)
            return [x for x in a if x[0] in ("1w", "1mo")]
        if period == "1mo":
            return [("1y", self.cal.parent("1mo", start)[1])]  # type: ignore[index]
        return []

    def _extras(self, dev: DeviceState, acc: Acc) -> None:
        """The site's fixed charge (per day with data) and capacity charge (per month), on top of the sums."""
        if dev.source != SITE_SOURCE or self.tariff is None:
            return
        extra = 0
        if acc.period == "1d" and acc.v[R] > 0:
            extra = fixed_charge(self.tariff)
        elif acc.period == "1mo" and acc.v[R] > 0:
            extra = capacity_charge(self.tariff, acc.peak)
        if extra:
            acc.v[COST] += extra
            acc.v[CWS] += extra
            acc.known |= 1 << COST | 1 << CWS

    # -- statuses and output -------------------------------------------------------------------------
    def now(self, dev: DeviceState, wall: int) -> int | None:
        """The device's time: its newest reading; for a live device (its newest reading was recent when it
        came) the wall clock when that is later, so a meter that falls silent still sees its buckets close."""
        if dev.source == SITE_SOURCE:
            nows = [n for n in (self.now(d, wall) for d in (self.devices.get(k) for k in self.members)
                                if d is not None) if n is not None]
            return min(nows) if nows else None
        h = dev.hwm
        if h is None:
            return None
        return max(h, wall) if dev.live else h

    def status(self, acc: Acc, now: int | None) -> str:
        if now is None or acc.end > now:
            return "open"
        if acc.end + self.s.grace_ms <= now:
            return "closed"
        return "complete" if acc.v[1] >= self.s.complete * (acc.end - acc.start) else "partial"

    def _statuses(self, dev: DeviceState, wall: int) -> None:
        now = self.now(dev, wall)
        for acc in dev.all():
            if acc.status != "closed" and not acc.dirty and self.status(acc, now) != acc.status:
                self._dirty(dev, acc)

    @staticmethod
    def _dirty(dev: DeviceState, acc: Acc) -> None:
        if not acc.dirty:
            acc.dirty = True
            acc.rev += 1
            dev.dirty.append(acc)

    def _states(self) -> list[DeviceState]:
        return [*self.devices.values(), *([self.site_state] if self.site_state is not None else [])]

    def tick(self) -> None:
        """Re-check statuses by the wall clock (a silent live device's buckets close)."""
        wall = int(self.clock() * 1000)
        for dev in self._states():
            self._statuses(dev, wall)

    def pending(self) -> list[tuple[Bucket, bool]]:
        """Every changed bucket as (record, retain), not yet marked written (a failed write is retried)."""
        wall = int(self.clock() * 1000)
        out = []
        for dev in self._states():
            now = self.now(dev, wall)
            for acc in dev.dirty:
                st = self.status(acc, now)
                if acc.label is None:
                    acc.label = self.cal.label(acc.period, acc.start)
                b = to_bucket(acc, dev.source, dev.device, acc.label, st, self.currency)
                out.append((b, acc.start >= dev.latest.get(acc.period, -1)))
        return out

    def written(self) -> None:
        """The pending buckets are in the sink: forget them, and drop what can no longer change."""
        wall = int(self.clock() * 1000)
        for dev in self._states():
            if not dev.dirty:
                continue
            now = self.now(dev, wall)
            closed = False
            for acc in dev.dirty:
                acc.dirty = False
                acc.status = self.status(acc, now)
                closed |= acc.status == "closed"
                if acc.start > dev.latest.get(acc.period, -1):
                    dev.latest[acc.period] = acc.start
            self.counters["buckets_written"] += len(dev.dirty)
            dev.dirty = []
            if closed:
                self._evict(dev, wall)

    def _evict(self, dev: DeviceState, wall: int) -> None:
        """Drop closed buckets whose every parent is closed too (nothing can need them), oldest first, and the
        holes behind the closed frontier."""
        now = self.now(dev, wall)
        if now is None:
            return
        limit = now - self.s.grace_ms

        def gone(period: str, start: int, end: int) -> bool:
            """Closed, and so is every bucket that sums it (its parents): nothing will ask for it again."""
            return end <= limit and all(self.cal.end(p, s) <= limit for p, s in self._up(period, start))

        for period in PERIODS:
            if period == "15m":
                starts = sorted(dev.slots)
                store: dict = dev.slots
                keys = starts
            else:
                starts = sorted(s for p, s in dev.parents if p == period)
                store = dev.parents
                keys = [(period, s) for s in starts]
            cut = 0
            for s, k in zip(starts, keys):
                acc = store[k]
                if acc.dirty or not gone(period, s, acc.end):
                    break
                cut += 1
            if cut:
                for k in keys[:cut]:
                    del store[k]
                end = starts[cut - 1] + 1
                dev.loaded_from[period] = max(dev.loaded_from.get(period, end), end)
                dev.persisted = max(dev.persisted or 0, end)
        fs = (now - self.s.grace_ms) // SLOT_MS * SLOT_MS - self.s.grace_ms
        if dev.holes and dev.holes[0][0] < fs:
            dev.closed_holes += [h for h in dev.holes if h[0] < fs]
            del dev.closed_holes[:-CLOSED_HOLES]
            dev.holes = [h for h in dev.holes if h[0] >= fs]
            keep = {h[0] for h in dev.holes} | {h[1] for h in dev.holes}
            dev.pts = {t: p for t, p in dev.pts.items() if t in keep}

    # -- prices that arrive later ----------------------------------------------------------------------
    def reprice(self, lo: int, hi: int) -> None:
        """New dynamic prices for ``[lo, hi)``: price again the slots there that can still change."""
        wall = int(self.clock() * 1000)
        for dev in self.devices.values():
            if dev.role not in ("grid", "load"):
                continue
            fs = self._frontier(dev, wall)
            for s in dev.slots:
                if lo - SLOT_MS < s < hi and (fs is None or s >= fs):
                    dev.changed.add(s)
        self._settle(wall)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counters)


def _ts(r: Reading) -> int:
    return r.ts


def _iso(ts: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts / 1000, timezone.utc).isoformat(timespec="seconds")

