"""``wattbus acl``: Mosquitto's ACL from the config, so each process may use exactly its own topics.

Every process logs in as its own broker user (by default its process name, ``MqttConfig.for_process``), and
the ACL written here gives that user its own status, health and dead-letter topics plus what its plugin
reads and writes: a producer its devices' reading/status/state topics and whatever it listens to, a consumer
what it consumes and produces. A process that tries anything else is refused by the broker (a QoS 1 publish
gets PUBACK "not authorized", a subscription receives nothing). ``--processes`` lists the processes for
``deploy/install.sh``, which makes one broker user, one password file and one systemd unit per line.

What each plugin type needs is the table ``PLUGIN_ACCESS`` below: adding a plugin means adding its row.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bus import topics
from bus.config import AppConfig, PluginConfig


@dataclass
class Access:
    """Topic filters a process may read and write; ``raw`` ones are outside the site's topic_prefix."""

    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    raw_read: list[str] = field(default_factory=list)
    raw_write: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _unshared(topic_filter: str) -> str:
    """``$share/group/filter`` -> ``filter``: Mosquitto checks a shared subscription against its filter."""
    return topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter


# -- what each plugin type reads and writes, besides every process's own status/health/DLQ -------------

def _devices(source: str, devices: list[str], state: bool = True) -> Access:
    """A producer's devices: it writes readings and status, and reads back its own retained state."""
    a = Access()
    for d in devices:
        a.write += [topics.reading(source, d), topics.status(source, d)]
        if state:
            a.write.append(topics.state(source, d))
            a.read.append(topics.state(source, d))
    return a


def _hhpc(name: str, cfg, app: AppConfig) -> Access:
    return _devices("hhpc", [cfg.device or name])


def _adc(name: str, cfg, app: AppConfig) -> Access:
    a = _devices("adc", [c.device or key for key, c in cfg.circuits.items()])
    a.read += sorted({f"{c.voltage_from}/reading" for c in cfg.circuits.values() if c.voltage_from})
    return a


def _p1(name: str, cfg, app: AppConfig) -> Access:
    from producers.p1 import SUB_SUFFIXES

    device = cfg.device or name
    return _devices("p1", [device] + [device + s for s in SUB_SUFFIXES])


def _shelly(name: str, cfg, app: AppConfig) -> Access:
    # from the config's own fields, not cfg.specs(), which also reads the devices' passwords
    entries = [(e.device, e.mqtt_prefix or cfg.mqtt_prefix) for e in cfg.devices] or \
        [(cfg.device or name, cfg.mqtt_prefix)]
    a = _devices("shelly", [device for device, _ in entries])
    if cfg.mode == "mqtt":
        for device, prefix in entries:
            if prefix:  # the device's own topics, outside the site prefix (producers/shelly/follower.py)
                a.raw_read += [f"{prefix}/status/+", f"{prefix}/events/rpc", f"{prefix}/online"]
            else:
                a.notes.append(f"shelly device {device}: set `mqtt_prefix` so that the ACL allows its topics")
    return a


def _sim(name: str, cfg, app: AppConfig) -> Access:
    serials = [m.serial for m in cfg.meters]
    a = _devices("sim", serials)
    for s in serials:  # the head-end views and remote configuration (producers/sim/README.md)
        a.write += [f"sim/{s}/config", f"sim/{s}/heartbeat"]
        a.read.append(f"sim/{s}/config/set")
    return a


def _fronius(name: str, cfg, app: AppConfig) -> Access:
    return _devices("fronius", [cfg.device or name], state=False)


def _weather(name: str, cfg, app: AppConfig) -> Access:
    device = cfg.device or name
    a = _devices("weather", [device], state=False)
    a.write.append(topics.forecast("weather", device))  # the retained forecast (producers/weather/README.md)
    return a


def _store(name: str, cfg, app: AppConfig) -> Access:
    return Access(read=[_unshared(t) for t in cfg.topics])


def _aggregate(name: str, cfg, app: AppConfig) -> Access:
    a = Access(read=[_unshared(t) for t in getattr(cfg, "topics", [topics.ALL_READINGS])] + ["agg/#"],
               write=["agg/#"])
    tariff = getattr(app, "tariff", None)  # dynamic prices from an MQTT topic ([tariff] import/export)
    for side in (getattr(tariff, "import_", None), getattr(tariff, "export", None)):
        if getattr(side, "dynamic_topic", None):
            a.read.append(side.dynamic_topic)
    return a


