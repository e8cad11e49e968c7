"""Home Assistant MQTT discovery documents, built by walking tables: the metrics table, the bucket table.

Nothing here talks to the broker: given what the device registry knows about a device (its keys, its
availability topics), these functions return the exact JSON HA reads, so every option is testable at payload
level and the same document is built again after a restart (which is what makes "publish only when it
changed" work).

Two layouts, chosen by config:
- ``device``: one retained ``{prefix}/device/{object_id}/config`` per device with all its components
  (HA 2024.11 and later); ``device``, ``origin``, availability and the state topic are said once.
- ``entity``: one retained ``{prefix}/{platform}/{object_id}/{key}/config`` per entity (any HA version).
Both carry the same ``unique_id``s and ``object_id``s, so switching layout keeps entity ids and history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import METRICS, Metric
from wattbus import __version__

Doc = dict[str, Any]
"""A JSON object of a discovery document."""

ORIGIN = {"name": "wattbus", "sw_version": __version__}

# HA sensor option <- metrics.toml column. An empty cell leaves the option out (HA's default applies).
SENSOR_OPTIONS = (("device_class", "device_class"), ("state_class", "state_class"),
                  ("unit_of_measurement", "unit"))

# Options replaced per metric kind, after the table's. An `interval` amount (energy within one reading's
# period) goes up and down from reading to reading: HA's statistics would take it for a running total, and
# the Energy dashboard would offer it as a source. It stays a plain energy sensor without statistics; the
# daily bucket sensors below are the totals HA should use.
KIND_OVERRIDES: dict[str, dict[str, str]] = {"interval": {"state_class": ""}}


@dataclass(frozen=True, slots=True)
class BucketSensor:
    """One field of today's ``1d`` bucket (``bus.rollup.Bucket``) shown as a sensor."""

    field: str
    name: str
    device_class: str
    unit: str
    """Unit; "currency" takes the bucket's own currency."""
    state_class: str = "total"
    resets_daily: bool = True
    """A total of today: HA gets ``last_reset`` = the bucket's start, so each day is a new cycle."""


BUCKET_SENSORS = (
    BucketSensor("energy_import_wh", "Energy import today", "energy", "Wh"),
    BucketSensor("energy_export_wh", "Energy export today", "energy", "Wh"),
    BucketSensor("gas_m3", "Gas today", "gas", "m³"),
    BucketSensor("grid_import_wh", "Grid import today", "energy", "Wh"),
    BucketSensor("grid_export_wh", "Grid export today", "energy", "Wh"),
    BucketSensor("solar_wh", "Solar production today", "energy", "Wh"),
    BucketSensor("home_wh", "Home consumption today", "energy", "Wh"),
    BucketSensor("self_consumption_wh", "Solar self-consumption today", "energy", "Wh"),
    BucketSensor("self_sufficiency_pct", "Self-sufficiency today", "", "%", "measurement", False),
    BucketSensor("cost", "Cost today", "monetary", "currency"),
    BucketSensor("revenue", "Revenue today", "monetary", "currency"),
    BucketSensor("cost_without_solar", "Cost without solar today", "monetary", "currency"),
    BucketSensor("solar_profit", "Solar profit today", "monetary", "currency"),
)
BUCKET_FIELDS = {b.field: b for b in BUCKET_SENSORS}
BUCKET_PREFIX = "today_"
"""State keys of bucket fields: ``today_{field}``, next to the device's metric keys."""
BUCKET_START = "today_start"
"""State key of the bucket's start (ISO time), HA's ``last_reset`` of the daily totals."""
LAST_READING = "ts"
"""State key of the latest reading's time (ISO), shown as a diagnostic timestamp sensor."""


@dataclass(frozen=True, slots=True)
class Relay:
    """A relay of the relay consumer (DESIGN: ``relay/{name}/state`` retained JSON, ``relay/{name}/set``)."""

    name: str
    title: str
    process: str | None = None


RELAY_MODES = ("auto", "on", "off")


def entity_name(metric: Metric) -> str:
    """The HA entity name: the description's first clause ("Active power on phase L1")."""
    return metric.description.split(",")[0].split(" (")[0].strip()


def _template(key: str) -> str:
    return "{{ value_json.%s }}" % key


def metric_component(object_id: str, key: str) -> dict[str, Any]:
    """The sensor for metric ``key`` of a device (a row of ``schemas/metrics.toml``)."""
    metric = METRICS[key]
    options = {ha: getattr(metric, column) for ha, column in SENSOR_OPTIONS}
    options.update(KIND_OVERRIDES.get(metric.kind, {}))
    uid = f"{object_id}_{key}"
    return {"platform": "sensor", "unique_id": uid, "object_id": uid, "name": entity_name(metric),
            **{k: v for k, v in options.items() if v}, "value_template": _template(key)}


