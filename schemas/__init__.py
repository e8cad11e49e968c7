"""The contracts as data: the metrics table and the reading envelope schema.

Everything that names a metric reads :data:`METRICS`; nothing else in the code base lists metric keys.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

Kind = Literal["gauge", "counter", "interval"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of ``metrics.toml``."""

    key: str
    unit: str
    kind: Kind
    description: str
    device_class: str
    state_class: str
    prom_name: str
    prom_type: Literal["gauge", "counter"]
    phase: str = ""
    tariff: str = ""

    @property
    def is_counter(self) -> bool:
        return self.kind == "counter"


def _load() -> dict[str, Metric]:
    raw = tomllib.loads(resources.files(__name__).joinpath("metrics.toml").read_text("utf-8"))
    table: dict[str, Metric] = {}
    for row in raw["metric"]:
        metric = Metric(**row)
        if metric.key in table:
            raise ValueError(f"metrics.toml: duplicate key {metric.key!r}")
        table[metric.key] = metric
    return table


METRICS: dict[str, Metric] = _load()
"""Metric key -> row, in table order."""


@cache
def reading_schema() -> dict:
    """The JSON schema of the reading envelope (single reading or batch).

    ``source`` is a registered producer type: the file leaves the list open, and the enum is filled in here
    from the producer registry (the one list of sources), so adding a producer never touches the schema.
    """
    from producers.registry import PRODUCERS

    schema = json.loads(resources.files(__name__).joinpath("reading.schema.json").read_text("utf-8"))
    schema["$defs"]["source"]["enum"] = list(PRODUCERS)
    return schema
