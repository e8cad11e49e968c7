"""Fixtures: a real Mosquitto from the project's config on a free port, configs, processes, collectors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.mosquitto import Broker
from tests.support.mqtt import Collector
from tests.support.processes import WattbusProcess, write_config

SEED_SAMPLE = Path(__file__).resolve().parent / "hhpc" / "fixtures" / "seed_sample.txt"
"""The seed document's ten dataset rows (tests/hhpc/fixtures/README.md)."""


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Broker:
    """One broker for tests that neither restart nor kill it."""
    b = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path) -> Broker:
    """A broker this test may stop, kill and restart."""
    b = Broker(tmp_path / "mosquitto").start()
    yield b
    b.kill()


@pytest.fixture
def collector_factory():
    made: list[Collector] = []

    def make(broker, *topics: str) -> Collector:
        c = Collector(broker, *topics)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def processes():
    """Start wattbus processes; whatever a test leaves running is killed afterwards."""
    started: list[WattbusProcess] = []

    def start(config: Path, name: str, *extra: str) -> WattbusProcess:
        p = WattbusProcess(config, name, *extra).start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def seed_sample() -> Path:
    return SEED_SAMPLE


def unique(prefix: str = "t") -> str:
    """A topic-safe unique name, so tests sharing the session broker do not see each other's devices."""
    return f"{prefix}{time.monotonic_ns() % 10**10}"


__all__ = ["write_config", "unique"]
