"""``wattbus calibrate TYPE NAME``: a plugin's calibration walk-through, and writing its result into the
config.

Every plugin whose record has a ``calibrate`` entry is listed. The plugin measures and talks to the user; this
module shows the values it found, asks before writing (``--yes`` does not), keeps the previous file as
``FILE.YYYYmmdd-HHMMSS.bak`` next to it, and edits only those keys with ``tomlkit``, so comments, order and
layout of the rest of the file stay as the user wrote them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit

from bus.config import ConfigError, find_config, load_config
from wattbus.plugins import plugins, resolve


def main(config: str | None, argv: list[str]) -> int:
    entries = {p.type: p.calibrate for p in plugins("producer") if p.calibrate is not None}
    p = argparse.ArgumentParser(prog="wattbus calibrate", add_help=False,
                                description="Calibrate a configured device against a reference and write the "
                                "result into the config (a backup is kept). Options after NAME are the "
                                "plugin's (--help there lists them).")
    p.add_argument("type", choices=sorted(entries), help="the plugin")
    p.add_argument("name", help="what to calibrate (adc: a circuit, by its table or device name)")
    p.add_argument("--yes", action="store_true", help="write without asking")
    p.add_argument("--dry-run", action="store_true", help="show the new values, write nothing")
    if not argv or argv[0] in ("-h", "--help"):
        p.print_help()
        return 0 if argv else 2
    args, rest = p.parse_known_args(argv)
    path = find_config(config)
    app = load_config(path, resolve)
    changes = entries[args.type](app, args.name, rest)
    if not changes:
        print("Nothing to change.")
        return 0
    print(f"\nIn {path}:")
    for keys, value in changes.items():
        print(f"  {'.'.join(keys)} = {tomlkit.item(value).as_string()}")
    if args.dry_run:
        print("(dry run: nothing written)")
        return 0
    if not args.yes and not _confirm(f"Write these to {path}? [y/N] "):
        print("Not written.")
        return 1
    backup = write_values(path, changes)
    print(f"Written; the previous file is {backup}.")
    print("Restart the process that reads it for the new values to take effect "
          "(systemctl restart wattbus@NAME).")
    return 0


def _confirm(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        print()
        return False


def write_values(path: Path, changes: Mapping[tuple[str, ...], Any]) -> Path:
    """Set each key path to its value in the TOML file at ``path`` (creating the key in its existing table
    when it is not there), keeping everything else as it was; the old file is kept as a backup, whose path is
    returned. The new file replaces the old in one step (a crash leaves one or the other, whole)."""
    text = path.read_text("utf-8")
    doc = tomlkit.parse(text)
    for keys, value in changes.items():
        table: Any = doc
        for i, key in enumerate(keys[:-1]):
            if key not in table:
                raise ConfigError([f"{path}: [{'.'.join(keys[:i + 1])}] is not in the file: cannot write "
                                   f"{'.'.join(keys)}"])
            table = table[key]
        table[keys[-1]] = value
    backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{n}.bak")
        n += 1
    shutil.copy2(path, backup)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(tomlkit.dumps(doc))
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup
