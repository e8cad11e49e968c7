"""A JSON-over-HTTP GET with timeouts and retries (httpx, tenacity), for producers that poll a device or a web
service (fronius, weather).

Every way a request can fail is decided here once and counted: no answer or a timeout, HTTP 5xx, a body that
is not JSON (garbage, truncated, an HTML error page) or is far too large. Those are retried with an
exponential pause; when the last attempt fails too the caller gets :class:`Unreachable` or
:class:`BadResponse` (which keeps the start of the body for the dead-letter queue). What a decoded answer
*means* is the caller's ``check``: it returns the result, raises :class:`Retry` (this attempt failed, try
again) or raises its own final error.

``count(name)`` receives one call per failed attempt (``timeouts``, ``transport_errors``, ``http_errors``,
``bad_responses``, or the name a ``Retry`` gives) and per retry (``retries``). ``secret`` (an API key in the
query) is scrubbed from every message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx
import orjson
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would wear the SD card

T = TypeVar("T")
MAX_BODY = 1 << 20
"""An answer larger than this (1 MiB) is garbage here: no device or weather service sends that much."""
DLQ_BODY = 4096
"""How much of a garbage body :class:`BadResponse` keeps."""


class HttpError(Exception):
    """Base of the final errors of a request."""


class Unreachable(HttpError):
    """No answer, a timeout, HTTP 5xx: on every attempt."""


class BadResponse(HttpError):
    """An answer that is not what it must be (not JSON, too large, wrong shape); ``body``: its start."""

    def __init__(self, message: str, body: bytes = b"") -> None:
        super().__init__(message)
        self.body = body[:DLQ_BODY]


class Retry(Exception):
    """Raised by a ``check``: this attempt failed; ``counter`` counts it, ``final`` is raised if it was the
    last one (default: :class:`BadResponse` with the body)."""

    def __init__(self, counter: str, detail: str, final: Exception | None = None, body: bytes = b"") -> None:
        super().__init__(detail)
        self.counter, self.final, self.body = counter, final, body


def base_url(host: str) -> str:
    """``192.168.1.30``, ``host:8080`` or a full ``http(s)://...`` URL -> a base URL without trailing
    slash."""
    host = host.strip().rstrip("/")
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


class JsonClient:
    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 3, retry_wait: float = 0.5,
                 sleep: Callable[[float], Any] = time.sleep, should_stop: Callable[[], bool] = lambda: False,
                 count: Callable[[str], None] = lambda name: None,
                 transport: httpx.BaseTransport | None = None, user_agent: str = "wattbus",
                 secret: str | None = None) -> None:
        self.url = base_url(url)
        self._count, self._retries, self._retry_wait = count, max(1, retries), retry_wait
        self._sleep, self._should_stop, self._secret = sleep, should_stop, secret
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout), transport=transport,
                                    headers={"User-Agent": user_agent}, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def get(self, path: str, params: Mapping[str, str], check: Callable[[int, Any, bytes], T]) -> T:
        """``check(status, decoded JSON, body)`` of the first attempt that passes; see the module
        docstring."""
        retrying = Retrying(
            stop=stop_after_attempt(self._retries) | (lambda state: self._should_stop()),
            wait=wait_exponential(multiplier=self._retry_wait, max=8.0),
            retry=retry_if_exception_type(Retry), sleep=self._sleep,
            before_sleep=lambda state: self._count("retries"))
        name = path.rsplit("/", 1)[-1] or path
        try:
            return retrying(self._attempt, path, params, check)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            if isinstance(last, Retry):
                if last.final is not None:
                    raise last.final from None
                raise BadResponse(self.scrub(f"{name}: {last}"), last.body) from None
            raise Unreachable(self.scrub(f"{name}: {last}")) from None

    def _attempt(self, path: str, params: Mapping[str, str], check: Callable[[int, Any, bytes], T]) -> T:
        name = path.rsplit("/", 1)[-1] or path
        try:
            resp = self._client.get(path, params=params)
        except httpx.TimeoutException as exc:
            self._count("timeouts")
            raise Retry("timeouts", f"timed out ({type(exc).__name__})",
                        Unreachable(f"{name}: timed out")) from None
        except httpx.HTTPError as exc:
            self._count("transport_errors")
            detail = self.scrub(f"{type(exc).__name__}: {exc}")
            raise Retry("transport_errors", detail, Unreachable(f"{name}: {detail}")) from None
        body = resp.content
        if resp.status_code >= 500:
            self._count("http_errors")
            raise Retry("http_errors", f"HTTP {resp.status_code}",
                        Unreachable(f"{name}: HTTP {resp.status_code}"))
        if len(body) > MAX_BODY:
            self._count("bad_responses")
            raise Retry("bad_responses",
                        f"HTTP {resp.status_code}: {len(body)} bytes, far larger than any answer", body=body)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._count("bad_responses")
            raise Retry("bad_responses", f"HTTP {resp.status_code}: not JSON ({body[:40]!r})",
                        body=body) from None
        try:
            return check(resp.status_code, doc, body)
        except Retry as r:
            self._count(r.counter)
            raise
