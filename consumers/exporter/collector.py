"""The exporter's state (latest value per device and metric) and the Prometheus collector over it.

Names, units, types and help texts all come from ``schemas/metrics.toml``; labels are source, device and,
for per-phase or per-tariff metrics, phase / tariff. A device that goes offline (its status topic, or its
producer process's last will) loses its series, so Prometheus sees staleness instead of a frozen value.

Hostile input cannot grow it: a device gets series only once a *valid reading* of it arrived (a status
topic or a health document naming devices only updates devices already known), at most ``max_series``
devices are kept (the rest are refused and counted in ``wattbus_exporter_refused_devices_total``), and
process names must be valid names (at most ``max_series`` of them too). A reading stamped ahead of this
host's clock (within the consumer's ``[readings] max_future_s``; beyond it is rejected before it gets here)
is shown, but ordered as if stamped *now*, so the next real reading replaces it instead of being taken
for an older one: a clock in the future cannot freeze a series.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.envelope import Reading, is_name
from schemas import METRICS

# The seed's hhpcexporter names: (metric key, seed name, scale, unit label, help)
HHPC_COMPAT = (
    ("power_w", "global_active_power", 0.001, "kilowatt", "Household global minute-averaged active power."),
    ("reactive_power_var", "global_reactive_power", 0.001, "kilowatt",
     "Household global minute-averaged reactive power."),
    ("voltage_v", "voltage", 1.0, "volt", "Minute-averaged voltage."),
    ("current_a", "global_intensity", 1.0, "ampere", "Household global minute-averaged current intensity."),
    ("sub1_energy_wh", "sub_metering_1", 1.0, "watt-hour of active energy", "Energy sub-metering No. 1."),
    ("sub2_energy_wh", "sub_metering_2", 1.0, "watt-hour of active energy", "Energy sub-metering No. 2."),
    ("sub3_energy_wh", "sub_metering_3", 1.0, "watt-hour of active energy", "Energy sub-metering No. 3."),
)

# Every process's retained health document (wattbus/{process}/health) as metrics, so Prometheus can alert on
# the processes too: (Prometheus name, type, help, path in the document, scale). Labels: process, kind.
PROCESS_HEALTH = (
    ("wattbus_process_uptime_seconds", "gauge", "Seconds since the process started (a drop = a restart)",
     ("uptime_s",), 1.0),
    ("wattbus_process_dead_letters", "counter", "Inputs the process rejected to wattbus/dlq/{process}",
     ("counters", "dead_letters"), 1.0),
    ("wattbus_process_inbox_messages", "gauge", "Messages a consumer received and has not handled yet",
     ("inbox",), 1.0),
    ("wattbus_process_queued_messages", "gauge", "Messages in a producer's offline queue, not yet acked",
     ("queued",), 1.0),
    ("wattbus_process_sink_backlog_readings", "gauge", "Readings a store holds or spooled while its database "
     "refuses them", ("counters", "sink_backlog"), 1.0),
    ("wattbus_process_sink_up", "gauge", "1 while a store's database accepts writes", ("sink_up",), 1.0),
    ("wattbus_process_max_resident_memory_bytes", "gauge", "Peak resident memory of the process",
     ("rss_mb",), 1024 * 1024),
)


def _health_value(doc: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return float(doc) if isinstance(doc, (int, float)) else None


class DeviceState:
    __slots__ = ("values", "ts", "order", "received", "online", "process")

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.ts = 0
        self.order = 0  # ts, clipped to the arrival time: what "older" is judged by
        self.received = 0.0
        self.online = True
        self.process: str | None = None


class LatestValues(Collector):
    def __init__(self, compat: str = "", compat_device: str | None = None, stale_after: float = 0,
                 max_series: int = 10_000):
        self.devices: dict[tuple[str, str], DeviceState] = {}
        self.process_online: dict[str, bool] = {}
        self.process_health: dict[str, dict] = {}
        self.compat, self.compat_device, self.stale_after = compat, compat_device, stale_after
        self.max_series = max_series
        self.messages = 0
        self.readings = 0
        self.lag_seconds = 0.0
        self.dead_letters = 0
        self.refused_devices = 0
        self.future_readings = 0
        self._refused: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # -- updates (MQTT side) --------------------------------------------------------------------
    def update(self, readings: list[Reading]) -> None:
        now = time.time()
        now_ms = int(now * 1000)
        with self._lock:
            for r in readings:
                dev = self.devices.get((r.source, r.device))
                if dev is None:
                    if len(self.devices) >= self.max_series:
                        if (r.source, r.device) not in self._refused and len(self._refused) < self.max_series:
                            self._refused.add((r.source, r.device))
                            self.refused_devices += 1
                        continue
                    dev = self.devices[(r.source, r.device)] = DeviceState()
                if r.ts < dev.order:
                    continue  # an older reading (replay, backfill) never hides a newer one
                if r.ts > now_ms:
                    self.future_readings += 1
                dev.ts, dev.order, dev.received, dev.online = r.ts, min(r.ts, now_ms), now, True
                if r.quality == "missing":
                    continue
                dev.values.update(r.metrics)
            self.readings += len(readings)
            if readings:
                self.lag_seconds = max(0.0, now - readings[-1].ts / 1000)

    def set_status(self, source: str, device: str, online: bool) -> None:
        """A device status: only for devices known from their readings (anyone may publish a status topic)."""
        with self._lock:
            dev = self.devices.get((source, device))
            if dev is None:
                return
            dev.online = online
            if not online:
                dev.values.clear()

    def set_process(self, process: str, online: bool, devices: list[str] | None = None) -> None:
        """A process's status (its last will) and, from its health, which known devices it serves."""
        if not is_name(process):
            return
        with self._lock:
            if process not in self.process_online and len(self.process_online) >= self.max_series:
                return
            self.process_online[process] = online
            for key in devices or []:
                source, _, device = key.partition("/")
                dev = self.devices.get((source, device))
                if dev is not None:
                    dev.process = process
            if not online:
                for dev in self.devices.values():
                    if dev.process == process:
                        dev.online = False
                        dev.values.clear()

    def set_health(self, process: str, doc: dict) -> None:
        with self._lock:
            self.process_health[process] = doc

    def _process_families(self) -> Iterable[Metric]:
        with self._lock:
            online = dict(self.process_online)
            health = dict(self.process_health)
        up = GaugeMetricFamily("wattbus_process_up", "1 while the process is online (its status topic)",
                               labels=["process"])
        for process in sorted(online.keys() | health.keys()):
            up.add_metric([process], 1.0 if online.get(process, True) else 0.0)
        yield up
        for name, kind, help_text, path, scale in PROCESS_HEALTH:
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            fam = cls(name, help_text, labels=["process", "kind"])
            for process, doc in sorted(health.items()):
                value = _health_value(doc, path)
                if value is not None:
                    fam.add_metric([process, str(doc.get("kind", ""))], value * scale)
            yield fam

    # -- exposition (HTTP side) -----------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        now = time.time()
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        up = GaugeMetricFamily("wattbus_up", "1 when the device is online and reporting", labels=["source", "device"])
        last = GaugeMetricFamily("wattbus_last_reading_timestamp_seconds", "Time of the device's latest reading",
                                 labels=["source", "device"])
        with self._lock:
            items = [(k, d.online, d.ts, d.received, dict(d.values)) for k, d in self.devices.items()]
        for (source, device), online, ts, received, values in sorted(items):
            if self.stale_after and now - received > self.stale_after:
                online, values = False, {}
            up.add_metric([source, device], 1.0 if online else 0.0)
            if ts:
                last.add_metric([source, device], ts / 1000)
            if not online:
                continue
            for key, value in values.items():
                m = METRICS.get(key)
                if m is None:
                    continue
                labels = ["source", "device"] + (["phase"] if m.phase else []) + (["tariff"] if m.tariff else [])
                fam_key = m.prom_name + "|" + ",".join(labels)
                fam = families.get(fam_key)
                if fam is None:
                    cls = CounterMetricFamily if m.prom_type == "counter" else GaugeMetricFamily
                    help_text = m.description.split(",")[0] + (f" ({m.unit})" if m.unit else "")
                    fam = families[fam_key] = cls(m.prom_name, help_text, labels=labels)
                values_labels = [source, device] + ([m.phase] if m.phase else []) + ([m.tariff] if m.tariff else [])
                fam.add_metric(values_labels, value)
        yield up
        yield last
        yield from _merge_families(families)
        if self.compat == "hhpc":
            yield from self._hhpc_compat(items)
        yield CounterMetricFamily("wattbus_exporter_readings", "Readings received by the exporter",
                                  value=self.readings)
        yield CounterMetricFamily("wattbus_exporter_refused_devices",
                                  "Devices refused because max_series devices are shown already",
                                  value=self.refused_devices)
        yield CounterMetricFamily("wattbus_exporter_future_readings",
                                  "Readings stamped ahead of this host's clock (shown, ordered as now)",
                                  value=self.future_readings)
        yield GaugeMetricFamily("wattbus_exporter_lag_seconds",
                                "Age of the newest reading when it arrived (publish-to-exporter lag)",
                                value=self.lag_seconds)
        yield from self._process_families()

    def _hhpc_compat(self, items) -> Iterable[Metric]:
        chosen = None
        for (source, device), online, ts, received, values in items:
            if source == "hhpc" and (self.compat_device in (None, device)):
                chosen = (online, values)
                break
        online, values = chosen if chosen else (False, {})
        for key, name, scale, unit, help_text in HHPC_COMPAT:
            if online and key in values:
                g = GaugeMetricFamily(name, help_text, labels=["unit"])
                g.add_metric([unit], round(values[key] * scale, 6))
                yield g
        yield GaugeMetricFamily("hhpc_up", "Hhpc Server Status.", value=1.0 if online else 0.0)


def _merge_families(families: dict) -> Iterable[Metric]:
    """Per-phase and total rows share a family name: one family, one TYPE line, mixed label sets."""
    by_name: dict[str, Metric] = {}
    for fam in families.values():
        if fam.name in by_name:
            by_name[fam.name].samples.extend(fam.samples)
        else:
            by_name[fam.name] = fam
    return by_name.values()
