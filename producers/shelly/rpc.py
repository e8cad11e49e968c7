"""Shelly Gen2 HTTP RPC client: httpx, SHA-256 digest auth, timeouts, retries (tenacity).

Why its own module: every way a device can misbehave (no answer, HTTP 500, half a JSON document,
a 401) is decided here once, turned into one of a few exceptions, and counted, so the producer's
loop only ever sees "a result" or "this poll failed, here is why".
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import httpx
import orjson
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

USER = "admin"  # Gen2 digest auth user, always

# httpx logs every request at INFO: one journal line per poll would wear the Pi's SD card.
logging.getLogger("httpx").setLevel(logging.WARNING)


class ShellyError(Exception):
    """Base of the errors a poll can end with; ``reason`` names the counter."""

    reason = "rpc_errors"


class Unreachable(ShellyError):
    reason = "unreachable"


class BadResponse(ShellyError):
    """The device answered something that is not the JSON object expected (garbage, truncated)."""

    reason = "bad_responses"


class AuthError(ShellyError):
    """401 after presenting credentials (or none configured while the device wants them)."""

    reason = "auth_failures"


class RpcError(ShellyError):
    """The device answered with an RPC error (unknown method, bad argument)."""

    reason = "rpc_errors"

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(f"RPC error {code}: {message}")
        self.code, self.message = code, message


class _Transient(Exception):
    """One failed attempt worth retrying; ``counter`` is what it is counted as."""

    def __init__(self, counter: str, detail: str, final: type[ShellyError]) -> None:
        super().__init__(detail)
        self.counter, self.final = counter, final


def base_url(host: str) -> str:
    """``192.168.1.20``, ``host:8080`` or a full ``http://...`` URL -> a base URL without slash."""
    host = host.strip().rstrip("/")
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


class ShellyRpc:
    """Calls ``GET /rpc/<Method>?params`` and returns the decoded result object.

    ``sleep`` is what waits between attempts (the producer passes its interruptible ``ctx.wait``),
    ``should_stop`` ends retrying at once on shutdown, ``count(name)`` receives one call per failed
    attempt (``timeouts``, ``transport_errors``, ``http_errors``, ``bad_responses``) and per retry.
    """

    def __init__(self, host: str, *, password: str | None = None, timeout: float = 5.0,
                 data_timeout: float = 30.0, retries: int = 3,
                 retry_wait: float = 0.5, sleep: Callable[[float], Any] = time.sleep,
                 should_stop: Callable[[], bool] = lambda: False,
                 count: Callable[[str], None] = lambda name: None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = base_url(host)
        self.data_timeout = data_timeout  # EMData reads: a real device sends ~60 records/s
        self._count = count
        self._retries = max(1, retries)
        self._retry_wait = retry_wait
        self._sleep = sleep
        self._should_stop = should_stop
        auth = httpx.DigestAuth(USER, password) if password else None
        self._client = httpx.Client(base_url=self.url, auth=auth, timeout=httpx.Timeout(timeout),
                                    transport=transport, headers={"User-Agent": "wattbus-shelly"})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "ShellyRpc":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the calls the producer makes -------------------------------------------------------------
    def device_info(self) -> dict[str, Any]:
        return self.call("Shelly.GetDeviceInfo")

    def status(self, require: tuple[str, ...] = ()) -> dict[str, Any]:
        """``Shelly.GetStatus``: every component plus ``sys.unixtime`` in one round trip.

        A result lacking one of the ``require``d components is a bad answer, retried like garbage.
        """
        return self.call("Shelly.GetStatus", require=require)

    def get_records(self, namespace: str, data_id: int, ts: int = 0) -> dict[str, Any]:
        return self.call(f"{namespace}.GetRecords", {"id": data_id, "ts": ts}, timeout=self.data_timeout)

    def get_data(self, namespace: str, data_id: int, ts: int, end_ts: int) -> dict[str, Any]:
        return self.call(f"{namespace}.GetData", {"id": data_id, "ts": ts, "end_ts": end_ts},
                         timeout=self.data_timeout)

    # -- transport --------------------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None,
             require: tuple[str, ...] = (), timeout: float | None = None) -> dict[str, Any]:
        """One RPC call with retries; raises a ``ShellyError`` subclass when it cannot succeed."""
        retrying = Retrying(
            stop=stop_after_attempt(self._retries) | (lambda state: self._should_stop()),
            wait=wait_exponential(multiplier=self._retry_wait, max=8.0),
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=lambda state: self._count("retries"),
        )
        try:
            return retrying(self._attempt, method, params or {}, require, timeout)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            if isinstance(last, _Transient):
                raise last.final(f"{method}: {last}") from None
            raise Unreachable(f"{method}: {last}") from None

    def _attempt(self, method: str, params: dict[str, Any], require: tuple[str, ...],
                 timeout: float | None) -> dict[str, Any]:
        query = {k: _query_value(v) for k, v in params.items()}
        extra = {} if timeout is None else {"timeout": httpx.Timeout(timeout)}
        try:
            resp = self._client.get(f"/rpc/{method}", params=query, **extra)
        except httpx.TimeoutException as exc:
            self._count("timeouts")
            raise _Transient("timeouts", f"timed out ({type(exc).__name__})", Unreachable) from None
        except httpx.TransportError as exc:
            self._count("transport_errors")
            raise _Transient("transport_errors", f"{type(exc).__name__}: {exc}", Unreachable) from None
        if resp.status_code == 401:
            raise AuthError(f"{method}: HTTP 401 (wrong or missing password; user {USER!r})")
        if resp.status_code >= 500:
            self._count("http_errors")
            raise _Transient("http_errors", f"HTTP {resp.status_code}", Unreachable)
        try:
            body = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            self._count("bad_responses")
            raise _Transient("bad_responses", f"HTTP {resp.status_code}, body is not JSON "
                             f"({resp.content[:40]!r})", BadResponse) from None
        if resp.status_code >= 400:
            if isinstance(body, dict):
                raise RpcError(body.get("code", resp.status_code), str(body.get("message", "")))
            raise RpcError(resp.status_code, "error without a body")
        if body is None:  # methods that only act (DeleteAllData) answer null
            body = {}
        if not isinstance(body, dict):
            self._count("bad_responses")
            raise _Transient("bad_responses", f"result is a {type(body).__name__}, not an object", BadResponse)
        absent = [k for k in require if not isinstance(body.get(k), dict)]
        if absent:
            self._count("bad_responses")
            raise _Transient("bad_responses", f"result lacks {', '.join(absent)}", BadResponse)
        return body


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()  # Gen2 parses query values as JSON
    return str(value)
