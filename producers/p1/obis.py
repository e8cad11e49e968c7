"""What a P1 telegram means, as data.

dsmr_parser knows how to *read* every line (its specifications name each OBIS line, e.g. 1-0:1.8.1 ->
``ELECTRICITY_USED_TARIFF_1``); these tables say what each named value *is* for wattbus: which canonical
metric key (schemas/metrics.toml) it becomes and in which unit. The code in ``decode.py`` only walks them,
so supporting another meter field is one row here, not new control flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Version:
    """One `dsmr = "..."` choice: which dsmr_parser specification, and the serial framing of that meter."""

    spec: str
    """Attribute name in ``dsmr_parser.telegram_specifications``."""
    baudrate: int
    bytesize: int
    parity: str
    """pyserial parity letter: "N" none, "E" even."""


_7E1_9600 = dict(baudrate=9600, bytesize=7, parity="E")
_7E1 = dict(baudrate=115200, bytesize=7, parity="E")
_8N1 = dict(baudrate=115200, bytesize=8, parity="N")

# The codes dsmr_parser's own clients and `dsmr_console --version` accept, with the same meaning
# (dsmr_parser/clients/protocol.py::_create_dsmr_protocol). Encrypted meters (MSn, SAGEMCOM_T210_D_R) are
# not offered: they send DLMS frames, not `/...!CRC` telegrams.
VERSIONS: dict[str, Version] = {
    "2.2": Version("V2_2", **_7E1_9600),          # DSMR 2.2 / 3: 9600 7E1, no CRC, no clock
    "3": Version("V3", **_7E1_9600),
    "4": Version("V4", **_7E1),                    # DSMR 4.x: 115200 7E1 (not 8N1)
    "4+": Version("V5", **_7E1),                   # DSMR 5 content on 7E1 lines
    "5": Version("V5", **_8N1),                    # DSMR 5.0 (NL)
    "5B": Version("BELGIUM_FLUVIUS", **_8N1),      # Belgium, Fluvius eMUCS (capacity tariff)
    "5L": Version("LUXEMBOURG_SMARTY", **_8N1),    # Luxembourg Smarty, already decrypted plaintext
    "5S": Version("SWEDEN", **_8N1),               # Swedish HAN port
    "Q3D": Version("Q3D", **_8N1),                 # German EasyMeter Q3D (no CRC, no clock)
    "ISKRA_IE": Version("ISKRA_IE", **_8N1),       # Ireland
    "5EONHU": Version("EON_HUNGARY", **_8N1),      # Hungary, E.ON
}


@dataclass(frozen=True, slots=True)
class Field:
    """A telegram value that becomes one metric."""

    key: str
    unit: str | None
    """Canonical unit; the telegram's own unit is converted to it (kWh -> Wh). None: a plain number."""
    average: bool = False
    """An instantaneous value: averaged over the publishing interval when `power = "mean"`."""


# dsmr_parser attribute -> metric. Meters that lack a line simply don't get that metric.
FIELDS: dict[str, Field] = {
    "ELECTRICITY_USED_TARIFF_1": Field("energy_import_t1_wh", "Wh"),
    "ELECTRICITY_USED_TARIFF_2": Field("energy_import_t2_wh", "Wh"),
    "ELECTRICITY_DELIVERED_TARIFF_1": Field("energy_export_t1_wh", "Wh"),
    "ELECTRICITY_DELIVERED_TARIFF_2": Field("energy_export_t2_wh", "Wh"),
    "ELECTRICITY_IMPORTED_TOTAL": Field("energy_import_wh", "Wh"),
    "ELECTRICITY_EXPORTED_TOTAL": Field("energy_export_wh", "Wh"),
    "ELECTRICITY_REACTIVE_IMPORTED_TOTAL": Field("reactive_energy_import_varh", "varh"),
    "ELECTRICITY_REACTIVE_EXPORTED_TOTAL": Field("reactive_energy_export_varh", "varh"),
    "ELECTRICITY_ACTIVE_TARIFF": Field("tariff", None),
    "INSTANTANEOUS_VOLTAGE_L1": Field("voltage_l1_v", "V", average=True),
    "INSTANTANEOUS_VOLTAGE_L2": Field("voltage_l2_v", "V", average=True),
    "INSTANTANEOUS_VOLTAGE_L3": Field("voltage_l3_v", "V", average=True),
    "INSTANTANEOUS_CURRENT_L1": Field("current_l1_a", "A", average=True),
    "INSTANTANEOUS_CURRENT_L2": Field("current_l2_a", "A", average=True),
    "INSTANTANEOUS_CURRENT_L3": Field("current_l3_a", "A", average=True),
    "FREQUENCY": Field("frequency_hz", "Hz", average=True),
    "INSTANTANEOUS_POWER_FACTOR_TOTAL": Field("power_factor", None, average=True),
    "INSTANTANEOUS_POWER_FACTOR_L1": Field("power_factor_l1", None, average=True),
    "INSTANTANEOUS_POWER_FACTOR_L2": Field("power_factor_l2", None, average=True),
    "INSTANTANEOUS_POWER_FACTOR_L3": Field("power_factor_l3", None, average=True),
    "SHORT_POWER_FAILURE_COUNT": Field("power_failures", None),
    "LONG_POWER_FAILURE_COUNT": Field("long_power_failures", None),
    "VOLTAGE_SAG_L1_COUNT": Field("voltage_sags_l1", None),
    "VOLTAGE_SAG_L2_COUNT": Field("voltage_sags_l2", None),
    "VOLTAGE_SAG_L3_COUNT": Field("voltage_sags_l3", None),
    "VOLTAGE_SWELL_L1_COUNT": Field("voltage_swells_l1", None),
    "VOLTAGE_SWELL_L2_COUNT": Field("voltage_swells_l2", None),
    "VOLTAGE_SWELL_L3_COUNT": Field("voltage_swells_l3", None),
    # Belgian capacity tariff (Fluvius): running quarter-hour average demand, and this month's peak.
    "BELGIUM_CURRENT_AVERAGE_DEMAND": Field("demand_avg_w", "W"),
    "BELGIUM_MAXIMUM_DEMAND_MONTH": Field("demand_peak_month_w", "W"),
}


