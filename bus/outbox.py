"""The producer's bounded offline queue: readings wait here while the broker is unreachable.

The device loop only ever appends (never blocks on the network). A full queue drops the *oldest* waiting
message and counts it: the newest readings matter most to someone watching live. A message already handed to
the broker (taken, not yet acknowledged) is not dropped: it is on its way, and its acknowledgement removes it.
By default the queue lives in memory (no SD-card wear); with ``queue_dir`` it is an SQLite spool, so readings
survive a producer restart too, and a message leaves the spool only when the broker has acknowledged it.

``len()`` is what is still to be delivered: waiting messages, plus, on disk, the ones in flight.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import Protocol

Item = tuple[int, str, bytes, bool]  # (id, topic, payload, retain)


class Outbox(Protocol):
    dropped: int
    """Messages dropped because the queue was full (oldest first)."""

    def put(self, topic: str, payload: bytes, retain: bool = False) -> None: ...
    def take(self, n: int, timeout: float) -> list[Item]: ...
    def done(self, item_id: int) -> None: ...
    def requeue(self, items: list[Item]) -> None: ...
    def __len__(self) -> int: ...


class MemoryOutbox:
    def __init__(self, maxlen: int):
        self.maxlen = maxlen
        self.dropped = 0
        self._q: deque[Item] = deque()
        self._next = 0
        self._cv = threading.Condition()

    def put(self, topic: str, payload: bytes, retain: bool = False) -> None:
        with self._cv:
            if len(self._q) >= self.maxlen:
                self._q.popleft()
                self.dropped += 1
            self._next += 1
            self._q.append((self._next, topic, payload, retain))
            self._cv.notify()

    def take(self, n: int, timeout: float) -> list[Item]:
        with self._cv:
            if not self._q:
                self._cv.wait(timeout)
            out = []
            while self._q and len(out) < n:
                out.append(self._q.popleft())
            return out

    def done(self, item_id: int) -> None:
        pass

    def requeue(self, items: list[Item]) -> None:
        """Messages that could not be handed over go back where they were: oldest first."""
        with self._cv:
            self._q = deque(sorted([*items, *self._q], key=lambda item: item[0]))
            self._cv.notify()

    def __len__(self) -> int:
        return len(self._q)


class DiskOutbox:
    """SQLite spool; rows are deleted on PUBACK, so a crash re-sends (consumers are idempotent)."""

    def __init__(self, directory: str | Path, name: str, maxlen: int):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.maxlen = maxlen
        self.dropped = 0
        self._db = sqlite3.connect(Path(directory) / f"{name}.outbox.db", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "topic TEXT NOT NULL, payload BLOB NOT NULL, retain INTEGER NOT NULL)")
        self._cv = threading.Condition()
        self._taken: set[int] = set()
        self._count = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def put(self, topic: str, payload: bytes, retain: bool = False) -> None:
        with self._cv:
            if self._count - len(self._taken) >= self.maxlen:
                self._drop_oldest_waiting()
            self._db.execute("INSERT INTO outbox (topic, payload, retain) VALUES (?, ?, ?)",
                             (topic, payload, int(retain)))
            self._count += 1
            self._cv.notify()

    def take(self, n: int, timeout: float) -> list[Item]:
        with self._cv:
            if self._count - len(self._taken) <= 0:
                self._cv.wait(timeout)
            rows = self._db.execute(
                "SELECT id, topic, payload, retain FROM outbox ORDER BY id LIMIT ?", (n + len(self._taken),)
            ).fetchall()
            out = [(i, t, bytes(p), bool(r)) for i, t, p, r in rows if i not in self._taken][:n]
            self._taken.update(i for i, *_ in out)
            return out

    def done(self, item_id: int) -> None:
        with self._cv:
            self._taken.discard(item_id)
            self._count -= self._db.execute("DELETE FROM outbox WHERE id = ?", (item_id,)).rowcount

    def _drop_oldest_waiting(self) -> None:
        """Delete the oldest message not in flight (one in flight is acknowledged, or requeued, later)."""
        taken = sorted(self._taken)
        marks = ",".join("?" * len(taken))
        row = self._db.execute(f"SELECT min(id) FROM outbox WHERE id NOT IN ({marks})", taken).fetchone()
        if row[0] is not None:
            self._count -= self._db.execute("DELETE FROM outbox WHERE id = ?", row).rowcount
            self.dropped += 1

    def requeue(self, items: list[Item]) -> None:
        with self._cv:
            self._taken.difference_update(i for i, *_ in items)
            self._cv.notify()

    def __len__(self) -> int:
        return self._count
