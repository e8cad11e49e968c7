"""Outputs reached over the broker: Tasmota, Shelly Gen2 RPC over MQTT, and a plain command topic.

Devices have their own topics, outside wattbus's ``topic_prefix``. Each output listens on its device's
confirmation topic from the start, and a switch waits for the confirmation that arrives after its command.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

import orjson

from bus.mqtt import BusClient, Message
from consumers.relay.outputs.config import MqttConfig, ShellyMqttConfig, TasmotaConfig
from consumers.relay.outputs.retry import NotConfirmed, until_confirmed

MAX_ANSWER = 64 * 1024


class _Confirmations:
    """The latest value seen on a device's topics, and a condition to wait for the next one."""

    def __init__(self, client: BusClient, topics: list[str], parse: Callable[[Message], object]) -> None:
        self.client, self.parse = client, parse
        self._cond = threading.Condition()
        self._seen = 0
        self.last: object = None
        self.topics = topics
        for t in topics:
            client.subscribe(t, self._on, outside_prefix=True)

    def _on(self, msg: Message) -> None:
        try:
            value = self.parse(msg) if len(msg.payload) <= MAX_ANSWER else None
        except (ValueError, TypeError, KeyError, AttributeError):
            value = None  # garbage from the device: no confirmation
        finally:
            msg.ack()
        if value is None:
            return
        with self._cond:
            self.last, self._seen = value, self._seen + 1
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return self._seen

    def wait(self, since: int, want: Callable[[object], bool], timeout: float) -> bool:
        """True when a value arriving after ``mark() == since`` satisfies ``want`` within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seen > since and want(self.last), timeout)

    def close(self) -> None:
        for t in self.topics:
            self.client.unsubscribe(t, outside_prefix=True)


def _text(msg: Message) -> str:
    return msg.payload.decode("utf-8").strip()


class TasmotaOutput:
    """``cmnd/{topic}/POWER`` ON/OFF, confirmed by ``stat/{topic}/POWER`` (or RESULT's ``POWER``)."""

    kind = "tasmota"

    def __init__(self, cfg: TasmotaConfig, client: BusClient, log: logging.Logger, name: str) -> None:
        self.cfg, self.client = cfg, client
        self.key = f"POWER{cfg.index or ''}"
        self.confirm = _Confirmations(client, [f"stat/{cfg.topic}/{self.key}", f"stat/{cfg.topic}/RESULT"],
                                      self._parse)

    def _parse(self, msg: Message) -> str | None:
        if msg.topic.endswith("/RESULT"):
            body = orjson.loads(msg.payload)
            value = body.get(self.key) if isinstance(body, dict) else None
        else:
            value = _text(msg)
        return value.upper() if isinstance(value, str) and value.upper() in ("ON", "OFF") else None

    def set(self, on: bool) -> None:
        word = "ON" if on else "OFF"

        def attempt() -> None:
            mark = self.confirm.mark()
            self.client.publish(f"cmnd/{self.cfg.topic}/{self.key}", word, outside_prefix=True)
            if not self.confirm.wait(mark, lambda v: v == word, self.cfg.timeout):
                raise NotConfirmed(f"no {word} on stat/{self.cfg.topic}/{self.key} within {self.cfg.timeout:g} s"
                                   f" (last: {self.confirm.last!r})")

        until_confirmed(attempt, self.cfg.retries, f"Tasmota {self.cfg.topic} {word}")

    def close(self) -> None:
        self.confirm.close()


class ShellyMqttOutput:
    """Gen2 RPC over MQTT: ``Switch.Set`` then ``Switch.GetStatus`` on ``{prefix}/rpc``, answers on
    ``{src}/rpc``."""

    kind = "shelly_mqtt"
    _ids = itertools.count(1)

    def __init__(self, cfg: ShellyMqttConfig, client: BusClient, log: logging.Logger, name: str) -> None:
        self.cfg, self.client = cfg, client
        self.src = f"wattbus-relay-{name}"
        self.confirm = _Confirmations(client, [f"{self.src}/rpc"], self._parse)

    @staticmethod
    def _parse(msg: Message) -> dict | None:
        body = orjson.loads(msg.payload)
        return body if isinstance(body, dict) and isinstance(body.get("id"), int) else None

    def _call(self, method: str, params: dict) -> dict:
        rid = next(self._ids)
        mark = self.confirm.mark()
        frame = {"id": rid, "src": self.src, "method": method, "params": params}
        self.client.publish(f"{self.cfg.prefix}/rpc", orjson.dumps(frame), outside_prefix=True)
        if not self.confirm.wait(mark, lambda v: isinstance(v, dict) and v.get("id") == rid, self.cfg.timeout):
            raise NotConfirmed(f"{method}: no answer on {self.src}/rpc within {self.cfg.timeout:g} s")
        answer = self.confirm.last
        assert isinstance(answer, dict)
        if "error" in answer:
            raise NotConfirmed(f"{method}: the device answered error {str(answer['error'])[:200]}")
        result = answer.get("result")
        if not isinstance(result, dict):
            raise NotConfirmed(f"{method}: expected a result object, got {str(result)[:80]}")
        return result

    def set(self, on: bool) -> None:
        def attempt() -> None:
            self._call("Switch.Set", {"id": self.cfg.switch, "on": on})
            output = self._call("Switch.GetStatus", {"id": self.cfg.switch}).get("output")
            if output is not on:
                raise NotConfirmed(f"Switch.GetStatus says output {str(output)[:40]}")

        until_confirmed(attempt, self.cfg.retries,
                        f"Shelly {self.cfg.prefix} switch:{self.cfg.switch} {'on' if on else 'off'}")

    def close(self) -> None:
        self.confirm.close()


class MqttOutput:
    """A plain command topic; confirmed on ``state_topic`` when there is one, else by the broker's ack."""

    kind = "mqtt"

    def __init__(self, cfg: MqttConfig, client: BusClient, log: logging.Logger, name: str) -> None:
        self.cfg, self.client = cfg, client
        self.states = {True: cfg.state_on or cfg.payload_on, False: cfg.state_off or cfg.payload_off}
        self.confirm = (_Confirmations(client, [cfg.state_topic], _text) if cfg.state_topic else None)

    def set(self, on: bool) -> None:
        payload = self.cfg.payload_on if on else self.cfg.payload_off

        def attempt() -> None:
            mark = self.confirm.mark() if self.confirm else 0
            info = self.client.publish(self.cfg.command_topic, payload, retain=self.cfg.retain,
                                       outside_prefix=True)
            if self.confirm is None:
                try:
                    info.wait_for_publish(self.cfg.timeout)
                except RuntimeError as exc:
                    raise NotConfirmed(f"publish to {self.cfg.command_topic} failed: {exc}") from None
                if not info.is_published():
                    raise NotConfirmed(f"the broker did not acknowledge {self.cfg.command_topic} within "
                                       f"{self.cfg.timeout:g} s")
                return
            want = self.states[on]
            if not self.confirm.wait(mark, lambda v: v == want, self.cfg.timeout):
                raise NotConfirmed(f"no {want!r} on {self.cfg.state_topic} within {self.cfg.timeout:g} s "
                                   f"(last: {str(self.confirm.last)[:40]!r})")

        until_confirmed(attempt, self.cfg.retries, f"MQTT {self.cfg.command_topic} {payload}")

    def close(self) -> None:
        if self.confirm:
            self.confirm.close()
