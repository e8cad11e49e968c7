"""Topic names (DESIGN.md "Topics"), in one place so no process spells a topic by hand.

Every function returns the topic *without* the site's ``topic_prefix``; the MQTT client adds and strips
the prefix, so plugin code never sees it.
"""

from __future__ import annotations

from bus.envelope import NAME_RULE, is_name


def check_name(name: str, what: str = "device") -> str:
    """``name`` if it is a valid source/device/process name (the whole string), else ValueError."""
    if not is_name(name):
        raise ValueError(f"{what} name {name!r:.80} is not allowed: {NAME_RULE}")
    return name


def reading(source: str, device: str) -> str:
    return f"{source}/{device}/reading"


def status(source: str, device: str) -> str:
    return f"{source}/{device}/status"


def state(source: str, device: str) -> str:
    return f"{source}/{device}/state"


def forecast(source: str, device: str) -> str:
    """A producer's latest forecast for ``device`` (retained): a reading batch whose timestamps lie ahead,
    e.g. the weather producer's hourly temperature, cloud cover, irradiance and PV estimate. Not a reading
    topic: consumers of measurements never see it, and its timestamps are exempt from the plausibility
    window."""
    return f"{source}/{device}/forecast"


def aggregate(source: str, device: str, period: str) -> str:
    return f"agg/{source}/{device}/{period}"


def process_status(process: str) -> str:
    return f"wattbus/{process}/status"


def process_health(process: str) -> str:
    return f"wattbus/{process}/health"


def dlq(process: str) -> str:
    return f"wattbus/dlq/{process}"


def heartbeat(source: str, device: str) -> str:
    return f"{source}/{device}/heartbeat"


def device_config(source: str, device: str) -> str:
    """Where a remotely configurable device answers with the config it runs (retained)."""
    return f"{source}/{device}/config"


def device_config_set(source: str, device: str) -> str:
    """Where a remotely configurable device takes changes (e.g. the sim meters)."""
    return f"{source}/{device}/config/set"


ALL_READINGS = "+/+/reading"
ALL_STATUS = "+/+/status"


def shared(group: str, topic_filter: str) -> str:
    """A shared subscription: N consumers in ``group`` split the messages of ``topic_filter``."""
    return f"$share/{group}/{topic_filter}"


def parse_device_topic(topic: str) -> tuple[str, str, str] | None:
    """``source/device/kind`` -> (source, device, kind), or None for anything else (including a source or
    device that is not a valid name: such a topic was never published by wattbus)."""
    parts = topic.split("/")
    if len(parts) != 3 or not (is_name(parts[0]) and is_name(parts[1])):
        return None
    return parts[0], parts[1], parts[2]


def ha_state(source: str, device: str) -> str:
    """The homeassistant consumer's flat JSON state of one device (retained), what HA's sensors read."""
    return f"ha/{source}/{device}/state"


def relay_state(name: str) -> str:
    return f"relay/{name}/state"


def relay_set(name: str) -> str:
    return f"relay/{name}/set"