def _homeassistant(name: str, cfg, app: AppConfig) -> Access:
    discovery = getattr(cfg, "discovery_prefix", "homeassistant")
    a = Access(read=[topics.ALL_READINGS, topics.ALL_STATUS, "wattbus/+/status", "wattbus/+/health", "agg/#",
                     "relay/+/state", "ha/#"], write=["ha/#"])
    # HA's own topics never get the site's topic_prefix: discovery documents, HA's birth/last will
    a.raw_read += [f"{discovery}/#", getattr(cfg, "ha_status_topic", f"{discovery}/status")]
    a.raw_write.append(f"{discovery}/#")
    return a


def _relay(name: str, cfg, app: AppConfig) -> Access:
    """Only the meters it decides on, its own relays' topics, and each output's device topics (raw)."""
    a = _aggregate(name, cfg, app)  # the dynamic price topics, when [tariff] has them
    a.read, a.write = [r for r in a.read if r not in (topics.ALL_READINGS, "agg/#")], []
    meters = [cfg.grid] + [r.load for r in cfg.relay.values()]
    a.read += [topics.reading(*m.split("/", 1)) for m in meters if m]
    for relay, r in cfg.relay.items():
        a.read += [topics.relay_set(relay), topics.relay_state(relay)]
        a.write.append(topics.relay_state(relay))
        out = r.output
        kind = out.__struct_config__.tag  # the output's `kind`
        if kind == "tasmota":
            a.raw_write.append(f"cmnd/{out.topic}/#")
            a.raw_read.append(f"stat/{out.topic}/#")
        elif kind == "shelly_mqtt":
            a.raw_write.append(f"{out.prefix}/rpc")
            a.raw_read.append(f"wattbus-relay-{relay}/rpc")
        elif kind == "mqtt":
            a.raw_write.append(out.command_topic)
            if out.state_topic:
                a.raw_read.append(out.state_topic)
    return a


Rule = Callable[[str, PluginConfig, AppConfig], Access]

PLUGIN_ACCESS: dict[tuple[str, str], Rule | Access] = {
    ("producer", "hhpc"): _hhpc,
    ("producer", "adc"): _adc,
    ("producer", "p1"): _p1,
    ("producer", "shelly"): _shelly,
    ("producer", "sim"): _sim,
    ("producer", "fronius"): _fronius,
    ("producer", "weather"): _weather,
    ("consumer", "store"): _store,
    ("consumer", "exporter"): Access(read=[topics.ALL_READINGS, topics.ALL_STATUS, "wattbus/+/status",
                                           "wattbus/+/health"]),
    ("consumer", "aggregate"): _aggregate,
    # the API shows everything and sends a sim meter its new settings
    ("consumer", "api"): Access(read=["#"], write=["sim/+/config/set"]),
    ("consumer", "homeassistant"): _homeassistant,
    ("consumer", "relay"): _relay,
}
"""(kind, type) -> the topics that plugin uses (a function of the process name, its config and the whole
config, or fixed)."""


def process_access(kind: str, name: str, cfg: PluginConfig, app: AppConfig) -> Access:
    """Everything process ``name`` may read and write (topics without the site prefix)."""
    rule = PLUGIN_ACCESS.get((kind, cfg.type))
    if rule is None:  # a plugin without a row: its own devices (producer) or every reading (consumer)
        if kind == "producer":
            a = Access(write=[f"{cfg.type}/+/reading", f"{cfg.type}/+/status", f"{cfg.type}/+/state"],
                       read=[f"{cfg.type}/+/state"])
        else:
            a = Access(read=[topics.ALL_READINGS])
        a.notes.append(f"no ACL row for {kind} type {cfg.type!r} in wattbus/acl.py: generic access")
    else:
        a = rule(name, cfg, app) if callable(rule) else Access(list(rule.read), list(rule.write))
    a.write += [topics.process_status(name), topics.process_health(name), topics.dlq(name)]
    a.read.append(topics.process_health(name))  # a producer reads its last run's health back at start
    return a


