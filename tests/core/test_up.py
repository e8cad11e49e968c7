"""``wattbus up``: every configured process as a child; a child that dies is restarted; SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import unique
from tests.support.processes import REPO, descendants_of, still_running, write_config


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_killed_child_is_restarted_and_sigterm_stops_everything(broker, collector_factory, seed_sample,
                                                                   tmp_path):
    house = unique("house")
    cfg = write_config(tmp_path / "wattbus.toml", broker, f"""
        [producer.{house}]
        type = "hhpc"
        dataset = "{seed_sample}"
        mode = "replay"

        [consumer.store]
        type = "store"
        sink = "sqlite:///{tmp_path / 'w.db'}"
        """)
    status = collector_factory(broker, f"wattbus/{house}/status")
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(cfg), "up"], stderr=log,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        def producer_pid() -> int | None:
            return next((pid for pid, cmd in descendants_of(up.pid).items() if f"run {house}" in cmd), None)

        first = wait_until(producer_pid, 20, "the producer child")
        status.wait_for(lambda: any(m == b"online" for _, m, _ in status.messages), what="online")
        os.kill(first, signal.SIGKILL)
        status.wait_for(lambda: status.messages[-1][1] == b"offline", what="offline (its last will)")
        second = wait_until(lambda: (pid := producer_pid()) and pid != first and pid, 20, "a new producer")
        status.wait_for(lambda: status.messages[-1][1] == b"online", what="online again")
        assert f"{house} exited with -9; restarting" in (tmp_path / "up.log").read_text()
        both = {pid for pid, cmd in descendants_of(up.pid).items() if " run " in cmd}
        assert second in both and len(both) == 2
        assert f"wattbus -c {cfg} run {house}" in descendants_of(up.pid)[second]  # ps shows what runs
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(30)
    assert code == 0
    assert not still_running(both), "SIGTERM stops every child"
