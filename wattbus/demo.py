"""``wattbus demo``: the whole product on emulated hardware and embedded defaults, no config needed.

The demo config is every plugin's ``demo.toml`` fragment, in registry order (producers, then consumers), so
a plugin joins the demo by adding its fragment: nothing here names a plugin. In a fragment these
placeholders are substituted first:

- ``${data}``: the demo's data folder (absolute); ``${sink}``: the demo store's sink URL (SQLite in it);
- ``${mqtt_port}``: the broker's port; ``${port:N}``: TCP port N, or a free port with ``--free-ports``
  (the same N is the same port in every fragment).

A fragment may also hold ``[emulator.NAME] args = [...]``: the demo's hardware, a ``wattbus emulate TYPE
...`` process (TYPE: the fragment's plugin) started before the processes that talk to it. Emulator tables
stay out of the written ``wattbus.toml``, which is otherwise the fragments one after the other.

Before anything starts, each plugin's ``demo_data`` prepares what its fragment names under ``${data}``; a
Mosquitto with the project's config is started unless one is listening already (always with
``--free-ports``, which a test uses to keep off the standard ports).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bus.config import AppConfig, ConfigError, load_config
from bus.plugin import Plugin
from wattbus.broker import Broker, free_port, port_open
from wattbus.plugins import plugin, plugins, resolve
from wattbus.supervisor import supervise

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
EMULATOR_TABLE = "emulator"
HEADER = """\
# Written by `wattbus demo` from every plugin's demo.toml. Copy it as a starting point for your own
# wattbus.toml (README: Configuration reference). [site] is left to its defaults (Europe/Brussels) unless a
# fragment sets it.
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
"""


@dataclass
class Ports:
    """``${port:N}``: N itself, or (``free``) one free loopback port per distinct N."""

    free: bool
    chosen: dict[int, int] = field(default_factory=dict)

    def __call__(self, wanted: int) -> int:
        if wanted not in self.chosen:
            self.chosen[wanted] = free_port() if self.free else wanted
        return self.chosen[wanted]


@dataclass
class DemoConfig:
    """The composed demo: the config text to write and the hardware to start first."""

    text: str
    hardware: dict[str, list[str]]
    ports: Ports


def compose(fragments: list[tuple[Plugin, Path]], *, data: Path, mqtt_port: int, ports: Ports) -> DemoConfig:
    """Substitute every fragment's placeholders, check that no two define the same table, set the emulator
    tables apart, and join the rest under the demo's [mqtt]."""
    values = {"data": str(data), "sink": f"sqlite:///{data / 'wattbus.db'}", "mqtt_port": str(mqtt_port)}
    owner: dict[tuple[str, ...], Path] = {("mqtt",): Path(__file__)}  # the demo's broker
    parts = [HEADER.format(mqtt_port=mqtt_port)]
    hardware: dict[str, list[str]] = {}
    for p, path in fragments:
        text = _substitute(path, path.read_text("utf-8"), values, ports)
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML after substitution: {exc}"]) from None
        for key in _table_keys(tables):
            if key in owner:
                raise ConfigError([f"{path}: [{'.'.join(key)}] is defined by {owner[key]} too; "
                                   f"every demo table belongs to one fragment"])
            owner[key] = path
        for name, spec in tables.get(EMULATOR_TABLE, {}).items():
            args = spec.get("args") if isinstance(spec, dict) else None
            if p.emulator is None:
                raise ConfigError([f"{path}: [{EMULATOR_TABLE}.{name}]: the {p.type} plugin has no emulator"])
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise ConfigError([f"{path}: [{EMULATOR_TABLE}.{name}]: expected `args = [\"...\"]`, the "
                                   f"arguments of `wattbus emulate {p.type}`"])
            hardware[name] = [sys.executable, "-m", "wattbus", "emulate", p.type, *args]
        parts.append(f"\n# ---- {_shown(path)} ----\n" + _without_emulators(text).strip() + "\n")
    return DemoConfig("".join(parts), hardware, ports)


