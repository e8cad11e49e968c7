"""``wattbus bench TYPE ...``: a plugin's benchmark (figures printed, never asserted by a test).

Every plugin whose record has a ``bench`` entry is listed. ``replay`` is the name the docs and ``./run bench``
use for the hhpc plugin's bench: a generated year through a real broker into a store.
"""

from __future__ import annotations

import importlib
import sys

from wattbus.plugins import plugins

ALIASES = {"replay": "hhpc"}
BUILTIN = {"relay": "wattbus.bench_relay", "footprint": "wattbus.footprint", "latency": "wattbus.bench_latency",
           "scale": "wattbus.bench_scale", "sites": "wattbus.bench_sites"}
"""Benches that join several plugins (a producer's model and a consumer's engine): module with ``main``."""


def main(argv: list[str]) -> int:
    benches = {p.type: p.bench for p in plugins() if p.bench is not None}
    for name, module in BUILTIN.items():
        benches[name] = lambda argv, module=module: importlib.import_module(module).main(argv)
    name = ALIASES.get(argv[0], argv[0]) if argv else ""
    if name not in benches:
        names = "|".join([*ALIASES, *benches])
        print(f"usage: wattbus bench {{{names}}} [options]  (--help after the name for its options)",
              file=sys.stderr)
        return 2
    return benches[name](argv[1:])
