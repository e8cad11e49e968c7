"""The producer's offline queue (``bus.outbox``), in memory and on disk: order, a full queue dropping the
oldest waiting message and counting it, in-flight messages never dropped, and a count that never drifts.

A hypothesis state machine runs random sequences of what the sender and the device loop do (put, take, the
broker's acknowledgement, a failed hand-over) against a model of what the queue must hold.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bus.outbox import DiskOutbox, MemoryOutbox

MAXLEN = 5


def test_memory_queue_is_fifo_and_a_full_queue_drops_the_oldest_and_counts_it():
    q = MemoryOutbox(maxlen=3)
    for n in range(5):
        q.put("t", str(n).encode())
    assert q.dropped == 2 and len(q) == 3
    assert [item[2] for item in q.take(10, 0)] == [b"2", b"3", b"4"]


def test_disk_queue_survives_a_restart_until_acknowledged(tmp_path):
    q = DiskOutbox(tmp_path, "p", maxlen=10)
    for n in range(4):
        q.put("t", str(n).encode(), retain=n == 3)
    first, second = q.take(2, 0)
    q.done(first[0])  # acknowledged: gone; the second was in flight when the process died
    del q
    again = DiskOutbox(tmp_path, "p", maxlen=10)
    assert len(again) == 3
    assert [(t, p, r) for _, t, p, r in again.take(10, 0)] == [("t", b"1", False), ("t", b"2", False),
                                                                ("t", b"3", True)]


def test_a_full_disk_queue_never_drops_a_message_in_flight_so_its_ack_cannot_skew_the_count(tmp_path):
    q = DiskOutbox(tmp_path, "p", maxlen=3)
    for n in range(3):
        q.put("t", str(n).encode())
    in_flight = q.take(2, 0)  # handed to the broker, not acknowledged yet
    for n in range(3, 7):
        q.put("t", str(n).encode())  # full: the oldest *waiting* messages go
    assert q.dropped == 2
    for item in in_flight:
        q.done(item[0])  # the broker acknowledges them afterwards
    assert len(q) == 3 == _rows(tmp_path)
    assert [item[2] for item in q.take(10, 0)] == [b"4", b"5", b"6"]


def _rows(directory) -> int:
    with sqlite3.connect(directory / "p.outbox.db") as db:
        return db.execute("SELECT count(*) FROM outbox").fetchone()[0]


class OutboxMachine(RuleBasedStateMachine):
    """The queue against a model: ``waiting`` (id order), ``flying`` (taken, not acknowledged), ``dropped``.
    Both queues number messages 1, 2, 3... in the order they were put."""

    def __init__(self) -> None:
        super().__init__()
        self.q = self.make()
        self.n = 0
        self.waiting: list[tuple[int, bytes]] = []
        self.flying: dict[int, tuple] = {}  # id -> the item as taken
        self.dropped = 0

    def make(self):
        raise NotImplementedError

    def expected_len(self) -> int:
        return len(self.waiting)

    @rule(size=st.integers(1, 40))
    def put(self, size: int) -> None:
        self.n += 1
        payload = str(self.n).encode() * size
        if len(self.waiting) >= MAXLEN:
            self.waiting.pop(0)
            self.dropped += 1
        self.waiting.append((self.n, payload))
        self.q.put("dev/x/reading", payload)

    @rule(n=st.integers(1, 4))
    def take(self, n: int) -> None:
        got = self.q.take(n, 0)
        assert [(item[0], item[2]) for item in got] == self.waiting[:n]
        del self.waiting[:len(got)]
        self.flying.update({item[0]: item for item in got})

    @precondition(lambda self: self.flying)
    @rule(data=st.data())
    def acknowledge(self, data) -> None:
        item_id = data.draw(st.sampled_from(sorted(self.flying)))
        del self.flying[item_id]
        self.q.done(item_id)

    @precondition(lambda self: self.flying)
    @rule(data=st.data())
    def hand_over_fails(self, data) -> None:
        item_id = data.draw(st.sampled_from(sorted(self.flying)))
        item = self.flying.pop(item_id)
        self.q.requeue([item])
        self.waiting = sorted([*self.waiting, (item[0], item[2])])

    @invariant()
    def counts_agree(self) -> None:
        assert self.q.dropped == self.dropped
        assert len(self.q) == self.expected_len() >= 0


class MemoryMachine(OutboxMachine):
    def make(self):
        return MemoryOutbox(MAXLEN)


class DiskMachine(OutboxMachine):
    def make(self):
        import tempfile
        from pathlib import Path

        self.dir = Path(tempfile.mkdtemp(prefix="outbox-"))
        return DiskOutbox(self.dir, "p", MAXLEN)

    def expected_len(self) -> int:
        return len(self.waiting) + len(self.flying)  # on disk until acknowledged

    @invariant()
    def count_matches_the_spool(self) -> None:
        assert len(self.q) == _rows(self.dir)


TestMemoryOutbox = MemoryMachine.TestCase
TestDiskOutbox = DiskMachine.TestCase
TestMemoryOutbox.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestDiskOutbox.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("make", [lambda d: MemoryOutbox(2), lambda d: DiskOutbox(d, "p", 2)])
def test_take_waits_for_a_message_then_gives_up(make, tmp_path):
    q = make(tmp_path)
    assert q.take(1, 0.05) == []
    q.put("t", b"x")
    assert [item[2] for item in q.take(1, 0.05)] == [b"x"]
