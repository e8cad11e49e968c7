"""The plugin contract: what a producer or consumer package tells the rest of wattbus about itself.

A plugin is one folder plus one registry line (``producers/registry.py``, ``consumers/registry.py``: type ->
package). The package exposes ``PLUGIN = Plugin(...)``; everything that walks plugins reads only this record:
config loading and ``check-config`` (``config``), ``wattbus run`` (``run``), ``wattbus emulate`` (``emulator``),
``wattbus bench`` (``bench``), ``wattbus demo`` (``demo``, ``demo_data``, ``links``), ``wattbus export``
(``readings_sink``) and ``wattbus calibrate`` (``calibrate``); a test checks ``metrics`` against the metrics
table. The CLI never imports a plugin's
modules by name.

Keep ``__init__.py`` light: ``check-config`` imports every plugin's ``Config``. ``run``, the emulator and the
bench are small functions in ``__init__.py`` that import the heavy modules when called.

A package without ``PLUGIN`` still works when it defines ``Config`` and ``run`` (and maybe ``demo.toml`` next
to them): :func:`describe` fills in the rest, so a plugin needs the record only for its optional parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bus.config import PluginConfig

Kind = Literal["producer", "consumer"]
KINDS: tuple[Kind, ...] = ("producer", "consumer")
DEMO_FRAGMENT = "demo.toml"

Run = Callable[[Any, Any], None]
"""``run(ctx, cfg)``: ctx is a ``bus.producer.ProducerContext`` or a ``bus.consumer.ConsumerContext``."""
Main = Callable[[list[str]], int]
"""A command-line entry: ``main(argv) -> exit status`` (argv without the ``wattbus emulate TYPE`` part)."""
Calibrate = Callable[[Any, str, list[str]], "Mapping[tuple[str, ...], Any] | None"]
"""``calibrate(app, name, argv)``: measures the configured instance ``name`` of ``app`` (a
``bus.config.AppConfig``) against the user's references (asked on stdin, or given in ``argv``), shows the
error before and after, and returns the config values to change (key path in the file -> new value), or None
for nothing to change."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """One plugin, typed once; the registries map a ``type`` name to the package holding this record."""

    kind: Kind
    type: str
    """The name config sections use (``type = "shelly"``); for a producer also the topics' ``source``."""
    config: type[PluginConfig]
    """Validates the plugin's config section (``[producer.NAME]`` / ``[consumer.NAME]``)."""
    run: Run
    """The process body: runs until ``ctx.stopping`` is set."""
    emulator: Main | None = None
    """``wattbus emulate TYPE ...``: the device at its real interface (also the demo's hardware). It prints one
    line once it is ready (where it listens), then serves until SIGTERM."""
    bench: Main | None = None
    """``wattbus bench TYPE ...``: prints measured figures."""
    demo: Path | None = None
    """The TOML fragment this plugin adds to ``wattbus demo`` (placeholders: see ``wattbus/demo.py``)."""
    demo_data: Callable[[Path], None] | None = None
    """Prepares files the demo fragment names under ``${data}`` (called before anything starts)."""
    links: Callable[[Any], Mapping[str, str]] | None = None
    """What a user opens for a configured instance: label -> URL (``wattbus demo`` prints them)."""
    readings_sink: Callable[[Any], str] | None = None
    """The sink URL where a configured instance stores readings (``wattbus export`` reads it)."""
    buckets_sink: Callable[[Any], str] | None = None
    """The sink URL where a configured instance stores calendar buckets (``wattbus export --period``)."""
    metrics: Callable[[], Iterable[str]] | None = None
    """Every metric key the plugin's device tables map to (a test checks each is a row of metrics.toml)."""
    calibrate: Calibrate | None = None
    """``wattbus calibrate TYPE NAME ...``: the walk-through; the command writes what it returns (with a
    backup)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"plugin {self.type!r}: kind must be one of {', '.join(KINDS)}")
        if self.demo is not None and not self.demo.is_file():
            raise ValueError(f"plugin {self.type!r}: demo fragment {self.demo} does not exist")


def describe(kind: Kind, ptype: str, module: ModuleType) -> Plugin:
    """The plugin record of a registered package: its ``PLUGIN``, or one built from ``Config`` and ``run``."""
    record = getattr(module, "PLUGIN", None)
    if record is None:
        config, run = getattr(module, "Config", None), getattr(module, "run", None)
        if config is None or run is None:
            raise TypeError(f"{module.__name__}: a {kind} plugin defines PLUGIN, or at least Config and run")
        fragment = Path(module.__file__ or "").with_name(DEMO_FRAGMENT)
        serves = "port" in getattr(config, "__struct_fields__", ())
        record = Plugin(kind, ptype, config, run, demo=fragment if fragment.is_file() else None,
                        links=_served_on_port if serves else None)
    if not isinstance(record, Plugin):
        raise TypeError(f"{module.__name__}.PLUGIN is a {type(record).__name__}, not a bus.plugin.Plugin")
    if (record.kind, record.type) != (kind, ptype):
        raise TypeError(f"{module.__name__}: registered as {kind} {ptype!r} but PLUGIN says "
                        f"{record.kind} {record.type!r}")
    return record


def _served_on_port(cfg: Any) -> dict[str, str]:
    """A package without ``PLUGIN`` whose config has a ``port`` serves HTTP there (the demo prints it)."""
    return {f"{cfg.type}": f"http://localhost:{cfg.port}/"}