def _substitute(path: Path, text: str, values: dict[str, str], ports: Ports) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name in values:
            return values[name]
        if (n := re.fullmatch(r"port:(\d{1,5})", name)) and 0 < int(n.group(1)) < 65536:
            return str(ports(int(n.group(1))))
        raise ConfigError([f"{path}: unknown placeholder ${{{name}}} (expected ${{data}}, ${{sink}}, "
                           f"${{mqtt_port}} or ${{port:N}})"])

    return PLACEHOLDER.sub(one, text)


def _table_keys(tables: dict) -> list[tuple[str, ...]]:
    """The tables a fragment owns: ``producer.X``/``consumer.X``/``emulator.X`` by name, others whole."""
    out: list[tuple[str, ...]] = []
    for top, value in tables.items():
        if top in ("producer", "consumer", EMULATOR_TABLE) and isinstance(value, dict):
            out += [(top, name) for name in value]
        else:
            out.append((top,))
    return out


def _without_emulators(text: str) -> str:
    """The fragment's text minus its ``[emulator.NAME]`` tables (from such a header to the next table)."""
    kept, skipping = [], False
    for line in text.splitlines():
        header = re.match(r"\s*\[\[?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$", line)
        if header:
            skipping = header.group(1).split(".")[0].strip("\"' ") == EMULATOR_TABLE
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)


def links(app: AppConfig) -> list[tuple[str, str]]:
    """(what, URL) for every configured consumer whose plugin serves something to open."""
    out = []
    for name, cfg in app.consumers.items():
        p = plugin("consumer", cfg.type)
        if p is not None and p.links is not None:
            out += [(f"{label} ({name})", url) for label, url in p.links(cfg).items()]
    return out


def _prepare(make: Callable[[Path], None], data: Path) -> None:
    """Run a plugin's ``demo_data`` in a child process: what it imports and allocates (numpy, a year of
    arrays) is gone with it, instead of staying in the supervisor's memory for the whole demo."""
    code = ("import importlib, sys; from pathlib import Path; "
            "getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(Path(sys.argv[3]))")
    done = subprocess.run([sys.executable, "-c", code, make.__module__, make.__qualname__, str(data)])
    if done.returncode != 0:
        raise ConfigError([f"preparing the demo's data in {data} failed (exit {done.returncode}): see above"])


def run_demo(args: argparse.Namespace) -> int:
    data = Path(args.dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    everything = plugins()
    for p in everything:
        if p.demo_data is not None:
            _prepare(p.demo_data, data)
    ports = Ports(free=args.free_ports)
    mqtt_port = free_port() if args.free_ports else args.mqtt_port
    demo = compose([(p, p.demo) for p in everything if p.demo is not None], data=data, mqtt_port=mqtt_port,
                   ports=ports)
    busy = [n for n in demo.ports.chosen.values() if port_open(n)]
    if busy:
        raise ConfigError([f"port(s) {', '.join(map(str, busy))} already in use: stop what listens there, "
                           f"or run `wattbus demo --free-ports`"])
    cfg = data / "wattbus.toml"
    cfg.write_text(demo.text, "utf-8")
    app = load_config(cfg, resolve)
    broker = None
    if args.free_ports or not port_open(mqtt_port):
        broker = Broker(data / "mosquitto", port=mqtt_port).start()
        print(f"demo: started mosquitto on 127.0.0.1:{mqtt_port} (mosquitto/mosquitto.dev.conf)",
              file=sys.stderr)
    else:
        print(f"demo: using the MQTT broker already listening on 127.0.0.1:{mqtt_port}", file=sys.stderr)
    print(_banner(app, cfg, mqtt_port), flush=True)
    try:
        return supervise(app, hardware=demo.hardware)
    finally:
        if broker:
            broker.stop()


def _banner(app: AppConfig, cfg: Path, mqtt_port: int) -> str:
    width = max([len(what) for what, _ in links(app)] + [10])
    lines = [f"wattbus demo: {len(app.producers)} producers ({', '.join(app.producers)}) and "
             f"{len(app.consumers)} consumers ({', '.join(app.consumers)}); config {cfg}", "Open:"]
    lines += [f"  {what:<{width}}  {url}" for what, url in links(app)]
    lines += [f"Watch the bus:  mosquitto_sub -p {mqtt_port} -t '#' -v",
              f"Read the store: wattbus -c {cfg} export --source S --device D --from DATE --to DATE",
              "Ctrl-C stops everything."]
    return "\n".join(lines)
