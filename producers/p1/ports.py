"""Which P1 source a ``port`` names. Its own module so that config validation does not import the reader
(pyserial and dsmr_parser: about 15 MB in every process that loads a config with a P1 section)."""

from __future__ import annotations

from urllib.parse import urlsplit


def parse_tcp(port: str) -> tuple[str, int] | None:
    """(host, port) for `tcp://host:port` or `socket://host:port`, None for a serial port."""
    if not port.startswith(("tcp://", "socket://")):
        return None
    parts = urlsplit(port)
    if not parts.hostname or parts.port is None:
        raise ValueError(f"expected tcp://HOST:PORT, got {port!r}")
    return parts.hostname, parts.port
