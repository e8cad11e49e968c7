"""Store consumer: readings from the bus into a database (SQLite, MySQL/MariaDB, MongoDB, InfluxDB)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from bus import topics
from bus.config import PluginConfig
from bus.consumer import ConsumerContext
from bus.plugin import Plugin


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    sink: str = "sqlite:///var/lib/wattbus/wattbus.db"
    """Where readings go, by URL: sqlite:///path, mysql://user@host/db, mongodb://host/db,
    influx://host:8086?org=home&bucket=energy. Secrets come from a file or the environment."""
    topics: list[str] = msgspec.field(default_factory=lambda: [topics.ALL_READINGS])
    group: str | None = None
    """Shared-subscription group: copies of this store with the same group split the stream."""
    batch_max: int = 20_000
    batch_wait: float = 0.1
    inflight: int = 100
    """Messages the broker may have in flight to this store before it acknowledges."""
    spool_dir: str | None = None
    """Keep acknowledging while the database is down by spooling refused batches to files here (one
    sub-folder per process and instance); off by default: the broker holds the backlog instead."""
    spool_max_mb: float = 1024.0
    """Spool size limit; when full, the store stops acknowledging and the broker holds the rest."""

    def __post_init__(self) -> None:
        from urllib.parse import urlsplit

        from bus.sinks.base import SINKS

        scheme = urlsplit(self.sink).scheme
        if scheme not in SINKS:
            raise ValueError(f"`sink`: unknown URL scheme {scheme!r}; expected one of {', '.join(SINKS)}")
        if self.spool_max_mb <= 0:
            raise ValueError("`spool_max_mb` must be > 0")
        from bus.envelope import NAME_RULE, is_name

        if self.group is not None and not is_name(self.group):
            raise ValueError(f"`group`: {self.group!r} is not allowed (it becomes a topic level of "
                             f"$share/GROUP/...): {NAME_RULE}")


def run(ctx: ConsumerContext, cfg: Config) -> None:
    from pathlib import Path

    from consumers.store.writer import StoreWriter

    spool = None
    if cfg.spool_dir:
        spool = Path(cfg.spool_dir) / (ctx.name + (f"-{ctx.instance}" if ctx.instance else ""))
    try:
        writer = StoreWriter(ctx, cfg.sink, spool_dir=spool, spool_max_bytes=int(cfg.spool_max_mb * 1024 * 1024))
    except (ValueError, OSError) as exc:  # a bad sink URL or unreadable secret: a config error, exit 2
        from bus.config import ConfigError

        raise ConfigError([f"{ctx.app.path}: consumer.{ctx.name}.sink: {exc}"]) from None
    writer.start()
    try:
        ctx.consume_readings(writer.write, topic_filter=cfg.topics, group=cfg.group,
                             batch_max=cfg.batch_max, batch_wait=cfg.batch_wait)
    finally:
        writer.close()


def _readings_sink(cfg: Config) -> str:
    return cfg.sink


PLUGIN = Plugin("consumer", "store", Config, run, demo=Path(__file__).with_name("demo.toml"),
                readings_sink=_readings_sink)
