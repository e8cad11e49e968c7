"""API consumer: the REST API, a live feed (server-sent events) and the web dashboard, on port 4000.

Latest values come from the bus, history from the store's sink (readings) and the aggregate consumer's
``rollups``. Read-only unless a token file is configured. See README.md.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import msgspec

from bus.config import PluginConfig
from bus.plugin import Plugin
from bus.consumer import ConsumerContext
from bus.envelope import NAME_RULE, is_name


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    listen: str = "0.0.0.0"
    """Address to serve on. All interfaces by default so the dashboard opens from a phone on the LAN;
    "127.0.0.1" keeps it on this machine (behind a reverse proxy, or over an SSH tunnel)."""
    port: int = 4000
    sink: str | None = None
    """Where history is read (a store's sink URL); default: the first store consumer's sink in the config."""
    hhpc_device: str | None = None
    """The device /api/v1/gethpc shows; default: the first hhpc producer's device in the config."""
    site: str | None = None
    """The site balance's device name (source "site"); default: the one the aggregate consumer publishes."""
    grid: list[str] = msgspec.field(default_factory=list)
    """Dashboard: the grid meter(s) as "source/device"; default: devices whose producer has role grid."""
    solar: list[str] = msgspec.field(default_factory=list)
    """Dashboard: the solar inverter(s) as "source/device"; default: devices whose producer has role solar."""
    token_file: str | None = None
    """A file holding the token that write routes need (Authorization: Bearer ...); none: read-only."""
    cors_origins: list[str] = msgspec.field(default_factory=list)
    """Origins allowed to call the API from a browser page elsewhere (CORS); empty: off."""
    workers: int = 1
    """Threads reading history from the store (each with its own connection and cache: memory)."""
    inflight: int = 1000

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("`port` must be 1..65535")
        try:
            ipaddress.ip_address(self.listen)
        except ValueError:
            if self.listen != "localhost":
                raise ValueError(f"`listen`: expected an IP address like \"0.0.0.0\" or \"127.0.0.1\"; "
                                 f"got {self.listen!r}") from None
        for key in ("grid", "solar"):
            for value in getattr(self, key):
                src, _, dev = value.partition("/")
                if not (is_name(src) and is_name(dev)):
                    raise ValueError(f"`{key}`: expected \"source/device\" like \"shelly/mains\"; got {value!r}")
        if self.hhpc_device is not None and not is_name(self.hhpc_device):
            raise ValueError(f"`hhpc_device` {self.hhpc_device!r} is not allowed: {NAME_RULE}")
        if not 1 <= self.workers <= 16:
            raise ValueError("`workers` must be 1..16")
        for origin in self.cors_origins:
            if not (origin == "*" or origin.startswith(("http://", "https://"))):
                raise ValueError(f"`cors_origins`: expected origins like \"http://pi.local:3000\"; got {origin!r}")


def run(ctx: ConsumerContext, cfg: Config) -> None:
    from consumers.api.server import serve

    serve(ctx, cfg)


def _bench(argv: list[str]) -> int:
    from consumers.api.bench import main

    return main(argv)


def _links(cfg: Config) -> dict[str, str]:
    host = "localhost" if cfg.listen in ("0.0.0.0", "::", "127.0.0.1") else cfg.listen
    return {"dashboard": f"http://{host}:{cfg.port}/", "API": f"http://{host}:{cfg.port}/api/v1/openapi.json"}


PLUGIN = Plugin("consumer", "api", Config, run, bench=_bench, demo=Path(__file__).with_name("demo.toml"),
                links=_links)
