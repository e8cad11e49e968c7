"""Bytes from the P1 port (serial line or TCP) -> decoded telegrams and rejected fragments.

Framing is dsmr_parser's ``TelegramBuffer`` (a telegram runs from `/` to `!CRC\\r\\n`); ``Framer`` only adds
an account of what the buffer throws away, so a truncated telegram or line noise is counted and
dead-lettered instead of vanishing silently. Bytes are decoded as latin-1: every byte survives as one
character, so a noisy line cannot make a whole chunk undecodable and the CRC (computed by dsmr_parser
over ``ord()`` of each character) is the CRC of the bytes.

The transports are pyserial (a device path, 2.2: 9600 7E1, 4: 115200 7E1, 5: 115200 8N1; or any pyserial
URL such as ``rfc2217://``) and a plain TCP socket for `tcp://host:port` (P1 WiFi dongles, ser2net).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

import serial
from dsmr_parser.clients.telegram_buffer import TelegramBuffer

from producers.p1.decode import Decoder, DecodeError, Sample
from producers.p1.obis import Version
from producers.p1.ports import parse_tcp

MAX_BUFFER = 16_384
"""Characters kept while waiting for a telegram's end (real telegrams are 0.5-3 kB)."""
_PRINTABLE = set(range(0x20, 0x7F)) | {0x0D, 0x0A}


class ConnectionLost(Exception):
    """The port or the TCP connection is gone (or never came up); the caller reconnects."""


@dataclass(slots=True)
class Rejected:
    """Input that is skipped: a corrupt telegram, a telegram's torn-off part, line noise."""

    reason: str
    """`bad_crc`, `parse_error`, `no_data`, `truncated`, `noise` or `trailer`."""
    detail: str
    raw: bytes


@dataclass(slots=True)
class Decoded:
    """A good telegram and what it says."""

    sample: Sample
    raw: bytes


def classify(fragment: str) -> str | None:
    """What a piece of input outside any complete telegram is (None: only line ends / padding)."""
    if not fragment.strip("\r\n\0 \t\xff"):
        return None
    if "/" in fragment or "!" in fragment:
        return "truncated"  # the start or the end of a telegram whose other part never came
    if fragment.endswith("\r\n") and all(ord(c) in _PRINTABLE for c in fragment):
        return "trailer"  # whole text lines between telegrams, e.g. the EasyMeter COM-1 gateway's two lines
    return "noise"


class Framer(TelegramBuffer):
    """dsmr_parser's TelegramBuffer that also hands back what it drops."""

    def __init__(self, max_buffer: int = MAX_BUFFER):
        super().__init__()
        self.max_buffer = max_buffer
        self._dropped: list[str] = []

    def _remove(self, telegram: str) -> None:
        start = self._buffer.index(telegram)
        if start:
            self._dropped.append(self._buffer[:start])
        super()._remove(telegram)

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """Add bytes; return ``(kind, text)`` in arrival order: kind `telegram` or a ``classify`` result."""
        self.append(data.decode("latin-1"))
        out: list[tuple[str, str]] = []
        for telegram in self.get_all():
            out.extend(self._take_dropped())
            out.append(("telegram", telegram))
        out.extend(self._take_dropped())
        if len(self._buffer) > self.max_buffer:
            # No telegram end in sight: keep only the newest start (if any), reject the rest.
            cut = self._buffer.rfind("/")
            cut = cut if 0 < cut and len(self._buffer) - cut <= self.max_buffer else len(self._buffer)
            self._dropped.append(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            out.extend(self._take_dropped())
        return out

    def reset(self) -> list[tuple[str, str]]:
        """Forget a half-received telegram (the connection dropped); return it as rejected input."""
        self._dropped.append(self._buffer)
        self._buffer = ""
        return self._take_dropped()

    def _take_dropped(self) -> list[tuple[str, str]]:
        out = [(kind, text) for text in self._dropped if (kind := classify(text)) is not None]
        self._dropped.clear()
        return out


# -- transports ----------------------------------------------------------------------------------------
class Stream(Protocol):
    def read(self) -> bytes:
        """Bytes that arrived (waits at most the poll time); b"" if none; ConnectionLost when gone."""

    def close(self) -> None: ...


class SerialStream:
    """A serial port (or pseudo-terminal) through pyserial."""

    def __init__(self, port: str, version: Version, poll: float):
        settings = dict(baudrate=version.baudrate, bytesize=version.bytesize, parity=version.parity,
                        stopbits=serial.STOPBITS_ONE, xonxoff=False, rtscts=False, timeout=poll)
        try:
            if "://" in port:
                self._port = serial.serial_for_url(port, **settings)
            else:
                self._port = serial.Serial(port, **settings)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConnectionLost(f"cannot open {port}: {exc}") from None

    def read(self) -> bytes:
        try:
            return self._port.read(max(1, self._port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            raise ConnectionLost(f"serial port lost: {exc}") from None

    def close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass


class TcpStream:
    """A TCP connection to a P1 WiFi dongle or ser2net: the meter's bytes, unchanged."""

    def __init__(self, host: str, port: int, poll: float, connect_timeout: float = 5.0):
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc}") from None
        self._sock.settimeout(poll)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def read(self) -> bytes:
        try:
            data = self._sock.recv(4096)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise ConnectionLost(f"connection lost: {exc}") from None
        if not data:
            raise ConnectionLost("connection closed by the other end")
        return data

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def open_stream(port: str, version: Version, poll: float = 0.5) -> Stream:
    """Open the P1 source named by ``port``; ConnectionLost when it cannot be opened."""
    tcp = parse_tcp(port)
    if tcp is not None:
        return TcpStream(tcp[0], tcp[1], poll)
    return SerialStream(port, version, poll)


class P1Reader:
    """One meter's byte stream -> ``Decoded`` telegrams and ``Rejected`` input, in arrival order."""

    def __init__(self, port: str, version: Version, tz: ZoneInfo, *, poll: float = 0.5,
                 check_crc: bool = True):
        self.port = port
        self.version = version
        self.poll = poll
        self.decoder = Decoder(version, tz, check_crc=check_crc)
        self.framer = Framer()
        self._stream: Stream | None = None

    def open(self) -> None:
        self.close()
        self._stream = open_stream(self.port, self.version, self.poll)

    def close(self) -> list[Rejected]:
        """Close the stream; a half-received telegram comes back as rejected input."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        return [self._rejected(kind, text, "connection closed mid-telegram") for kind, text in self.framer.reset()]

    def poll_once(self) -> list[Decoded | Rejected]:
        """Read what arrived (waiting at most ``poll`` seconds) and decode every complete telegram."""
        if self._stream is None:
            raise ConnectionLost("not open")
        data = self._stream.read()
        if not data:
            return []
        out: list[Decoded | Rejected] = []
        for kind, text in self.framer.feed(data):
            if kind != "telegram":
                out.append(self._rejected(kind, text, "input outside a complete telegram"))
                continue
            raw = text.encode("latin-1")
            try:
                out.append(Decoded(self.decoder.decode(text), raw))
            except DecodeError as exc:
                out.append(Rejected(exc.reason, exc.detail, raw))
        return out

    @staticmethod
    def _rejected(kind: str, text: str, detail: str) -> Rejected:
        return Rejected(kind, f"{detail} ({len(text)} bytes)", text.encode("latin-1"))
