"""A P1 port you can plug the producer into: telegrams on a pseudo-terminal or over TCP.

The pseudo-terminal stands in for the USB P1 cable (the producer opens the slave path like
/dev/ttyUSB0; ``--link`` keeps a stable symlink across simulated unplugs); the TCP server stands in for a
P1 WiFi dongle or ser2net (every connected client gets the same bytes, like the dongles' raw port).
Telegrams come from fixture files (sent byte for byte) or from ``profile.TelegramGenerator`` (DSMR 5 or
Fluvius, realistic counters, valid CRC). Faults can be injected: a wrong CRC, a truncated telegram,
noise bytes between telegrams, a dropped connection.

    wattbus emulate p1 --tcp 127.0.0.1:2001 --dsmr 5B
    wattbus emulate p1 --pty --link /tmp/p1 --fixture tests/p1/telegrams/nl_dsmr50_iskra_mt382_v5.txt
    wattbus emulate p1 --tcp 2001 --dsmr 5 --bad-crc 0.05 --noise 0.05 --disconnect 0.01

Tests drive it from Python: ``Emulator(frames).start_tcp()`` / ``.start_pty()``, then ``play()``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal
import socket
import sys
import threading
import time
import tty
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from producers.p1.profile import LAYOUTS, TelegramGenerator


class _Disconnect:
    def __repr__(self) -> str:
        return "DISCONNECT"


DISCONNECT = _Disconnect()
"""Put this in a frame sequence to drop the connection (TCP) or unplug the cable (pty) at that point."""

Item = bytes | _Disconnect


# -- faults (pure functions on telegram bytes) ------------------------------------------------------------
def bad_crc(telegram: bytes) -> bytes:
    """The same telegram with a CRC that does not match (as if one bit flipped on the way)."""
    i = telegram.rindex(b"!")
    digits = telegram[i + 1:i + 5]
    if len(digits) < 4 or not all(c in b"0123456789ABCDEF" for c in digits):
        return corrupt_body(telegram)  # no CRC to spoil (DSMR 2.2, Q3D): spoil the content instead
    wrong = int(digits, 16) ^ 0x0101
    return telegram[:i + 1] + f"{wrong:04X}".encode() + telegram[i + 5:]


def corrupt_body(telegram: bytes, at: float = 0.5) -> bytes:
    """Flip one digit inside the telegram (line noise inside a line): its CRC no longer matches."""
    i = int(len(telegram) * at)
    while i < len(telegram) and not chr(telegram[i]).isdigit():
        i += 1
    if i >= len(telegram):
        return telegram
    return telegram[:i] + (b"7" if telegram[i:i + 1] != b"7" else b"3") + telegram[i + 1:]


def truncated(telegram: bytes, fraction: float = 0.6) -> bytes:
    """The first ``fraction`` of a telegram, as when the cable is pulled or the meter resets mid-send."""
    return telegram[:max(1, int(len(telegram) * fraction))]


def noise(n: int = 24, rng: random.Random | None = None) -> bytes:
    """``n`` random bytes such as a noisy line produces between telegrams (never `/` or `!`)."""
    rng = rng or random.Random(0)
    pool = [b for b in range(256) if b not in (0x2F, 0x21)]
    return bytes(rng.choice(pool) for _ in range(n))


@dataclass
class Faults:
    """Probabilities per telegram of each injected fault."""

    bad_crc: float = 0.0
    truncate: float = 0.0
    noise: float = 0.0
    disconnect: float = 0.0

    def apply(self, stream: Iterable[bytes], rng: random.Random) -> Iterator[Item]:
        for telegram in stream:
            if self.disconnect and rng.random() < self.disconnect:
                yield DISCONNECT
            if self.noise and rng.random() < self.noise:
                yield noise(rng.randint(4, 64), rng)
            r = rng.random()
            if r < self.bad_crc:
                yield bad_crc(telegram)
            elif r < self.bad_crc + self.truncate:
                yield truncated(telegram, rng.uniform(0.1, 0.9))
            else:
                yield telegram


# -- sources --------------------------------------------------------------------------------------------
def fixture_frames(paths: Iterable[str | os.PathLike], loop: bool = True) -> Iterator[bytes]:
    """The fixture files' bytes, exactly as stored (CRLF, no text-mode conversion), cycled if ``loop``."""
    data = [Path(p).read_bytes() for p in paths]
    return itertools.cycle(data) if loop else iter(data)


