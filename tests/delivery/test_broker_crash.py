"""``kill -9`` of the broker in the middle of a replay: nothing the producer was told was delivered is lost.

Mosquitto 2.0 writes its state to disk only every ``autosave_interval`` (60 s as shipped), so a killed broker
comes back without what it acknowledged since. The producer keeps what the broker acknowledged for
``[mqtt] resend_window_s`` (75 s) and sends it again after every reconnect; the store's upserts absorb the
copies. These tests kill the real broker (the project's config) at ten random moments of a real hhpc replay
and count, against the dataset itself, what the store ends up with. They print their counts.

Before the first kill the test has Mosquitto save once (SIGUSR1), as any broker that has run for a minute
has: a consumer session younger than the broker's last save is not on disk, and a crash forgets it (see the
README's delivery section).
"""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import datetime

import pytest

from tests.delivery.common import dlq, expected_keys, report, stored, wait_until, write_dataset
from tests.support.mosquitto import Broker
from tests.support.mqtt import Collector
from tests.support.processes import write_config

MINUTES = 4 * 1440  # four days of the dataset: 5760 readings, as in the probe
SPEED = 11_520      # 192 readings a second: the replay takes 30 s


def _setup(tmp_path, broker, device: str):
    dataset = write_dataset(tmp_path / "hhpc.txt", datetime(2024, 3, 4), MINUTES)
    db = tmp_path / "store.db"
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.{device}]
        type = "hhpc"
        dataset = "{dataset}"
        mode = "replay"
        speed = {SPEED}
        batch = 60

        [consumer.store]
        type = "store"
        sink = "sqlite:///{db}"
        """)
    return dataset, db, cfg


def _save_now(broker: Broker) -> None:
    """SIGUSR1: Mosquitto writes its persistence file now (what its autosave does every 60 s)."""
    before = broker.dir / "wattbus.db"
    mtime = before.stat().st_mtime_ns if before.exists() else 0
    os.kill(broker.proc.pid, signal.SIGUSR1)
    wait_until(lambda: before.exists() and before.stat().st_mtime_ns != mtime, 10, "mosquitto to save")


def _kill_ten_times(broker: Broker, producer, seed: int) -> list[float]:
    rng = random.Random(seed)
    moments = sorted(rng.sample(range(10, 280), 10))  # tenths of a second into the replay, >= 0.1 s apart
    t0 = time.monotonic()
    for m in moments:
        time.sleep(max(0.0, t0 + m / 10 - time.monotonic()))
        broker.kill()
        broker.start()
    producer.wait_output("replay of", timeout=90)
    return [m / 10 for m in moments]


@pytest.mark.slow
def test_ten_kill_9_of_the_broker_during_a_replay_lose_nothing_and_store_nothing_twice(tmp_path, processes):
    broker = Broker(tmp_path / "mosquitto").start()
    try:
        device = "crashhouse"
        dataset, db, cfg = _setup(tmp_path, broker, device)
        store = processes(cfg, "store")
        store.wait_output("subscribed to +/+/reading")
        _save_now(broker)
        producer = processes(cfg, device)
        seed = random.randrange(1 << 30)
        moments = _kill_ten_times(broker, producer, seed)
        expected = expected_keys(dataset)
        wait_until(lambda: stored(db, device)[0] >= len(expected), 120, f"{len(expected)} stored readings")
        time.sleep(2)  # anything still on its way (a last re-send) would show now
        rows, distinct, keys = stored(db, device)
        lost = len(set(expected) - set(keys))
        report("broker kill -9 x10 during a replay, store running", seed=seed, kills=len(moments),
               sent=len(expected), stored=rows, lost=lost, duplicated=rows - distinct,
               unexpected=len(set(keys) - set(expected)),
               resent=producer.output().count("sending again"))
        assert lost == 0 and rows == distinct == len(expected) and keys == expected
        assert "sending again" in producer.output()  # the window did the work: the broker lost something
    finally:
        broker.kill()


@pytest.mark.slow
def test_ten_kill_9_of_the_broker_while_the_store_is_stopped_lose_nothing(tmp_path, processes):
    """The broker holds everything for the stopped store and is killed ten times meanwhile; the store,
    started after the replay, finds every reading queued (what the shipped config promises, measured)."""
    broker = Broker(tmp_path / "mosquitto").start()
    try:
        device = "crashhouse2"
        dataset, db, cfg = _setup(tmp_path, broker, device)
        store = processes(cfg, "store")
        store.wait_output("subscribed to +/+/reading")
        assert store.terminate() == 0
        _save_now(broker)
        producer = processes(cfg, device)
        seed = random.randrange(1 << 30)
        _kill_ten_times(broker, producer, seed)
        watcher = Collector(broker, "wattbus/dlq/#")
        processes(cfg, "store")
        expected = expected_keys(dataset)
        wait_until(lambda: stored(db, device)[0] >= len(expected), 120, f"{len(expected)} stored readings")
        time.sleep(2)
        rows, distinct, keys = stored(db, device)
        lost = len(set(expected) - set(keys))
        report("broker kill -9 x10 during a replay, store stopped", seed=seed, sent=len(expected),
               stored=rows, lost=lost, duplicated=rows - distinct, dlq=len(dlq(watcher, "store")))
        watcher.close()
        assert lost == 0 and rows == distinct == len(expected) and keys == expected
    finally:
        broker.kill()
