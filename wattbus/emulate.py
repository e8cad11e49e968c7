"""``wattbus emulate TYPE ...``: a device emulator at its real interface (also the demo's hardware).

Every plugin whose record has an ``emulator`` entry is listed; the rest of the command line is the emulator's.
"""

from __future__ import annotations

import sys

from wattbus.plugins import plugins


def main(argv: list[str]) -> int:
    emulators = {p.type: p.emulator for p in plugins() if p.emulator is not None}
    if not argv or argv[0] not in emulators:
        print(f"usage: wattbus emulate {{{'|'.join(emulators)}}} [options]  (--help after the type for its "
              f"options)", file=sys.stderr)
        return 2
    return emulators[argv[0]](argv[1:])