def generated_frames(profile: str = "5", tz: str = "Europe/Brussels", *, start: datetime | None = None,
                     step: float = 1.0, seed: int = 1) -> Iterator[bytes]:
    """Generated telegrams: at wall-clock time, or from ``start`` advancing ``step`` s per telegram."""
    gen = TelegramGenerator(profile, tz, seed=seed)
    for n in itertools.count():
        yield gen.telegram(None if start is None else start + timedelta(seconds=n * step))


# -- the emulator ---------------------------------------------------------------------------------------
class Emulator:
    """Writes a sequence of telegrams (and faults) to a pty or to TCP clients, one per ``period`` s."""

    def __init__(self, frames: Iterable[Item], *, period: float = 1.0, chunk: int = 0,
                 down_s: float = 0.5):
        self._frames = iter(frames)
        self.period = period
        self.chunk = chunk
        """Write each telegram in pieces of this many bytes (0: whole), to exercise reassembly."""
        self.down_s = down_s
        """How long a simulated disconnect lasts."""
        self.sent = 0
        self.disconnects = 0
        self.done = threading.Event()
        """Set once every frame has been written (finite sequences)."""
        self._stop = threading.Event()
        self._go = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # pty
        self._master: int | None = None
        self._slave: int | None = None
        self._link: str | None = None
        self.path: str | None = None
        # tcp
        self._server: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._wait_client = False
        self.address: tuple[str, int] | None = None

    # -- start ---------------------------------------------------------------------------------------
    def start_pty(self, link: str | None = None, play: bool = True) -> str:
        """Create a pseudo-terminal; return the path the producer opens (``link`` if given)."""
        self._link = link
        self._open_pty()
        self._start(play)
        return link or self.path  # type: ignore[return-value]

    def start_tcp(self, host: str = "127.0.0.1", port: int = 0, play: bool = True,
                  wait_for_client: bool = True) -> tuple[str, int]:
        """Listen like a P1 dongle; return (host, port). Frames wait for the first client if asked."""
        srv = socket.create_server((host, port), reuse_port=False)
        srv.settimeout(0.2)
        self._server = srv
        self.address = srv.getsockname()[:2]
        self._wait_client = wait_for_client
        threading.Thread(target=self._accept_loop, name="p1-accept", daemon=True).start()
        self._start(play)
        return self.address  # type: ignore[return-value]

    @property
    def url(self) -> str:
        """The `port` value for the producer's config."""
        if self.address:
            return f"tcp://{self.address[0]}:{self.address[1]}"
        return self._link or self.path or ""

    def play(self) -> None:
        """Start sending (when started with ``play=False``, e.g. after the reader has opened the port)."""
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._close_pty()
        self._drop_clients()
        if self._server:
            self._server.close()
            self._server = None

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    # -- internals ---------------------------------------------------------------------------------------
    def _start(self, play: bool) -> None:
        if play:
            self._go.set()
        self._thread = threading.Thread(target=self._run, name="p1-emulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._go.wait()
        next_at = time.monotonic()
        for item in self._frames:
            if self._stop.is_set():
                break
            if item is DISCONNECT:
                self._disconnect()
                next_at = time.monotonic()
                continue
            while self._wait_client and self.clients() == 0 and not self._stop.is_set():
                time.sleep(0.02)
            self._write(item)  # type: ignore[arg-type]
            self.sent += 1
            next_at += self.period
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                break
        self.done.set()

    def _write(self, data: bytes) -> None:
        pieces = [data[i:i + self.chunk] for i in range(0, len(data), self.chunk)] if self.chunk else [data]
        for n, piece in enumerate(pieces):
            if n:
                time.sleep(0.002)
            if self._master is not None:
                view = memoryview(piece)
                try:
                    while view:
                        view = view[os.write(self._master, view):]
                except OSError:  # full (nobody reads the port: a meter does not wait either) or closed
                    pass
            for client in self._client_list():
                try:
                    client.sendall(piece)
                except OSError:
                    self._remove_client(client)

    def _disconnect(self) -> None:
        self.disconnects += 1
        if self._master is not None:
            self._close_pty()
            if self._stop.wait(self.down_s):
                return
            self._open_pty()
        else:
            self._drop_clients()
            self._stop.wait(self.down_s)

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)             # no echo, no CR/LF translation: the bytes arrive as sent
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.path = os.ttyname(slave)
        if self._link:
            tmp = f"{self._link}.tmp{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.path, tmp)
            os.replace(tmp, self._link)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        if self._link and os.path.islink(self._link):
            try:
                os.unlink(self._link)
            except OSError:
                pass

    def _accept_loop(self) -> None:
        while not self._stop.is_set() and self._server is not None:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(2.0)
            with self._lock:
                self._clients.append(client)

    def _client_list(self) -> list[socket.socket]:
        with self._lock:
            return list(self._clients)

    def _remove_client(self, client: socket.socket) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
        try:
            client.close()
        except OSError:
            pass

    def _drop_clients(self) -> None:
        for client in self._client_list():
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._remove_client(client)


