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
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from bus.envelope import NAME_PATTERN
from bus.tariff import TariffConfig

DEFAULT_PATHS = (Path("wattbus.toml"), Path("/etc/wattbus/wattbus.toml"))


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
    password_file: str | None = None
    """File holding the password (never in the config or argv); else $WATTBUS_MQTT_PASSWORD."""
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

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("`port` must be 1..65535")
        if self.topic_prefix and not self.topic_prefix.endswith("/"):
            raise ValueError("`topic_prefix` must end with '/' (e.g. \"home1/\")")
        if any(c in self.topic_prefix for c in "#+$"):
            raise ValueError("`topic_prefix` must not contain #, + or $")

    def password(self) -> str | None:
        if self.password_file:
            return Path(self.password_file).read_text("utf-8").strip()
        return os.environ.get("WATTBUS_MQTT_PASSWORD")


class SiteConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    timezone: str = "Europe/Brussels"
    latitude: float = 50.85
    longitude: float = 4.35

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"`timezone`: unknown time zone {self.timezone!r} (expected e.g. \"Europe/Brussels\")")


class LogConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    level: str = "info"

    def __post_init__(self) -> None:
        if self.level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("`level` must be one of debug, info, warning, error")


class _Top(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    site: SiteConfig = msgspec.field(default_factory=SiteConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
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
    tariff: TariffConfig | None = None
    """``[tariff]`` (bus.tariff): None when the file has none."""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.site.timezone)

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
    for name in set(producers) & set(consumers):
        problems.append(f"{path}:{lines.find(('consumer', name))}: consumer.{name}: "
                        f"a producer has the same name; process names must be unique")
    if problems:
        raise ConfigError(problems)
    return AppConfig(path, top.mqtt, top.site, top.log, producers, consumers, tariff=top.tariff)


def _plugins(raw: dict, kind: str, path: Path, lines: _KeyLines, resolve: Resolver,
             problems: list[str]) -> dict[str, PluginConfig]:
    out: dict[str, PluginConfig] = {}
    sections = raw.get(kind, {})
    if not isinstance(sections, dict):
        problems.append(f"{path}:{lines.find((kind,))}: {kind}: expected tables like [{kind}.NAME]")
        return out
    for name, section in sections.items():
        where = (kind, name)
        if not re.match(NAME_PATTERN, name):
            problems.append(f"{path}:{lines.find(where)}: {kind}.{name}: process name must match {NAME_PATTERN}")
            continue
        if not isinstance(section, dict):
            problems.append(f"{path}:{lines.find(where)}: {kind}.{name}: expected a table [{kind}.{name}]")
            continue
        ptype = section.get("type")
        if not isinstance(ptype, str):
            problems.append(f"{path}:{lines.find(where)}: {kind}.{name}.type: missing; expected the plugin type")
            continue
        cls = resolve(kind, ptype)
        if cls is None:
            problems.append(f"{path}:{lines.find((*where, 'type'))}: {kind}.{name}.type: "
                            f"unknown {kind} type {ptype!r}")
            continue
        try:
            out[name] = msgspec.convert(section, cls)
        except msgspec.ValidationError as exc:
            problems.append(_describe(path, lines, where, exc, cls))
    return out


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
