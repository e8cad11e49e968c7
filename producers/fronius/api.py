"""Fronius Solar API v1 client on ``bus.http`` (httpx, timeouts, tenacity's retries): answers checked here.

Every Solar API answer is ``{"Head": {"RequestArguments", "Status": {"Code", "Reason", "UserMessage"},
"Timestamp"}, "Body": {"Data": ...}}``. What can go wrong, and what this module turns it into:

- no answer, a timeout, HTTP 5xx, a body that is not that JSON object (garbage, truncated, a captive portal's
  HTML, no ``Head.Status.Code``): retried, then ``Unreachable`` or ``BadResponse`` (which keeps the start of
  the last body for the DLQ);
- ``Status.Code`` 5, 7, 8, 9 (timeouts and errors on the Datamanager's internal "LN" bus: about 1 % of
  requests on a Symo): retried like a timeout;
- ``Status.Code`` 12 ``DeviceNotAvailable``: the inverter is asleep (night) or switched off: :class:`Asleep`,
  not retried (it will not wake up within a retry);
- ``Status.Code`` 1, 11 ``NotImplemented``/``NotSupported`` (e.g. 3PInverterData on a single-phase inverter):
  :class:`NotSupported`, not retried;
- any other code: :class:`ApiError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from bus.http import BadResponse, HttpError, JsonClient, Retry, Unreachable

BASE = "/solar_api/v1/"
STATUS_NAMES = {0: "OK", 1: "NotImplemented", 2: "Uninitialized", 3: "Initialized", 4: "Running",
                5: "Timeout", 6: "ArgumentError", 7: "LNRequestError", 8: "LNRequestTimeout",
                9: "LNParseError", 10: "ConfigIOError", 11: "NotSupported", 12: "DeviceNotAvailable",
                255: "UnknownError"}
TRANSIENT_CODES = frozenset({5, 7, 8, 9})
ASLEEP_CODES = frozenset({12})
UNSUPPORTED_CODES = frozenset({1, 11})

FroniusError = HttpError
"""What a request can end with: ``bus.http``'s Unreachable and BadResponse, and the API errors below."""

__all__ = ["Answer", "ApiError", "Asleep", "BadResponse", "FroniusError", "NotSupported", "SolarApi",
           "Unreachable", "parse_timestamp"]


class ApiError(HttpError):
    """A Solar API error status."""

    def __init__(self, code: int, reason: str, endpoint: str) -> None:
        name = STATUS_NAMES.get(code, "?")
        super().__init__(f"{endpoint}: Solar API status {code} ({name}){f': {reason}' if reason else ''}")
        self.code = code


class Asleep(ApiError):
    """DeviceNotAvailable: the inverter sleeps (night) or is switched off."""


class NotSupported(ApiError):
    """NotImplemented / NotSupported: this inverter has no such data (3PInverterData on a single phase)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: ``Body.Data`` and the device's clock (``Head.Timestamp``), epoch seconds."""

    data: dict[str, Any]
    device_time: float | None


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
    """The Solar API v1 calls the producer makes, over ``bus.http.JsonClient`` (timeouts, retries)."""

    def __init__(self, host: str, *, timeout: float = 5.0, retries: int = 3,
                 sleep: Callable[[float], Any] | None = None, should_stop: Callable[[], bool] = lambda: False,
                 count: Callable[[str], None] = lambda name: None,
                 transport: httpx.BaseTransport | None = None) -> None:
        extra = {} if sleep is None else {"sleep": sleep}
        self.http = JsonClient(host, timeout=timeout, retries=retries, should_stop=should_stop, count=count,
                               transport=transport, user_agent="wattbus-fronius", **extra)
        self.url = self.http.url

    def close(self) -> None:
        self.http.close()

    def api_version(self) -> dict[str, Any]:
        """``/solar_api/GetAPIVersion.cgi`` (no Head/Body: ``{"APIVersion": 1, "BaseURL": ...}``)."""
        def check(status: int, doc: Any, body: bytes) -> dict[str, Any]:
            if not isinstance(doc, dict):
                raise Retry("bad_responses", f"HTTP {status}: a JSON {type(doc).__name__}, not an object",
                            body=body)
            return doc

        return self.http.get("/solar_api/GetAPIVersion.cgi", {}, check)

    def power_flow(self) -> Answer:
        return self._call("GetPowerFlowRealtimeData.fcgi", {})

    def inverter(self, device_id: int, collection: str) -> Answer:
        return self._call("GetInverterRealtimeData.cgi",
                          {"Scope": "Device", "DeviceId": str(device_id), "DataCollection": collection})

    def _call(self, name: str, params: dict[str, str]) -> Answer:
        def check(status: int, doc: Any, body: bytes) -> Answer:
            head = doc.get("Head") if isinstance(doc, dict) else None
            data = doc.get("Body") if isinstance(doc, dict) else None
            data = data.get("Data") if isinstance(data, dict) else None
            st = head.get("Status") if isinstance(head, dict) else None
            code = st.get("Code") if isinstance(st, dict) else None
            if not isinstance(code, int) or isinstance(code, bool):
                raise Retry("bad_responses", f"HTTP {status}: no Head.Status.Code", body=body)
            if code != 0:
                reason = st.get("Reason") if isinstance(st.get("Reason"), str) else ""
                reason = reason[:200]
                if code in TRANSIENT_CODES:
                    raise Retry("api_transient", reason, ApiError(code, reason, name))
                if code in ASLEEP_CODES:
                    raise Asleep(code, reason, name)
                if code in UNSUPPORTED_CODES:
                    raise NotSupported(code, reason, name)
                raise ApiError(code, reason, name)
            if not isinstance(data, dict):
                raise Retry("bad_responses", f"HTTP {status}: Body.Data is not an object", body=body)
            return Answer(data, parse_timestamp(head.get("Timestamp")))

        return self.http.get(BASE + name, params, check)
