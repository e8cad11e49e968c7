"""Configuration: one TOML file, validated into typed structs, with errors a user can act on.

A config error names the file, the line, the key and what was expected, and the CLI exits with status 2
without a traceback. Plugin sections (``[producer.NAME]``, ``[consumer.NAME]``) are validated by the
plugin's own ``Config`` struct, found through the registry by the section's ``type``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from bus.envelope import NAME_RULE, Limits, is_name
from bus.secrets import SecretError, read_secret
from bus.tariff import TariffConfig

DEFAULT_PATHS = (Path("wattbus.toml"), Path("/etc/wattbus/wattbus.toml"))
PASSWORD_ENV = "WATTBUS_MQTT_PASSWORD"


class ConfigError(Exception):
    """One or more problems in a config file; ``str()`` is the message for the user."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class PluginConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every producer/consumer ``Config``: the section's ``type`` picks the plugin."""

    type: str


class MqttConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How a process reaches the broker (DESIGN: MQTT v5, persistent sessions, QoS 1)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    """Broker login; default: the process's own name, so each process is its own broker user."""
    password_file: str | None = None
    """File holding the password (never in the config or argv); else $WATTBUS_MQTT_PASSWORD. ``{process}``
    stands for the process name ("/etc/wattbus/mqtt/{process}.pass"); $WATTBUS_MQTT_PASSWORD_FILE wins
    (the systemd unit points it at the unit's own credential)."""
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    topic_prefix: str = ""
    keepalive: int = 30
    session_expiry: int = 86400
    """Seconds the broker keeps a consumer's session (and queues its messages) while it is away."""
    queue_max: int = 100_000
    """Producer offline queue, in messages (a day at one reading a second fits)."""
    queue_dir: str | None = None
    """Spool the producer offline queue to disk here (off by default: no SD-card wear)."""
    max_packet_size: int = 262_144
    """The broker's packet limit (mosquitto ``max_packet_size``, 256 KiB as shipped); the CONNACK's, when
    lower, wins. Bounds ``batch``/``batch_max`` and every publish."""
    resend_window_s: float = 75.0
    """Producers keep what the broker acknowledged this long and send it again after a reconnect: Mosquitto
    saves to disk only every ``autosave_interval`` (60 s), so a broker crash loses what it acknowledged
    since. At least that interval; 0 turns it off."""
    resend_window_mb: float = 16.0
    """Memory bound of that window (a live device needs kilobytes; a flat-out replay fills it in seconds)."""
    resend_window_full: Literal["forget", "wait"] = "forget"
    """When the window is full: "forget" its oldest message (counted as resend_window_overflow: a replay
    runs at full speed and can be re-run), or "wait" until it ages out (the guarantee holds at any rate,
    a replay slows to resend_window_mb per resend_window_s)."""

    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version. "3.1.1" for clustered brokers without MQTT 5 (NATS, RabbitMQ; docs/scaling.md): the
    session is kept by ``clean_session false`` for as long as the broker decides (``session_expiry`` 0 still
    means a clean session), refusals arrive without reason codes, and a ``$share/GROUP/`` filter is
    subscribed as its plain filter, so every copy gets every message (the idempotent store stays right)."""
    hosts: list[str] = msgspec.field(default_factory=list)
    """Further nodes of a clustered broker, "host:port": after a lost connection or a failed attempt the
    client tries the next one in turn (``host``/``port`` first)."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("`port` must be 1..65535")
        for node in self.hosts:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"`hosts` entries must be \"host:port\" with port 1..65535, not {node[:80]!r}")
        if self.topic_prefix and not self.topic_prefix.endswith("/"):
            raise ValueError("`topic_prefix` must end with '/' (e.g. \"home1/\")")
        if any(c in self.topic_prefix for c in "#+$"):
            raise ValueError("`topic_prefix` must not contain #, + or $")
        if not 4096 <= self.max_packet_size <= 268_435_455:
            raise ValueError("`max_packet_size` must be 4096..268435455 bytes (mosquitto's max_packet_size)")
        if self.resend_window_s < 0 or self.resend_window_mb <= 0:
            raise ValueError("`resend_window_s` must be >= 0 and `resend_window_mb` > 0")

    def nodes(self) -> list[tuple[str, int]]:
        """Every broker address to try, in order: ``host``/``port``, then ``hosts``."""
        return [(self.host, self.port)] + [(h, int(p)) for h, _, p in (n.rpartition(":") for n in self.hosts)]

    def for_process(self, name: str) -> MqttConfig:
        """The login of process ``name``: its username (default its name) and its own password file."""
        pw_file = os.environ.get("WATTBUS_MQTT_PASSWORD_FILE") or self.password_file
        return msgspec.structs.replace(self, username=(self.username or name).replace("{process}", name),
                                       password_file=pw_file.replace("{process}", name) if pw_file else None)

    def password(self) -> str | None:
        """``password_file``, else ``$WATTBUS_MQTT_PASSWORD``; an unreadable file is a config error."""
        try:
            return read_secret(self.password_file, PASSWORD_ENV)
        except SecretError as exc:
            raise ConfigError([f"mqtt.password_file: {exc}"]) from None


class SiteConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    timezone: str = "Europe/Brussels"
    latitude: float = 50.85
    longitude: float = 4.35

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"`timezone`: unknown time zone {self.timezone!r} (expected e.g. \"Europe/Brussels\")")


class ReadingsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Plausibility limits every consumer applies to readings (bus.envelope.check_plausible)."""

    min_ts: str = "2000-01-01"
    """Earliest plausible reading time, UTC (a Pi whose clock was never set says 1970)."""
    max_future_s: float = 300.0
    """How far ahead of the receiving host's clock a reading may be stamped."""
    max_age_days: float = 0.0
    """Reject readings older than this; 0 = any age (replays of old datasets are legitimate)."""
    simulated: list[str] = msgspec.field(default_factory=lambda: ["sim"])
    """Sources on a simulated clock (accelerated or backdated): exempt from the two limits relative to now."""

    def __post_init__(self) -> None:
        try:
            _utc_ms(self.min_ts)
        except ValueError:
            raise ValueError(f"`min_ts`: expected an ISO date like \"2000-01-01\", got {self.min_ts!r}"
                             ) from None
        if not 0 <= self.max_future_s <= 10 * 365 * 86400:
            raise ValueError("`max_future_s` must be 0..315360000 seconds")
        if self.max_age_days < 0:
            raise ValueError("`max_age_days` must be >= 0 (0 = any age)")

    def limits(self) -> Limits:
        return Limits(_utc_ms(self.min_ts), int(self.max_future_s * 1000),
                      int(self.max_age_days * 86_400_000), frozenset(self.simulated))