def processes(app: AppConfig) -> list[tuple[str, str, PluginConfig]]:
    return [*(("producer", n, c) for n, c in app.producers.items()),
            *(("consumer", n, c) for n, c in app.consumers.items())]


def render_acl(app: AppConfig, extra: str = "") -> str:
    """The Mosquitto ACL file for ``app``: one ``user`` section per broker user, every topic once."""
    prefix = app.mqtt.topic_prefix
    users: dict[str, dict[str, set[str]]] = {}
    who: dict[str, list[str]] = {}
    notes: list[str] = []
    for kind, name, cfg in processes(app):
        a = process_access(kind, name, cfg, app)
        user = app.mqtt.for_process(name).username or name
        perms = users.setdefault(user, {})
        who.setdefault(user, []).append(f"{kind} {name} ({cfg.type})")
        for filters, mode, raw in ((a.read, "read", False), (a.write, "write", False),
                                   (a.raw_read, "read", True), (a.raw_write, "write", True)):
            for f in filters:
                perms.setdefault(f if raw else prefix + f, set()).add(mode)
        notes += [f"{name}: {n}" for n in a.notes]
    out = [f"# Mosquitto ACL for wattbus, written by `wattbus acl` from {app.path}: do not edit, run it",
           "# again.",
           "# Each process logs in as its own user and may use exactly these topics"
           + (f" (topic_prefix {prefix!r})." if prefix else "."),
           "# Hand-written rules (a Shelly's own user, a bridge) go in the file given to --extra",
           "# (deploy/install.sh passes /etc/wattbus/mosquitto/acl.local when it exists)."]
    out += [f"# NOTE {n}" for n in notes]
    for user, perms in users.items():
        out += ["", f"# {', '.join(who[user])}", f"user {user}"]
        for topic in sorted(perms):
            modes = perms[topic]
            out.append(f"topic {'readwrite' if len(modes) == 2 else next(iter(modes))} {topic}")
    if extra.strip():
        out += ["", "# -- rules from --extra --", extra.rstrip()]
    return "\n".join(out) + "\n"


def _needs(kind: str, cfg: PluginConfig) -> str:
    """Hardware a process's systemd unit must be given (a drop-in from deploy/systemd/), or '-'."""
    if kind == "producer" and cfg.type == "adc" and getattr(cfg, "spi", "") == "spidev":
        return "spi"
    if kind == "producer" and cfg.type == "p1" and not str(getattr(cfg, "port", "")).startswith("tcp://"):
        return "serial"
    return "-"


def process_table(app: AppConfig) -> str:
    """One line per process: name, kind, type, broker user, hardware (what deploy/install.sh reads)."""
    return "".join(f"{name}\t{kind}\t{cfg.type}\t{app.mqtt.for_process(name).username}\t{_needs(kind, cfg)}\n"
                   for kind, name, cfg in processes(app))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``wattbus acl`` on the CLI."""
    s = sub.add_parser("acl", help="write Mosquitto's ACL from the config: each process gets only its topics")
    s.add_argument("-o", "--output", help="the ACL file to write (default: print it)")
    s.add_argument("--extra", help="a file of hand-written rules to append (a Shelly's own user, a bridge)")
    s.add_argument("--processes", action="store_true",
                   help="instead, list each process: name, kind, type, broker user, hardware (spi/serial/-)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bus.config import find_config, load_config
    from wattbus.plugins import resolve

    app = load_config(find_config(args.config), resolve)
    if args.processes:
        sys.stdout.write(process_table(app))
        return 0
    try:
        extra = Path(args.extra).read_text("utf-8") if args.extra else ""
    except OSError as exc:
        print(f"wattbus acl: cannot read --extra {args.extra}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    text = render_acl(app, extra)
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if out.exists() and out.read_text("utf-8") == text:
        return 0  # unchanged: leave the file alone (install.sh reloads Mosquitto only on a change)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, "utf-8")
    if out.exists():  # keep the installed owner and mode (root:mosquitto 0640)
        st = out.stat()
        os.chmod(tmp, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
    else:
        os.chmod(tmp, 0o640)
    tmp.replace(out)
    print(f"wrote {out} ({len(app.producers) + len(app.consumers)} processes)", file=sys.stderr)
    return 0
