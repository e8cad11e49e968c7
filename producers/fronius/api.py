"""Fronius Solar API v1 client: httpx, timeouts, retries (tenacity), every answer checked once here.

Every Solar API answer is ``{"Head": {"RequestArguments", "Status": {"Code", "Reason", "UserMessage"},
"Timestamp"}, "Body": {"Data": ...}}``. What can go wrong, and what this module turns it into:

- no answer, a timeout, HTTP 5xx, a body that is not that JSON object (garbage, truncated, a captive portal's
  HTML): retried, then :class:`Unreachable` or :class:`BadResponse` (which keeps the last body for the DLQ);
- ``Status.Code`` 5, 7, 8, 9 (timeouts and errors on the Datamanager's internal "LN" bus: about 1 % of requests
  on a Symo): retried like a timeout;
- ``Status.Code`` 12 ``DeviceNotAvailable``: the inverter is asleep (night) or switched off: :class:`Asleep`,
  not retried (it will not wake up within a retry);
- ``Status.Code`` 1, 11 ``NotImplemented``/``NotSupported`` (e.g. 3PInverterData on a single-phase inverter):
  :class:`NotSupported`, not retried;
- any other code: :class:`ApiError`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import httpx
import orjson
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would wear the SD card

BASE = "/solar_api/v1/"
STATUS_NAMES = {0: "OK", 1: "NotImplemented", 2: "Uninitialized", 3: "Initialized", 4: "Running", 5: "Timeout",
                6: "ArgumentError", 7: "LNRequestError", 8: "LNRequestTimeout", 9: "LNParseError",
                10: "ConfigIOError", 11: "NotSupported", 12: "DeviceNotAvailable", 255: "UnknownError"}
TRANSIENT_CODES = frozenset({5, 7, 8, 9})
ASLEEP_CODES = frozenset({12})
UNSUPPORTED_CODES = frozenset({1, 11})
MAX_BODY = 1 << 20
"""An answer larger than this (1 MiB; a real one is a few kB) is garbage, not parsed."""


class FroniusError(Exception):
    """Base of the errors a request can end with; ``reason`` names its counter."""

    reason = "api_errors"


class Unreachable(FroniusError):
    reason = "unreachable"


class BadResponse(FroniusError):
    """The device answered something that is not a Solar API document; ``body`` is what it sent."""

    reason = "bad_responses"

    def __init__(self, message: str, body: bytes = b"") -> None:
        super().__init__(message)
        self.body = body


class ApiError(FroniusError):
    """A Solar API error status."""

    reason = "api_errors"

    def __init__(self, code: int, reason: str, endpoint: str) -> None:
        name = STATUS_NAMES.get(code, "?")
        super().__init__(f"{endpoint}: Solar API status {code} ({name}){f': {reason}' if reason else ''}")
        self.code = code


class Asleep(ApiError):
    reason = "asleep"


class NotSupported(ApiError):
    reason = "not_supported"


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: ``Body.Data`` and the device's clock (``Head.Timestamp``), epoch seconds."""

    data: dict[str, Any]
    device_time: float | None


class _Transient(Exception):
    """One failed attempt worth retrying; ``final`` is what it becomes when the last attempt fails too."""

    def __init__(self, counter: str, detail: str, final: type[FroniusError], body: bytes = b"",
                 code: int = 0) -> None:
        super().__init__(detail)
        self.counter, self.final, self.body, self.code = counter, final, body, code


