"""Helpers for the p1 tests: the fixture telegrams, and reading an emulator through P1Reader."""

from __future__ import annotations

import time
from pathlib import Path
from zoneinfo import ZoneInfo

from producers.p1.emulator import Emulator, Item
from producers.p1.obis import VERSIONS
from producers.p1.reader import ConnectionLost, Decoded, P1Reader, Rejected

FIXTURES = Path(__file__).with_name("telegrams")
"""Verbatim copies of the project's P1 fixtures (see telegrams/README.md for their sources)."""
TZ = ZoneInfo("Europe/Brussels")


def fixture_bytes(name: str) -> bytes:
    """A fixture telegram exactly as on the wire (binary read: CRLF kept)."""
    return (FIXTURES / name).read_bytes()


def read_via(transport: str, frames: list[Item], dsmr: str, *, want: int, timeout: float = 10.0,
             chunk: int = 0, tmp_path: Path | None = None) -> list[Decoded | Rejected]:
    """Play ``frames`` on an emulator (pty or tcp), read them with P1Reader until ``want`` results came."""
    emu = Emulator(frames, period=0.02, chunk=chunk)
    try:
        if transport == "tcp":
            emu.start_tcp(play=False)
        else:
            emu.start_pty(play=False)
        reader = P1Reader(emu.url, VERSIONS[dsmr], TZ, poll=0.05)
        reader.open()
        emu.play()
        out: list[Decoded | Rejected] = []
        deadline = time.monotonic() + timeout
        quiet_since = None
        while len(out) < want and time.monotonic() < deadline:
            try:
                got = reader.poll_once()
            except ConnectionLost:
                break
            out += got
            if got or not emu.done.is_set():
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 0.3:  # everything sent and read
                break
        out += reader.close()
        return out
    finally:
        emu.stop()
