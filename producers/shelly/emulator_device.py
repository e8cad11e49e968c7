"""The emulated Shelly Pro 3EM itself: its state, its status objects, its minute records and its RPC methods.

Why apart from the HTTP server: the RPC API is the device, whatever carries it (HTTP GET/POST, an RPC frame,
a test calling :meth:`ShellyDevice.rpc` directly). The methods are a table (:data:`GLOBAL_METHODS`,
:data:`COMPONENT_METHODS`), built once: a method name picks a handler, the profile decides which meter
namespaces exist (``EM``/``EMData`` on a triphase device, ``EM1``/``EM1Data`` on a monophase one), and every
component method checks its ``id`` the way the firmware does. Values come from ``emulator_model``: counters
integrate the powers, ``EMData`` keeps a minute database with ``GetRecords`` blocks and chunked ``GetData``.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .emulator_model import EM1DATA_KEYS, EMDATA_KEYS, PHASES, HouseModel, Meter


class RpcFailure(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message



@dataclass(frozen=True, slots=True)
class Call:
    """One component method call: the device time, the component id and the call's parameters."""

    now: float
    cid: int
    ch: int | None  # the channel of a monophase device (its EM1 id); None on a triphase one
    params: dict[str, Any]


class ShellyDevice:
    """One emulated Pro 3EM without a transport; thread safe (tests poke it while a server answers)."""

    def __init__(self, *, role: str = "grid", profile: str = "triphase", password: str | None = None,
                 clock: Callable[[], float] | None = None, seed: int = 1, device_id: str | None = None,
                 neutral: bool = True, keys_order: str = "csv", data_chunk: int = 480,
                 host: str = "127.0.0.1", tz: str = "Europe/Brussels", pv_peak_w: float = 6000.0,
                 switches: int = 0) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        self.role, self.profile, self.seed, self.host = role, profile, seed, host
        self.clock = clock or time.time
        mac = hashlib.blake2b(f"{seed}:{role}".encode(), digest_size=3).hexdigest().upper()
        self.mac = "FCE8C0" + mac
        self.device_id = device_id or f"shellypro3em-{self.mac.lower()}"
        self.password = password
        self.data_chunk = data_chunk
        self.sys_time_synced = True
        self.errors: list[str] = []  # em:0 "errors", e.g. ["power_meter_failure"]
        self.phase_errors: dict[str, list[str]] = {}  # {"a": ["out_of_range:voltage"]}
        self.data_errors: list[str] = []  # emdata:0 "errors"
        self._boot = self.clock()
        self._lock = threading.RLock()
        self.meter = Meter(HouseModel(seed=seed, tz=tz, pv_peak_w=pv_peak_w), role, self._boot, neutral=neutral)
        keys = list(EMDATA_KEYS if profile == "triphase" else EM1DATA_KEYS)
        if keys_order == "shuffled":
            random.Random(seed).shuffle(keys)
        elif keys_order != "csv":
            raise ValueError("keys_order must be csv or shuffled")
        self.keys = keys
        self.switch_on = [False] * switches
        """Outputs of the ``Switch`` components (a Pro 3EM with switch outputs, like a Pro 1PM/Pro 2's)."""
        self.switch_stuck = False
        """A welded contact: ``Switch.Set`` answers as usual but the output does not change."""

    # -- device state (thread safe: tests poke it while the server runs) -----------------------
    def _now(self) -> float:
        now = self.clock()
        self.meter.advance(now)
        return now

    def power_off(self) -> None:
        """The device loses power: unreachable, no counting, no records until ``power_on``."""
        with self._lock:
            self._now()
            self.meter.set_powered(False)

    def power_on(self) -> None:
        with self._lock:
            self._now()
            self.meter.set_powered(True)
            self._boot = self.clock()

    def reset_counters(self) -> None:
        """``EMData.ResetCounters``: counters to zero, records kept."""
        with self._lock:
            self._now()
            self.meter.reset_counters()

    def delete_all_data(self) -> None:
        """``EMData.DeleteAllData``: records deleted and counters nullified."""
        with self._lock:
            self._now()
            self.meter.delete_all_data()

    def replace_device(self, device_id: str | None = None) -> None:
        """Another unit at the same address: new id, its own counters, an empty database."""
        with self._lock:
            now = self._now()
            self.seed += 1000
            mac = hashlib.blake2b(f"{self.seed}:{self.role}".encode(), digest_size=3).hexdigest().upper()
            self.mac = "FCE8C0" + mac
            self.device_id = device_id or f"shellypro3em-{self.mac.lower()}"
            house = self.meter.house
            self.meter = Meter(house, self.role, now, neutral=self.meter.neutral,
                               counters=([5000.0, 6000.0, 7000.0], [10.0, 20.0, 30.0]))

    def counters(self) -> dict[str, float]:
        """The exact (unrounded) counters now, in the device's own field names."""
        with self._lock:
            self._now()
            out = {}
            for k, x in enumerate(PHASES):
                out[f"{x}_total_act_energy"] = self.meter.imp[k]
                out[f"{x}_total_act_ret_energy"] = self.meter.exp[k]
            out["total_act"] = sum(self.meter.imp)
            out["total_act_ret"] = sum(self.meter.exp)
            return out

    # -- status objects ------------------------------------------------------------------------
    def device_info(self) -> dict[str, Any]:
        return {"name": None, "id": self.device_id, "mac": self.mac, "slot": 0, "model": "SPEM-003CEBEU",
                "gen": 2, "fw_id": "20241011-114455/1.4.4-g6d2a586", "ver": "1.4.4", "app": "Pro3EM",
                "auth_en": self.password is not None, "auth_domain": self.device_id if self.password else None,
                "profile": self.profile}

    def sys_status(self, now: float) -> dict[str, Any]:
        local = datetime.fromtimestamp(now, self.meter.house.tz)
        synced = self.sys_time_synced
        return {"mac": self.mac, "restart_required": False, "time": local.strftime("%H:%M") if synced else None,
                "unixtime": int(now) if synced else None, "uptime": int(now - self._boot),
                "ram_size": 246532, "ram_free": 118000, "fs_size": 524288, "fs_free": 192512,
                "cfg_rev": 12, "kvs_rev": 0, "schedule_rev": 0, "webhook_rev": 0, "available_updates": {}}

    def em_status(self, now: float) -> dict[str, Any]:
        s = self.meter.slot(now)
        out: dict[str, Any] = {"id": 0}
        for k, x in enumerate(PHASES):
            sk = s.s(k)
            out.update({f"{x}_current": round(s.i(k), 3), f"{x}_voltage": round(s.v[k], 1),
                        f"{x}_act_power": round(s.p[k], 1), f"{x}_aprt_power": round(sk, 1),
                        f"{x}_pf": round(abs(s.p[k]) / sk, 2) if sk > 0.5 else 0.0, f"{x}_freq": round(s.f, 1)})
            if self.phase_errors.get(x):
                out[f"{x}_errors"] = list(self.phase_errors[x])
        out.update({"n_current": round(s.neutral(), 3) if self.meter.neutral else None,
                    "total_current": round(sum(s.i(k) for k in range(3)), 3),
                    "total_act_power": round(sum(s.p), 3),
                    "total_aprt_power": round(sum(s.s(k) for k in range(3)), 3),
                    "user_calibrated_phase": []})
        if self.errors:
            out["errors"] = list(self.errors)
        return out

    def emdata_status(self) -> dict[str, Any]:
        m = self.meter
        out: dict[str, Any] = {"id": 0}
        for k, x in enumerate(PHASES):
            out[f"{x}_total_act_energy"] = round(m.imp[k], 2)
            out[f"{x}_total_act_ret_energy"] = round(m.exp[k], 2)
        out["total_act"] = round(sum(m.imp), 2)
        out["total_act_ret"] = round(sum(m.exp), 2)
        if self.data_errors:
            out["errors"] = list(self.data_errors)
        return out

    def em1_status(self, now: float, ch: int) -> dict[str, Any]:
        s = self.meter.slot(now)
        sk = s.s(ch)
        out = {"id": ch, "current": round(s.i(ch), 3), "voltage": round(s.v[ch], 1),
               "act_power": round(s.p[ch], 1), "aprt_power": round(sk, 1),
               "pf": round(abs(s.p[ch]) / sk, 2) if sk > 0.5 else 0.0, "freq": round(s.f, 1),
               "calibration": "factory"}
        x = PHASES[ch]
        if self.phase_errors.get(x):
            out["errors"] = list(self.phase_errors[x])
        if self.errors:
            out["errors"] = out.get("errors", []) + list(self.errors)
        return out

    def em1data_status(self, ch: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": ch, "total_act_energy": round(self.meter.imp[ch], 2),
                               "total_act_ret_energy": round(self.meter.exp[ch], 2)}
        if self.data_errors:
            out["errors"] = list(self.data_errors)
        return out

    def full_status(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"ble": {}, "cloud": {"connected": False}, "eth": {"ip": None},
                               "modbus": {}, "mqtt": {"connected": False}, "sys": self.sys_status(now),
                               "temperature:0": {"id": 0, "tC": 46.3, "tF": 115.3},
                               "wifi": {"sta_ip": self.host, "status": "got ip", "ssid": "home", "rssi": -58},
                               "ws": {"connected": False}}
        for cid in range(len(self.switch_on)):
            out[f"switch:{cid}"] = self.switch_status(cid)
        if self.profile == "triphase":
            out["em:0"] = self.em_status(now)
            out["emdata:0"] = self.emdata_status()
        else:
            for ch in range(3):
                out[f"em1:{ch}"] = self.em1_status(now, ch)
                out[f"em1data:{ch}"] = self.em1data_status(ch)
        return out

    # -- records ---------------------------------------------------------------------------------
    def _row_values(self, row: dict[str, float], ch: int | None) -> list[float]:
        if ch is None:
            return [row[k] for k in self.keys]
        x = PHASES[ch]
        return [row[f"{x}_{k}"] for k in self.keys]

    def get_records(self, ch: int | None, params: dict[str, Any]) -> dict[str, Any]:
        start = _int_param(params, "ts", 0)
        blocks = [{"ts": b.ts, "period": b.period, "records": len(b.rows)}
                  for b in self.meter.blocks if b.end > start]
        return {"data_blocks": blocks}

    def get_data(self, ch: int | None, params: dict[str, Any]) -> dict[str, Any]:
        start = _int_param(params, "ts", None)
        if start is None:
            raise RpcFailure(400, -103, "Missing required argument 'ts'!")
        end = _int_param(params, "end_ts", None)
        rows = self.meter.records(start, end)
        page, rest = rows[: self.data_chunk], rows[self.data_chunk:]
        data: list[dict[str, Any]] = []
        for ts, period, row in page:
            last = data[-1] if data else None
            if last is not None and last["period"] == period and last["ts"] + period * len(last["values"]) == ts:
                last["values"].append(self._row_values(row, ch))
            else:
                data.append({"ts": ts, "period": period, "values": [self._row_values(row, ch)]})
        out: dict[str, Any] = {}
        if params.get("add_keys", True) not in (False, "false", 0):
            out["keys"] = list(self.keys)
        out["data"] = data
        if rest:
            out["next_record_ts"] = rest[0][0]
        return out

    # -- switch outputs ----------------------------------------------------------------------------
    def switch_status(self, cid: int) -> dict[str, Any]:
        on = self.switch_on[cid]
        return {"id": cid, "source": "init", "output": on,
                "apower": 0.0, "voltage": 231.2, "current": 0.0, "freq": 50.0,
                "aenergy": {"total": 0.0, "by_minute": [0.0, 0.0, 0.0], "minute_ts": int(self.clock())},
                "temperature": {"tC": 41.2, "tF": 106.2}}

    def switch_set(self, cid: int, on: bool) -> dict[str, Any]:
        was = self.switch_on[cid]
        if not self.switch_stuck:
            self.switch_on[cid] = on
        return {"was_on": was}

    # -- RPC ---------------------------------------------------------------------------------------
    def rpc(self, method: str, params: dict[str, Any]) -> Any:
        """Answer one RPC call (no transport, no faults), through the method tables below."""
        with self._lock:
            now = self._now()
            if method in GLOBAL_METHODS:
                return GLOBAL_METHODS[method](self, now)
            ns, _, verb = method.partition(".")
            namespaces, ids = PROFILES[self.profile]
            if ns == "Switch" and self.switch_on:
                namespaces, ids = frozenset({"Switch"}), len(self.switch_on)
            handler = COMPONENT_METHODS.get(ns, {}).get(verb) if ns in namespaces else None
            if handler is None:
                raise RpcFailure(404, 404, f"No handler for {method}")
            cid = _int_param(params, "id", None)
            if cid is None:
                raise RpcFailure(400, -103, "Missing required argument 'id'!")
            if not 0 <= cid < ids:
                raise RpcFailure(404, -105, f"Argument 'id', value {cid} not found!")
            return handler(self, Call(now, cid, None if ids == 1 else cid, params))


