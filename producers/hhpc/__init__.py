"""hhpc producer: the household power consumption dataset as a meter (the seed's hhpcserver, on MQTT).

``mode = "live"`` publishes, every ``interval``, the dataset row for the same day-of-year and minute as
*now* in local time, as the seed's REST server did. ``mode = "replay"`` publishes ``start``..``end`` at
``speed`` x real time, or as fast as the broker takes it (``speed = 0``), in batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bus.config import PluginConfig
from bus.plugin import Plugin

if TYPE_CHECKING:
    from bus.producer import ProducerContext

DEMO_DATASET = "hhpc-2024.txt"
"""The generated year the demo fragment names (``${data}/hhpc-2024.txt``)."""


class Config(PluginConfig, kw_only=True, forbid_unknown_fields=True):
    dataset: str = "data/hhpc-2024.txt"
    device: str | None = None
    """Device name in topics; default: the config section name."""
    role: Literal["grid", "solar", "load", "battery"] = "load"
    mode: Literal["live", "replay"] = "live"
    interval: float = 60.0
    """live: seconds between readings."""
    start: str | None = None
    """replay: first local date/time (ISO, site timezone); default the file's first row."""
    end: str | None = None
    """replay: local date/time to stop before (exclusive); default the end of the file."""
    speed: float = 0.0
    """replay: dataset minutes per real minute (1 = real time, 60 = an hour a minute); 0 = flat out."""
    batch: int = 1000
    """replay: readings per message."""
    repeat: bool = False
    """replay: start over at the end (a looping demo device)."""

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("`interval` must be > 0 seconds")
        if self.speed < 0:
            raise ValueError("`speed` must be >= 0 (0 = as fast as the broker takes it)")
        if not 1 <= self.batch <= 100_000:
            raise ValueError("`batch` must be 1..100000 readings per message")
        from datetime import datetime

        for key in ("start", "end"):
            value = getattr(self, key)
            if value is not None:
                try:
                    datetime.fromisoformat(value)
                except ValueError:
                    raise ValueError(f"`{key}`: expected an ISO date or date-time like 2024-12-14T17:58, "
                                     f"got {value!r}") from None


def run(ctx: ProducerContext, cfg: Config) -> None:
    from producers.hhpc.player import play

    play(ctx, cfg)


def emulator(argv: list[str]) -> int:
    """``wattbus emulate hhpc --year 2024 --out FILE``: the dataset this producer reads, a synthetic year."""
    import argparse

    from producers.hhpc.generate import generate_year

    ap = argparse.ArgumentParser(prog="wattbus emulate hhpc", description=emulator.__doc__)
    ap.add_argument("--year", type=int, default=2024)
    ap.add_argument("--out", required=True, help="the dataset file to write")
    ap.add_argument("--seed", type=int, default=0, help="same seed, same year")
    args = ap.parse_args(argv)
    rows = generate_year(args.year, args.out, seed=args.seed)
    print(f"wrote {rows} rows to {args.out}", flush=True)
    return 0


def bench(argv: list[str]) -> int:
    from producers.hhpc.bench import bench as replay

    return replay(argv)


def metric_keys() -> list[str]:
    """What the dataset's columns (and the metrics derived from them) become."""
    from producers.hhpc.dataset import COLUMNS, DERIVED

    return [c.metric for c in COLUMNS.values()] + list(DERIVED)


def demo_data(folder: Path) -> None:
    """The demo's dataset: the 2024 year, generated once (about two seconds)."""
    path = folder / DEMO_DATASET
    if not path.exists():
        from producers.hhpc.generate import generate_year

        print(f"demo: generating the household dataset {path}", flush=True)
        generate_year(2024, path, seed=0)


PLUGIN = Plugin("producer", "hhpc", Config, run, emulator=emulator, bench=bench,
                demo=Path(__file__).with_name("demo.toml"), demo_data=demo_data, metrics=metric_keys)
