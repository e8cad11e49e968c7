"""An optional on-disk spool: lets the store keep acknowledging while its database is away.

Without a spool, a database outage stops acknowledgements and the broker keeps everything in the store's
persistent session (bounded by Mosquitto's ``max_queued_messages``). That is the default and needs no disk.
With ``spool_dir`` set, a batch the database refuses is written here instead (one fsynced file per batch,
renamed into place, so a file either holds the whole batch or does not exist), the messages are
acknowledged, and a background thread writes the files into the database, oldest first, once it is back.
Useful when an outage may outlast what the broker may queue, or when the broker is on another machine.

Nothing is lost on a crash: a batch is acknowledged only after its file is durable; a batch whose file
was written but whose acknowledgement was not sent comes again from the broker, and idempotent sinks make
the second copy harmless. The spool is bounded by ``max_bytes``: when full, ``append`` raises, so the store
falls back to not acknowledging and the broker holds the rest.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import msgspec

from bus.envelope import Reading

SUFFIX = ".batch"


class SpoolFull(Exception):
    """The spool reached its size limit; the caller must not acknowledge."""


class Spool:
    """Batches of readings as files ``<counter>.batch`` in one directory, oldest first."""

    _encoder = msgspec.msgpack.Encoder()
    _decoder = msgspec.msgpack.Decoder(list[Reading])

    def __init__(self, directory: str | os.PathLike, max_bytes: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._lockfile = open(self.dir / ".lock", "w")
        try:  # two processes sharing one spool would replay each other's batches twice
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"spool {self.dir} is in use by another store process") from None
        for stale in self.dir.glob("*.tmp"):  # a crash mid-write: that batch was never acknowledged
            stale.unlink()
        self._files: list[tuple[int, Path, int]] = []  # (counter, path, readings)
        self.bytes = 0
        self.corrupt: list[Path] = []
        for path in sorted(self.dir.glob(f"*{SUFFIX}")):
            try:
                n = len(self._load(path))
            except (msgspec.DecodeError, ValueError):  # set aside for a human, never replayed, never fatal
                path.rename(path.with_suffix(".corrupt"))
                self.corrupt.append(path.with_suffix(".corrupt"))
                continue
            self._files.append((int(path.stem), path, n))
            self.bytes += path.stat().st_size
        self._next = self._files[-1][0] + 1 if self._files else 0

    @property
    def readings(self) -> int:
        with self._lock:
            return sum(n for _, _, n in self._files)

    def __len__(self) -> int:
        """Batches waiting."""
        with self._lock:
            return len(self._files)

    def append(self, readings: Sequence[Reading]) -> None:
        """Write one batch durably; raise SpoolFull (or OSError) when it cannot be kept."""
        data = self._encoder.encode(list(readings))
        with self._lock:
            if self.bytes + len(data) > self.max_bytes:
                raise SpoolFull(f"spool {self.dir} is full ({self.bytes} of {self.max_bytes} bytes)")
            counter = self._next
            self._next += 1
            path = self.dir / f"{counter:016d}{SUFFIX}"
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self._fsync_dir()
            self._files.append((counter, path, len(readings)))
            self.bytes += len(data)

    def oldest(self) -> tuple[Path, list[Reading]] | None:
        with self._lock:
            if not self._files:
                return None
            path = self._files[0][1]
        return path, self._load(path)

    def remove(self, path: Path) -> None:
        """Forget a batch once the database has it."""
        with self._lock:
            size = path.stat().st_size
            path.unlink()
            self._fsync_dir()
            self._files = [f for f in self._files if f[1] != path]
            self.bytes -= size

    def close(self) -> None:
        self._lockfile.close()

    def _load(self, path: Path) -> list[Reading]:
        return self._decoder.decode(path.read_bytes())

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
