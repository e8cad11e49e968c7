"""The registries, walked: every plugin's record (``bus.plugin.Plugin``) by kind and type.

``producers/registry.py`` and ``consumers/registry.py`` map a type name to its package, one line per plugin;
the producer registry is also the one list of sources (``bus.envelope.SOURCES`` derives from it). Packages
are imported on first use only, so ``wattbus run X`` imports one plugin and its own ``Config``.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from bus.config import PluginConfig
from bus.plugin import KINDS, Kind, Plugin, describe
from consumers.registry import CONSUMERS
from producers.registry import PRODUCERS

REGISTRIES: dict[Kind, dict[str, str]] = {"producer": PRODUCERS, "consumer": CONSUMERS}


def plugin_module(kind: str, ptype: str) -> ModuleType | None:
    """The registered package of ``ptype`` (its ``run`` is ``plugin(kind, ptype).run``), or None."""
    target = REGISTRIES[kind].get(ptype)  # type: ignore[index]
    return importlib.import_module(target) if target else None


@cache
def plugin(kind: Kind, ptype: str) -> Plugin | None:
    """The plugin record registered as ``ptype``, or None when no plugin has that type."""
    module = plugin_module(kind, ptype)
    return describe(kind, ptype, module) if module else None


def plugins(kind: Kind | None = None) -> list[Plugin]:
    """Every registered plugin (of one kind), in registry order: producers first."""
    kinds = KINDS if kind is None else (kind,)
    return [p for k in kinds for t in REGISTRIES[k] if (p := plugin(k, t)) is not None]


def resolve(kind: str, ptype: str) -> type[PluginConfig] | None:
    """The Config class of a plugin type (what ``bus.config.load_config`` asks)."""
    found = plugin(kind, ptype) if kind in REGISTRIES else None  # type: ignore[arg-type]
    return found.config if found else None