@dataclass(frozen=True, slots=True)
class Net:
    """A signed metric from a pair of unsigned meter values: import minus export."""

    key: str
    positive: str
    negative: str
    unit: str


# power_w is positive when the house imports, negative when it exports (a grid meter's direction).
NETS: tuple[Net, ...] = (
    Net("power_w", "CURRENT_ELECTRICITY_USAGE", "CURRENT_ELECTRICITY_DELIVERY", "W"),
    Net("power_l1_w", "INSTANTANEOUS_ACTIVE_POWER_L1_POSITIVE", "INSTANTANEOUS_ACTIVE_POWER_L1_NEGATIVE", "W"),
    Net("power_l2_w", "INSTANTANEOUS_ACTIVE_POWER_L2_POSITIVE", "INSTANTANEOUS_ACTIVE_POWER_L2_NEGATIVE", "W"),
    Net("power_l3_w", "INSTANTANEOUS_ACTIVE_POWER_L3_POSITIVE", "INSTANTANEOUS_ACTIVE_POWER_L3_NEGATIVE", "W"),
    Net("reactive_power_var", "CURRENT_REACTIVE_IMPORTED", "CURRENT_REACTIVE_EXPORTED", "var"),
)

# Per-phase reactive power (Sweden, Luxembourg) has no metric of its own: summed into reactive_power_var
# when the meter has no total line.
REACTIVE_PHASES: tuple[tuple[str, str], ...] = tuple(
    (f"INSTANTANEOUS_REACTIVE_POWER_L{n}_POSITIVE", f"INSTANTANEOUS_REACTIVE_POWER_L{n}_NEGATIVE") for n in (1, 2, 3)
)

# Totals derived from the tariff registers when the meter does not send its own (1-0:1.8.0 / 2.8.0).
TOTALS: dict[str, tuple[str, ...]] = {
    "energy_import_wh": ("energy_import_t1_wh", "energy_import_t2_wh"),
    "energy_export_wh": ("energy_export_t1_wh", "energy_export_t2_wh"),
}

# Sub-meters on the M-Bus channels (0-n:...), by EN 13757-3 device type. Each is published as its own
# device `<device>_<suffix>`, stamped with the sub-meter's capture time.
MBUS_KINDS: dict[int, tuple[str, str]] = {
    3: ("gas", "gas_m3"),
    7: ("water", "water_m3"),
}
MBUS_TYPE_ATTRS: tuple[str, ...] = ("MBUS_DEVICE_TYPE", "DEVICE_TYPE")  # DSMR 5+ / DSMR 2.2-4
MBUS_READING_ATTRS: tuple[str, ...] = ("MBUS_METER_READING", "HOURLY_GAS_METER_READING", "GAS_METER_READING")
MBUS_UNIT_KIND: dict[str, int] = {"m3": 3}
"""Channel without a device-type line: guess from the reading's unit."""

# telegram unit -> factor to the canonical unit, per canonical unit.
UNIT_FACTORS: dict[str, dict[str, Decimal]] = {
    "Wh": {"Wh": Decimal(1), "kWh": Decimal(1000), "MWh": Decimal(1_000_000)},
    "W": {"W": Decimal(1), "kW": Decimal(1000), "MW": Decimal(1_000_000)},
    "varh": {"varh": Decimal(1), "kvarh": Decimal(1000)},
    "var": {"var": Decimal(1), "kvar": Decimal(1000)},
    "V": {"V": Decimal(1), "kV": Decimal(1000)},
    "A": {"A": Decimal(1)},
    "Hz": {"Hz": Decimal(1)},
    "m3": {"m3": Decimal(1), "dm3": Decimal("0.001")},
}

TIMESTAMP_ATTR = "P1_MESSAGE_TIMESTAMP"


def metric_keys() -> set[str]:
    """Every metric key the tables above name."""
    return ({f.key for f in FIELDS.values()} | {n.key for n in NETS} | set(TOTALS) | {"reactive_power_var"}
            | {metric for _, metric in MBUS_KINDS.values()})


def needed_attributes() -> frozenset[str]:
    """Every dsmr_parser attribute these tables read (the parser is given only those lines to look for)."""
    names = set(FIELDS) | {TIMESTAMP_ATTR, *MBUS_TYPE_ATTRS, *MBUS_READING_ATTRS}
    for net in NETS:
        names |= {net.positive, net.negative}
    for pos, neg in REACTIVE_PHASES:
        names |= {pos, neg}
    return frozenset(names)


def averaged_keys() -> frozenset[str]:
    """Instantaneous metrics (averaged over the publishing interval); everything else is latest-value."""
    return frozenset({f.key for f in FIELDS.values() if f.average} | {n.key for n in NETS})