def bucket_component(object_id: str, field: str, currency: str | None) -> dict[str, Any]:
    """The sensor for field ``field`` of today's bucket."""
    b = BUCKET_FIELDS[field]
    key = BUCKET_PREFIX + field
    unit = (currency or "") if b.unit == "currency" else b.unit
    uid = f"{object_id}_{key}"
    options = {"device_class": b.device_class, "state_class": b.state_class, "unit_of_measurement": unit}
    doc = {"platform": "sensor", "unique_id": uid, "object_id": uid, "name": b.name,
           **{k: v for k, v in options.items() if v}, "value_template": _template(key)}
    if b.resets_daily:
        doc["last_reset_value_template"] = _template(BUCKET_START)
    return doc


def last_reading_component(object_id: str) -> dict[str, Any]:
    uid = f"{object_id}_last_reading"
    return {"platform": "sensor", "unique_id": uid, "object_id": uid, "name": "Last reading",
            "device_class": "timestamp", "entity_category": "diagnostic",
            "value_template": _template(LAST_READING)}


def device_components(object_id: str, keys: set[str], bucket_fields: set[str],
                      currency: str | None) -> dict[str, dict[str, Any]]:
    """Every component of a device: its metrics in table order, then today's bucket fields in table order."""
    comps: dict[str, dict[str, Any]] = {k: metric_component(object_id, k) for k in METRICS if k in keys}
    if keys:
        comps["last_reading"] = last_reading_component(object_id)
    for b in BUCKET_SENSORS:
        if b.field in bucket_fields and (b.unit != "currency" or currency):
            comps[BUCKET_PREFIX + b.field] = bucket_component(object_id, b.field, currency)
    return comps


def relay_components(object_id: str, relay: Relay, state_topic: str, command_topic: str) -> dict[str, dict]:
    """A relay: a switch (its output, commands on/off) and a select (its mode auto/on/off)."""
    return {
        "output": {"platform": "switch", "unique_id": f"{object_id}_output",
                   "object_id": f"{object_id}_output", "name": "Output", "state_topic": state_topic,
                   "value_template": _template("state"), "state_on": "on", "state_off": "off",
                   "command_topic": command_topic, "payload_on": "on", "payload_off": "off"},
        "mode": {"platform": "select", "unique_id": f"{object_id}_mode", "object_id": f"{object_id}_mode",
                 "name": "Mode", "state_topic": state_topic, "value_template": _template("mode"),
                 "command_topic": command_topic, "options": list(RELAY_MODES)},
    }


def device_block(object_id: str, name: str, model: str) -> dict[str, Any]:
    return {"identifiers": [object_id], "name": name, "manufacturer": "wattbus", "model": model,
            "sw_version": __version__}


def shared_options(availability: list[str], state_topic: str | None) -> dict[str, Any]:
    """Options every component of a device shares: availability (all topics must say online) and state."""
    out: dict[str, Any] = {"availability": [{"topic": t} for t in availability], "availability_mode": "all",
                           "qos": 1}
    if state_topic:
        out["state_topic"] = state_topic
    return out


def device_document(device: dict[str, Any], components: dict[str, dict[str, Any]],
                    shared: dict[str, Any]) -> dict[str, Any]:
    """The device-based discovery document (``{prefix}/device/{object_id}/config``)."""
    return {"device": device, "origin": ORIGIN, **shared, "components": components}


def entity_documents(prefix: str, object_id: str, device: Doc, components: dict[str, Doc],
                     shared: Doc) -> dict[str, Doc]:
    """Per-entity discovery: topic -> document, one per component (older HA)."""
    out = {}
    for key, comp in components.items():
        body = {k: v for k, v in comp.items() if k != "platform"}
        out[entity_topic(prefix, comp["platform"], object_id, key)] = {
            "device": device, "origin": ORIGIN, **shared, **body}
    return out


def device_topic(prefix: str, object_id: str) -> str:
    return f"{prefix}/device/{object_id}/config"


def entity_topic(prefix: str, platform: str, object_id: str, key: str) -> str:
    return f"{prefix}/{platform}/{object_id}/{key}/config"


PLATFORMS = ("sensor", "switch", "select")
"""Platforms this consumer publishes in the per-entity layout (the filters it reads back at start)."""
