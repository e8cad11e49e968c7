"""The emulated Shelly's MQTT side: Gen2 RPC over MQTT, as the firmware does it.

A request ``{"id": 7, "src": "client-1", "method": "Switch.Set", "params": {"id": 0, "on": true}}`` on
``{prefix}/rpc`` is answered on ``{src}/rpc`` with ``{"id": 7, "src": <device id>, "dst": "client-1",
"result": ...}`` or ``"error": {"code", "message"}``; a switch that changes is announced on
``{prefix}/events/rpc`` as ``NotifyStatus`` and ``{prefix}/status/switch:N``. Only transport differs from
HTTP: the same :meth:`ShellyDevice.rpc` answers, so the relay's Shelly outputs meet one device.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import paho.mqtt.client as paho

from .emulator_device import RpcFailure, ShellyDevice


class MqttRpc:
    def __init__(self, device: ShellyDevice, host: str, port: int, prefix: str) -> None:
        self.device, self.prefix = device, prefix
        self.silent = False
        """Tests: receive requests but answer nothing (a device gone quiet)."""
        self.requests = 0
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-emu")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.will_set(f"{prefix}/online", "false", qos=1, retain=True)
        self._host, self._port = host, port

    def start(self) -> "MqttRpc":
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.publish(f"{self.prefix}/online", "false", qos=1, retain=True)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(f"{self.prefix}/rpc", qos=1)
        client.publish(f"{self.prefix}/online", "true", qos=1, retain=True)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.requests += 1
        try:
            frame = orjson.loads(msg.payload)
            rid, src, method = frame["id"], frame["src"], frame["method"]
            params = frame.get("params") or {}
            if not (isinstance(src, str) and isinstance(method, str) and isinstance(params, dict)):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # the firmware ignores frames it cannot read
        if self.silent or not src or "#" in src or "+" in src:
            return
        before = list(self.device.switch_on)
        answer: dict[str, Any] = {"id": rid, "src": self.device.device_id, "dst": src}
        try:
            answer["result"] = self.device.rpc(method, params)
        except RpcFailure as exc:
            answer["error"] = {"code": exc.code, "message": exc.message}
        client.publish(f"{src}/rpc", orjson.dumps(answer), qos=1)
        for cid, (was, now) in enumerate(zip(before, self.device.switch_on)):
            if was != now:
                status = self.device.switch_status(cid)
                client.publish(f"{self.prefix}/status/switch:{cid}", orjson.dumps(status), qos=1)
                note = {"src": self.device.device_id, "dst": f"{self.prefix}/events", "method": "NotifyStatus",
                        "params": {"ts": round(time.time(), 2), f"switch:{cid}": {"id": cid, "output": now}}}
                client.publish(f"{self.prefix}/events/rpc", orjson.dumps(note), qos=1)
