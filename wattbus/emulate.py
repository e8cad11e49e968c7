"""``wattbus emulate shelly|p1 ...``: the device emulators (also the demo's hardware)."""

from __future__ import annotations

import importlib
import sys

EMULATORS = {"shelly": "producers.shelly.emulator", "p1": "producers.p1.emulator"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EMULATORS:
        print(f"usage: wattbus emulate {{{'|'.join(EMULATORS)}}} [options]", file=sys.stderr)
        return 2
    return importlib.import_module(EMULATORS[argv[0]]).main(argv[1:])