# -- command line ---------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wattbus emulate p1",
                                description="Emulate a DSMR P1 port on a pseudo-terminal or over TCP.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="write to a new pseudo-terminal (prints its path)")
    where.add_argument("--tcp", metavar="[HOST:]PORT", help="serve over TCP like a P1 WiFi dongle")
    p.add_argument("--link", metavar="PATH", help="with --pty: keep a symlink to the pty here (stable across unplugs)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dsmr", choices=sorted(LAYOUTS), default="5", help="generated telegrams (default 5)")
    what.add_argument("--fixture", nargs="+", metavar="FILE", help="send these telegram files byte for byte, in a loop")
    p.add_argument("--period", type=float, default=1.0, help="seconds between telegrams (default 1)")
    p.add_argument("--count", type=int, default=0, help="stop after this many telegrams (default: run until stopped)")
    p.add_argument("--timezone", default="Europe/Brussels", help="the meter's time zone (default Europe/Brussels)")
    p.add_argument("--start", help="meter clock starts here (ISO 8601) and advances --step per telegram; "
                                   "default: the wall clock")
    p.add_argument("--step", type=float, help="with --start: meter seconds per telegram (default: --period; "
                                              "e.g. --period 0.1 --step 1 plays a 1 s meter 10x faster)")
    p.add_argument("--seed", type=int, default=1, help="random seed for the household and the faults")
    p.add_argument("--chunk", type=int, default=0, help="write in pieces of this many bytes")
    for name, what_ in (("bad-crc", "a wrong CRC"), ("truncate", "a truncated telegram"),
                        ("noise", "noise bytes before the telegram"), ("disconnect", "a dropped connection")):
        p.add_argument(f"--{name}", type=float, default=0.0, metavar="P", help=f"probability per telegram of {what_}")
    return p


def main(argv: list[str]) -> int:
    """Run the emulator until Ctrl-C/SIGTERM (or --count telegrams); print where to connect first."""
    args = _parser().parse_args(argv)
    if args.fixture:
        frames: Iterable[bytes] = fixture_frames(args.fixture)
    else:
        start = datetime.fromisoformat(args.start) if args.start else None
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        step = args.step if args.step else args.period
        frames = generated_frames(args.dsmr, args.timezone, start=start, step=step, seed=args.seed)
    if args.count:
        frames = itertools.islice(frames, args.count)
    faults = Faults(args.bad_crc, args.truncate, args.noise, args.disconnect)
    emu = Emulator(faults.apply(frames, random.Random(args.seed)), period=args.period, chunk=args.chunk)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.pty:
            where = emu.start_pty(link=args.link)
            print(f"pty {where}", flush=True)
        else:
            host, _, port = args.tcp.rpartition(":")
            addr = emu.start_tcp(host or "127.0.0.1", int(port), wait_for_client=False)
            print(f"tcp {addr[0]}:{addr[1]}", flush=True)
    except (OSError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 1
    while not stop.is_set() and not emu.done.is_set():
        stop.wait(0.2)
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