def _int_param(params: dict[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name, default)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RpcFailure(400, -103, f"Invalid argument '{name}'!") from None


def _bool_param(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if value in (True, "true"):
        return True
    if value in (False, "false"):
        return False
    raise RpcFailure(400, -103, f"Missing required argument '{name}'!" if value is None
                     else f"Invalid argument '{name}'!")


Handler = Callable[[ShellyDevice, Call], Any]

PROFILES: dict[str, tuple[frozenset[str], int]] = {
    "triphase": (frozenset({"EM", "EMData"}), 1),   # one three-phase meter, id 0
    "monophase": (frozenset({"EM1", "EM1Data"}), 3),  # three single-phase channels, ids 0..2
}
"""Profile -> (the meter namespaces it has, how many component ids)."""

GLOBAL_METHODS: dict[str, Callable[[ShellyDevice, float], Any]] = {
    "Shelly.GetDeviceInfo": lambda d, now: d.device_info(),
    "Shelly.GetStatus": ShellyDevice.full_status,
    "Sys.GetStatus": ShellyDevice.sys_status,
}


def _cleared(action: Callable[[Meter], None]) -> Handler:
    """A method that changes the meter and answers null."""

    def handler(d: ShellyDevice, c: Call) -> None:
        action(d.meter)

    return handler


_DATA_METHODS: dict[str, Handler] = {
    "GetRecords": lambda d, c: d.get_records(c.ch, c.params),
    "GetData": lambda d, c: d.get_data(c.ch, c.params),
    "DeleteAllData": _cleared(Meter.delete_all_data),
    "ResetCounters": _cleared(Meter.reset_counters),
}

COMPONENT_METHODS: dict[str, dict[str, Handler]] = {
    "EM": {"GetStatus": lambda d, c: d.em_status(c.now)},
    "EMData": {"GetStatus": lambda d, c: d.emdata_status(), **_DATA_METHODS},
    "EM1": {"GetStatus": lambda d, c: d.em1_status(c.now, c.cid)},
    "EM1Data": {"GetStatus": lambda d, c: d.em1data_status(c.cid), **_DATA_METHODS},
    "Switch": {"GetStatus": lambda d, c: d.switch_status(c.cid),
               "Set": lambda d, c: d.switch_set(c.cid, _bool_param(c.params, "on")),
               "Toggle": lambda d, c: d.switch_set(c.cid, not d.switch_on[c.cid])},
}
"""Namespace -> verb -> handler: the meter components' API (every call carries an ``id``)."""
