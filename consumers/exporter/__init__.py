"""Prometheus exporter: the latest reading of every device as Prometheus metrics on :3030/metrics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bus.config import PluginConfig
from bus.plugin import Plugin

if TYPE_CHECKING:
    from bus.consumer import ConsumerContext


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    listen: str = "0.0.0.0"
    port: int = 3030
    compat: Literal["", "hhpc"] = ""
    """"hhpc" also serves the seed's exact names (global_active_power{unit="kilowatt"}, ..., hhpc_up)."""
    compat_device: str | None = None
    """Which hhpc device the compat names show; default: the first hhpc device seen."""
    stale_after: float = 0
    """Drop a device's series when it sent nothing for this many seconds (0 = only when it goes offline)."""
    inflight: int = 1000
    max_series: int = 10_000
    """At most this many devices (and process names) are tracked; more are refused and counted
    (wattbus_exporter_refused_devices_total), so hostile names cannot exhaust memory."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("`port` must be 1..65535")
        if not 1 <= self.max_series <= 1_000_000:
            raise ValueError("`max_series` must be 1..1000000 devices")
        from bus.envelope import NAME_RULE, is_name

        if self.compat_device is not None and not is_name(self.compat_device):
            raise ValueError(f"`compat_device`: {self.compat_device!r} is not a device name: {NAME_RULE}")


def run(ctx: ConsumerContext, cfg: Config) -> None:
    from consumers.exporter.server import serve

    serve(ctx, cfg)


def _links(cfg: Config) -> dict[str, str]:
    return {"Prometheus metrics": f"http://localhost:{cfg.port}/metrics"}


PLUGIN = Plugin("consumer", "exporter", Config, run, demo=Path(__file__).with_name("demo.toml"), links=_links)
