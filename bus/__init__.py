"""wattbus's shared library: config, envelope, topics, the MQTT client, the process runtime, the plugin contract.

Producers and consumers depend on this package and on ``schemas`` only, never on each other.
"""

import sys as _sys

# httpx imports its command-line client (click, rich, pygments: 8 MB of RSS) whenever those happen to be
# installed; it has a fallback for when they are not. No wattbus process runs that client: take the
# fallback, in every process, before any module imports httpx.
_sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