def base_url(host: str) -> str:
    """``192.168.1.30``, ``host:8080`` or a full ``http://...`` URL -> a base URL without slash."""
    host = host.strip().rstrip("/")
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def parse_timestamp(value: Any) -> float | None:
    """``Head.Timestamp`` (ISO 8601 with offset, e.g. ``2019-01-10T23:33:12+01:00``) -> epoch seconds."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.timestamp() if dt.tzinfo is not None else None


class SolarApi:
    """``GET {base}/solar_api/v1/{endpoint}?params``, checked and retried; ``count(name)`` receives one call per
    failed attempt (``timeouts``, ``transport_errors``, ``http_errors``, ``bad_responses``,
    ``api_transient``) and per retry; ``sleep`` waits between attempts (the producer's interruptible wait)."""

    def __init__(self, host: str, *, timeout: float = 5.0, retries: int = 3, retry_wait: float = 0.5,
                 sleep: Callable[[float], Any] = time.sleep, should_stop: Callable[[], bool] = lambda: False,
                 count: Callable[[str], None] = lambda name: None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = base_url(host)
        self._count, self._retries, self._retry_wait = count, max(1, retries), retry_wait
        self._sleep, self._should_stop = sleep, should_stop
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout), transport=transport,
                                    headers={"User-Agent": "wattbus-fronius"})

    def close(self) -> None:
        self._client.close()

    def api_version(self) -> dict[str, Any]:
        """``/solar_api/GetAPIVersion.cgi`` (no Head/Body: ``{"APIVersion": 1, "BaseURL": ...}``)."""
        return self._call("/solar_api/GetAPIVersion.cgi", {}, envelope=False).data

    def power_flow(self) -> Answer:
        return self._call(BASE + "GetPowerFlowRealtimeData.fcgi", {})

    def inverter(self, device_id: int, collection: str) -> Answer:
        return self._call(BASE + "GetInverterRealtimeData.cgi",
                          {"Scope": "Device", "DeviceId": str(device_id), "DataCollection": collection})

    def _call(self, path: str, params: dict[str, str], envelope: bool = True) -> Answer:
        retrying = Retrying(
            stop=stop_after_attempt(self._retries) | (lambda state: self._should_stop()),
            wait=wait_exponential(multiplier=self._retry_wait, max=8.0),
            retry=retry_if_exception_type(_Transient), sleep=self._sleep,
            before_sleep=lambda state: self._count("retries"))
        name = path.rsplit("/", 1)[-1]
        try:
            return retrying(self._attempt, path, params, envelope)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            if isinstance(last, _Transient):
                if last.final is BadResponse:
                    raise BadResponse(f"{name}: {last}", last.body) from None
                if last.final is ApiError:
                    raise ApiError(last.code, str(last), name) from None
                raise last.final(f"{name}: {last}") from None
            raise Unreachable(f"{name}: {last}") from None

    def _attempt(self, path: str, params: dict[str, str], envelope: bool) -> Answer:
        name = path.rsplit("/", 1)[-1]
        try:
            resp = self._client.get(path, params=params)
        except httpx.TimeoutException as exc:
            self._count("timeouts")
            raise _Transient("timeouts", f"timed out ({type(exc).__name__})", Unreachable) from None
        except httpx.TransportError as exc:
            self._count("transport_errors")
            raise _Transient("transport_errors", f"{type(exc).__name__}: {exc}", Unreachable) from None
        if resp.status_code >= 500:
            self._count("http_errors")
            raise _Transient("http_errors", f"HTTP {resp.status_code}", Unreachable)
        body = resp.content
        doc = _decode(body)
        if isinstance(doc, str):
            self._count("bad_responses")
            raise _Transient("bad_responses", f"HTTP {resp.status_code}: {doc}", BadResponse, body[:4096])
        if not envelope:
            return Answer(doc, None)
        head, data = doc.get("Head"), doc.get("Body")
        data = data.get("Data") if isinstance(data, dict) else None
        status = head.get("Status") if isinstance(head, dict) else None
        code = status.get("Code") if isinstance(status, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            self._count("bad_responses")
            raise _Transient("bad_responses", f"HTTP {resp.status_code}: no Head.Status.Code", BadResponse,
                             body[:4096])
        if code != 0:
            reason = status.get("Reason") if isinstance(status.get("Reason"), str) else ""
            reason = reason[:200]
            if code in TRANSIENT_CODES:
                self._count("api_transient")
                raise _Transient("api_transient", reason, ApiError, code=code)
            if code in ASLEEP_CODES:
                raise Asleep(code, reason, name)
            if code in UNSUPPORTED_CODES:
                raise NotSupported(code, reason, name)
            raise ApiError(code, reason, name)
        if not isinstance(data, dict):
            self._count("bad_responses")
            raise _Transient("bad_responses", f"HTTP {resp.status_code}: Body.Data is not an object",
                             BadResponse, body[:4096])
        return Answer(data, parse_timestamp(head.get("Timestamp")))


def _decode(body: bytes) -> dict[str, Any] | str:
    """The JSON object in ``body``, or why it is none."""
    if len(body) > MAX_BODY:
        return f"{len(body)} bytes: far larger than any Solar API answer"
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"not JSON ({body[:40]!r})"
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    return doc
