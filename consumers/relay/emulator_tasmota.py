"""An emulated Tasmota relay on MQTT: the demo's hardware and the tests' device for the ``tasmota`` output.

What the firmware does: ``cmnd/{topic}/POWER{n}`` with ``ON``, ``OFF``, ``TOGGLE`` (or 1/0/2, any case)
switches, an empty payload asks; every answer is ``stat/{topic}/RESULT`` ``{"POWER": "ON"}`` and
``stat/{topic}/POWER`` ``ON``; ``tele/{topic}/LWT`` is ``Online``/``Offline`` (retained).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import orjson
import paho.mqtt.client as paho

WORDS = {"ON": True, "1": True, "OFF": False, "0": False}


class TasmotaDevice:
    def __init__(self, host: str, port: int, topic: str, relays: int = 1) -> None:
        self.topic, self.power = topic, [False] * relays
        self.silent = False
        """Tests: take commands but confirm nothing (a device gone deaf, or a welded contact)."""
        self.commands = 0
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"tasmota-{topic}")
        self._client.will_set(f"tele/{topic}/LWT", "Offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._host, self._port = host, port
        self.ready = threading.Event()

    def start(self) -> "TasmotaDevice":
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.publish(f"tele/{self.topic}/LWT", "Offline", qos=1, retain=True).wait_for_publish(2)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(f"cmnd/{self.topic}/+", qos=1)
        client.publish(f"tele/{self.topic}/LWT", "Online", qos=1, retain=True)
        self.ready.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        command = msg.topic.rsplit("/", 1)[-1].upper()
        if not command.startswith("POWER"):
            return
        index = int(command[5:]) if command[5:].isdigit() else 1
        if not 1 <= index <= len(self.power):
            return
        self.commands += 1
        word = msg.payload.decode("utf-8", "replace").strip().upper()
        if word in ("TOGGLE", "2"):
            self.power[index - 1] = not self.power[index - 1]
        elif word in WORDS:
            self.power[index - 1] = WORDS[word]
        elif word:
            client.publish(f"stat/{self.topic}/RESULT", orjson.dumps({"Command": "Error"}), qos=1)
            return
        if self.silent:
            return
        key = "POWER" if len(self.power) == 1 else f"POWER{index}"
        state = "ON" if self.power[index - 1] else "OFF"
        client.publish(f"stat/{self.topic}/RESULT", orjson.dumps({key: state}), qos=1)
        client.publish(f"stat/{self.topic}/{key}", state, qos=1)


def main(argv: list[str]) -> int:
    """``wattbus emulate relay --broker HOST:PORT --tasmota TOPIC``: Tasmota relays until SIGTERM."""
    ap = argparse.ArgumentParser(prog="wattbus emulate relay", description=main.__doc__)
    ap.add_argument("--broker", default="127.0.0.1:1883", help="the MQTT broker, HOST:PORT")
    ap.add_argument("--tasmota", action="append", required=True, metavar="TOPIC",
                    help="a Tasmota device's Topic (repeat for more devices)")
    ap.add_argument("--relays", type=int, default=1, choices=range(1, 9), metavar="N", help="relays per device")
    args = ap.parse_args(argv)
    host, _, port = args.broker.rpartition(":")
    if not port.isdigit():
        print(f"wattbus emulate relay: --broker: expected HOST:PORT, got {args.broker!r}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        devices = [TasmotaDevice(host or "127.0.0.1", int(port), t, args.relays).start() for t in args.tasmota]
    except OSError as exc:
        print(f"wattbus emulate relay: cannot reach the broker {args.broker}: {exc}", file=sys.stderr)
        return 1
    for d in devices:
        d.ready.wait(10)
    print(f"tasmota emulator: {', '.join(args.tasmota)} on mqtt://{args.broker}", flush=True)
    stop.wait()
    for d in devices:
        d.stop()
    return 0
