"""Plugin lookup through the registries: type name -> package with ``Config`` and ``run``."""

from __future__ import annotations

import importlib
from types import ModuleType

from bus.config import PluginConfig
from consumers.registry import CONSUMERS
from producers.registry import PRODUCERS

REGISTRIES = {"producer": PRODUCERS, "consumer": CONSUMERS}


def plugin_module(kind: str, ptype: str) -> ModuleType | None:
    target = REGISTRIES[kind].get(ptype)
    return importlib.import_module(target) if target else None


def resolve(kind: str, ptype: str) -> type[PluginConfig] | None:
    module = plugin_module(kind, ptype)
    return getattr(module, "Config", None) if module else None
