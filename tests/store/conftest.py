"""Store tests: private MariaDB and VictoriaMetrics servers, reading factories, store processes, waiting."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bus.envelope import Reading, encode_batch
from bus.sinks.base import Sink, open_sink
from tests.conftest import unique
from tests.support.mariadb import MariaDB
from tests.support.processes import write_config
from tests.support.victoria import Victoria

T0 = 1704067200000  # 2024-01-01T00:00:00Z
MONGO_URL = os.environ.get("WATTBUS_TEST_MONGO_URL")


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory) -> MariaDB:
    db = MariaDB(tmp_path_factory.mktemp("mariadb")).install()
    yield db
    db.stop()


@pytest.fixture(scope="session")
def victoria(tmp_path_factory) -> Victoria:
    vm = Victoria(tmp_path_factory.mktemp("victoria")).start()
    yield vm
    vm.stop()


@pytest.fixture
def mysql_url(mariadb) -> str:
    """A database of its own for each test (the sink creates it)."""
    return mariadb.url(unique("wb"))


@pytest.fixture
def influx_url(victoria) -> str:
    """VictoriaMetrics has one namespace, whatever the bucket: tests keep apart by device name."""
    return victoria.url()


def readings(device: str, n: int, *, source: str = "hhpc", start: int = T0, step: int = 60_000,
             seq0: int = 0) -> list[Reading]:
    """``n`` minute readings that differ from each other, a missing one every 97th (as datasets have)."""
    out = []
    for i in range(n):
        ts = start + i * step
        if i % 97 == 96:
            out.append(Reading(source, device, ts, {}, seq0 + i, 60.0, "missing"))
            continue
        out.append(Reading(source, device, ts, {
            "power_w": round(500.0 + (i * 37) % 4000 + 0.25, 3), "reactive_power_var": float(i % 50),
            "voltage_v": 230.0 + (i % 13) / 10, "current_a": round((500.0 + (i * 37) % 4000) / 230.0, 3),
            "sub1_energy_wh": 0.0, "sub2_energy_wh": float(i % 3), "sub3_energy_wh": 17.0,
        }, seq0 + i, 60.0, "ok"))
    return out


def as_items(rs: list[Reading]) -> list[dict]:
    return [{"ts": r.ts, "seq": r.seq, "period_s": r.period_s, "quality": r.quality, "metrics": r.metrics}
            for r in rs]


def publish(collector, rs: list[Reading], per_message: int = 500) -> None:
    """Publish readings of one device as batch envelopes at QoS 1, each acknowledged by the broker."""
    for i in range(0, len(rs), per_message):
        chunk = rs[i:i + per_message]
        collector.publish(f"{chunk[0].source}/{chunk[0].device}/reading",
                          encode_batch(chunk[0].source, chunk[0].device, as_items(chunk)))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class SinkProbe:
    """The test's own view of a sink: what is stored for a device right now."""

    def __init__(self, url: str, victoria: Victoria | None = None):
        self.url = url
        self.victoria = victoria if url.startswith("influx") else None

    def stored(self, device: str, source: str = "hhpc") -> list[Reading]:
        if self.victoria is not None:
            self.victoria.flush()
        sink: Sink = open_sink(self.url)
        try:
            return list(sink.read(source, device, 0, 2**42))
        except Exception:
            return []  # the database is down right now: nothing visible
        finally:
            sink.close()

    def count(self, device: str, source: str = "hhpc") -> int:
        return len(self.stored(device, source))

    def wait_count(self, device: str, n: int, timeout: float = 60.0, source: str = "hhpc") -> None:
        wait_until(lambda: self.count(device, source) >= n, timeout,
                   f"{n} readings of {device} in {self.url}", every=0.3)


@pytest.fixture
def probe_factory(victoria):
    return lambda url: SinkProbe(url, victoria)


def store_config(path: Path, broker, stores: dict[str, str], **options) -> Path:
    """A wattbus.toml with one store consumer per ``name -> sink URL`` and extra keys for each."""
    body = ""
    for name, url in stores.items():
        body += f'\n[consumer.{name}]\ntype = "store"\nsink = "{url}"\n'
        for key, value in options.items():
            body += f"{key} = {value!r}\n".replace("'", '"')
    return write_config(path / "wattbus.toml", broker, body)


def wait_subscribed(collector, probe: SinkProbe, timeout: float = 30.0) -> None:
    """Publish a probe reading until it is stored: the store's session and subscription exist from then on."""
    device = unique("probe")
    deadline = time.monotonic() + timeout
    while True:
        publish(collector, readings(device, 1))
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            if probe.count(device):
                return
            time.sleep(0.15)
        if time.monotonic() > deadline:
            raise AssertionError(f"the store never stored a probe reading into {probe.url}")