def _utc_ms(text: str) -> int:
    from datetime import datetime, timezone

    dt = datetime.fromisoformat(text)
    return int((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp() * 1000)


class LogConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    level: str = "info"

    def __post_init__(self) -> None:
        if self.level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("`level` must be one of debug, info, warning, error")


class _Top(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    site: SiteConfig = msgspec.field(default_factory=SiteConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    readings: ReadingsConfig = msgspec.field(default_factory=ReadingsConfig)
    tariff: TariffConfig | None = None
    producer: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    consumer: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


@dataclass
class AppConfig:
    """A whole validated config file."""

    path: Path
    mqtt: MqttConfig
    site: SiteConfig
    log: LogConfig
    producers: dict[str, PluginConfig] = field(default_factory=dict)
    consumers: dict[str, PluginConfig] = field(default_factory=dict)
    readings: ReadingsConfig = field(default_factory=ReadingsConfig)
    tariff: TariffConfig | None = None
    """``[tariff]`` (bus.tariff): None when the file has none."""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.site.timezone)

    def mqtt_for(self, name: str) -> MqttConfig:
        """Process ``name``'s broker login; a password file it cannot read is a config error (exit 2), not
        a traceback and a systemd restart loop."""
        mqtt = self.mqtt.for_process(name)
        if mqtt.password_file:
            try:
                secret = Path(mqtt.password_file).read_text("utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                where = self._where("mqtt", "password_file")
                why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError([f"{where}: mqtt.password_file: cannot read {mqtt.password_file} "
                                   f"(process {name}): {why}"]) from None
            if not secret:
                where = self._where("mqtt", "password_file")
                raise ConfigError([f"{where}: mqtt.password_file: {mqtt.password_file} is empty "
                                   f"(process {name})"])
        return mqtt

    def _where(self, *keys: str) -> str:
        """'file:line' of a key, for a problem found after parsing (the file is read again: errors only)."""
        try:
            return f"{self.path}:{_KeyLines(self.path.read_text('utf-8')).find(keys)}"
        except OSError:
            return str(self.path)

    def check_secrets(self) -> None:
        """Every process's password file is readable (check-config); ConfigError lists each that is not."""
        problems: list[str] = []
        for name in [*self.producers, *self.consumers]:
            try:
                self.mqtt_for(name)
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems)

    def process(self, name: str) -> tuple[str, PluginConfig]:
        """('producer'|'consumer', config) for a process name."""
        if name in self.producers:
            return "producer", self.producers[name]
        if name in self.consumers:
            return "consumer", self.consumers[name]
        known = ", ".join([*self.producers, *self.consumers]) or "none"
        raise ConfigError([f"{self.path}: no process named {name!r} (configured: {known})"])


Resolver = Callable[[str, str], type[PluginConfig] | None]
"""(kind, type) -> the plugin's Config class, or None when no plugin has that type."""


def find_config(explicit: str | os.PathLike | None = None) -> Path:
    """-c FILE, else $WATTBUS_CONFIG, else ./wattbus.toml, else /etc/wattbus/wattbus.toml."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("WATTBUS_CONFIG"):
        return Path(env)
    for candidate in DEFAULT_PATHS:
        if candidate.exists():
            return candidate
    return DEFAULT_PATHS[0]


def load_config(path: str | os.PathLike, resolve: Resolver) -> AppConfig:
    """Read and validate ``path``; raise ConfigError listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from None
    return parse_config(text, path, resolve)


def parse_config(text: str, path: Path, resolve: Resolver) -> AppConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = f":{where.group(1)}" if where else ""
        raise ConfigError([f"{path}{line}: not valid TOML: {exc}"]) from None
    lines = _KeyLines(text)
    problems: list[str] = []
    top_raw = {k: v for k, v in raw.items() if k not in ("producer", "consumer")}
    try:
        top = msgspec.convert(top_raw, _Top)
    except msgspec.ValidationError as exc:
        problems.append(_describe(path, lines, (), exc, _Top))
        top = _Top()
    producers = _plugins(raw, "producer", path, lines, resolve, problems)
    consumers = _plugins(raw, "consumer", path, lines, resolve, problems)
    for kind, plugins in (("producer", producers), ("consumer", consumers)):
        for name, cfg in plugins.items():
            problems += [f"{path}:{lines.find((kind, name, key))}: {kind}.{name}.{key}: {msg}"
                         for key, msg in _bus_limits(cfg, top.mqtt)]
    for name in set(producers) & set(consumers):
        problems.append(f"{path}:{lines.find(('consumer', name))}: consumer.{name}: "
                        f"a producer has the same name; process names must be unique")
    if problems:
        raise ConfigError(problems)
    return AppConfig(path, top.mqtt, top.site, top.log, producers, consumers, top.readings, tariff=top.tariff)


def _plugins(raw: dict, kind: str, path: Path, lines: _KeyLines, resolve: Resolver,
             problems: list[str]) -> dict[str, PluginConfig]:
    out: dict[str, PluginConfig] = {}
    sections = raw.get(kind, {})
    if not isinstance(sections, dict):
        problems.append(f"{path}:{lines.find((kind,))}: {kind}: expected tables like [{kind}.NAME]")
        return out
    for name, section in sections.items():
        where = (kind, name)
        if not is_name(name):
            problems.append(f"{path}:{lines.find(where)}: {kind}.{name}: process name {name!r} is not "
                            f"allowed: {NAME_RULE}")
            continue
        if not isinstance(section, dict):
            problems.append(f"{path}:{lines.find(where)}: {kind}.{name}: expected a table [{kind}.{name}]")
            continue
        ptype = section.get("type")
        if not isinstance(ptype, str):
            problems.append(_no_type(path, lines, kind, name, section))
            continue
        cls = resolve(kind, ptype)
        if cls is None:
            problems.append(f"{path}:{lines.find((*where, 'type'))}: {kind}.{name}.type: "
                            f"unknown {kind} type {ptype!r}{_suggest(ptype, _known_types(kind))}")
            continue
        try:
            out[name] = msgspec.convert(section, cls)
        except msgspec.ValidationError as exc:
            problems.append(_describe(path, lines, where, exc, cls))
    return out


MIN_ITEM_BYTES = 40
"""The smallest reading a batch can carry, encoded (``{"ts":946684800000,"metrics":{}},``)."""


def max_batch(mqtt: MqttConfig) -> int:
    """Most readings one message can carry under the broker's packet limit (bounds batch, batch_max)."""
    return (mqtt.max_packet_size - 1024) // MIN_ITEM_BYTES


def _bus_limits(cfg: PluginConfig, mqtt: MqttConfig) -> list[tuple[str, str]]:
    """Checks every plugin gets from the bus, whatever the plugin checks itself: device names go into
    topics, and batches into messages no larger than the broker takes."""
    problems = []
    device = getattr(cfg, "device", None)
    if isinstance(device, str) and not is_name(device):
        problems.append(("device", f"device name {device!r} is not allowed: {NAME_RULE} "
                                   "(it becomes a topic level: {source}/{device}/reading)"))
    batch = getattr(cfg, "batch", None)
    if isinstance(batch, int) and not isinstance(batch, bool) and not 1 <= batch <= max_batch(mqtt):
        problems.append(("batch", f"must be 1..{max_batch(mqtt)} readings: one message must fit the broker's "
                                  f"packet limit ([mqtt] max_packet_size = {mqtt.max_packet_size} bytes)"))
    batch_max, inflight = getattr(cfg, "batch_max", None), getattr(cfg, "inflight", 100)
    if isinstance(batch_max, int) and isinstance(inflight, int) and inflight > 0:
        most = max_batch(mqtt) * inflight  # a consumer never holds more than `inflight` messages at once
        if not 1 <= batch_max <= most:
            problems.append(("batch_max", f"must be 1..{most} readings: `inflight` ({inflight}) messages of "
                                          f"at most {max_batch(mqtt)} readings each "
                                          "([mqtt] max_packet_size)"))
    return problems


def _no_type(path: Path, lines: _KeyLines, kind: str, name: str, section: dict[str, Any]) -> str:
    """A section without ``type``: name the misspelt key if there is one (``tpye``), else what is missing."""
    types = _known_types(kind)
    near = difflib.get_close_matches("type", [k for k in section if isinstance(k, str)], n=1)
    if near:
        return (f"{path}:{lines.find((kind, name, near[0]))}: {kind}.{name}.{near[0]}: unknown key; "
                f"did you mean `type`? (the {kind} type: one of {', '.join(types)})")
    what = "missing" if "type" not in section else f"expected a string, got {section['type']!r}"
    return (f"{path}:{lines.find((kind, name))}: {kind}.{name}.type: {what}; "
            f"expected the {kind} type, one of {', '.join(types)}")


def _known_types(kind: str) -> list[str]:
    """The registered type names (the registries are plain tables: importing them loads no plugin)."""
    from consumers.registry import CONSUMERS
    from producers.registry import PRODUCERS

    return list(PRODUCERS if kind == "producer" else CONSUMERS)


def _suggest(word: str, choices: list[str]) -> str:
    hint = difflib.get_close_matches(word, choices, n=1)
    return (f"; did you mean `{hint[0]}`?" if hint else "") + (f" (expected one of: {', '.join(choices)})"
                                                              if choices else "")


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_POST_INIT_KEY = re.compile(r"^`(?P<key>[A-Za-z0-9_]+)`:? (?P<rest>.*)$", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _describe(path: Path, lines: _KeyLines, base: tuple[str, ...], exc: Exception, cls: type) -> str:
    """Turn a msgspec error into 'file:line: dotted.key: what was expected'."""
    m = _AT.match(str(exc))
    msg = m.group("msg") if m else str(exc)
    sub = tuple(p for p in re.split(r"\.|\[|\]", (m.group("path") or "") if m else "") if p)
    keys = base + sub
    if u := _UNKNOWN.match(msg):
        keys += (u.group("field"),)
        struct = _struct_at(cls, sub)
        known = list(struct.__struct_fields__) if struct else []
        hint = difflib.get_close_matches(u.group("field"), known, n=1)
        msg = "unknown key" + (f"; did you mean `{hint[0]}`?" if hint else "")
        if known:
            msg += f" (expected one of: {', '.join(known)})"
    elif mm := _MISSING.match(msg):
        keys += (mm.group("field"),)
        msg = "missing required key"
    elif k := _POST_INIT_KEY.match(msg):  # our own checks say "`key`: what is expected"
        keys += (k.group("key"),)
        msg = k.group("rest")
    elif msg.startswith("Invalid enum value") and sub:
        choices = _literal_choices(_struct_at(cls, sub[:-1]), sub[-1])
        msg = msg.replace("Invalid enum value", "invalid value") + (
            f"; expected one of: {', '.join(repr(c) for c in choices)}" if choices else "")
    else:
        msg = msg.replace("Expected", "expected")
    return f"{path}:{lines.find(keys)}: {'.'.join(keys) or '(top level)'}: {msg}"


def _literal_choices(struct: type | None, field: str) -> tuple:
    import typing

    if struct is None:
        return ()
    hint = typing.get_type_hints(struct).get(field)
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) is typing.Literal:
            return typing.get_args(candidate)
    return ()


def _struct_at(cls: type, sub: tuple[str, ...]) -> type | None:
    """The Struct class found by walking field names ``sub`` from ``cls`` (for 'expected one of')."""
    import typing

    current: Any = cls
    for part in sub:
        hints = typing.get_type_hints(current) if isinstance(current, type) else {}
        current = hints.get(part)
        if current is None:
            return None
        args = [a for a in typing.get_args(current) if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        if args:
            current = args[0]
    return current if isinstance(current, type) and issubclass(current, msgspec.Struct) else None


class _KeyLines:
    """Finds the line of a dotted key in TOML text, so errors can say 'wattbus.toml:12'."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+(?:\s*\.\s*[A-Za-z0-9_\-\"']+)*)\s*=")

    def __init__(self, text: str):
        self.entries: list[tuple[tuple[str, ...], int]] = []
        table: tuple[str, ...] = ()
        for no, line in enumerate(text.splitlines(), 1):
            if h := self._HEADER.match(line):
                table = tuple(p.strip().strip("\"'") for p in h.group(1).split("."))
                self.entries.append((table, no))
            elif k := self._KEY.match(line):
                key = tuple(p.strip().strip("\"'") for p in k.group(1).split("."))
                self.entries.append((table + key, no))

    def find(self, keys: tuple[str, ...]) -> int:
        """Best line for ``keys``: the key itself, else its nearest enclosing table; 1 if nothing matches."""
        keys = tuple(k for k in keys if not k.isdigit())
        for n in range(len(keys), 0, -1):
            for entry, no in self.entries:
                if entry == keys[:n]:
                    return no
        return 1
