"""The ASGI application: the API router, the dashboard pages and static files, errors as problem documents.

Every error leaves as ``application/problem+json`` (RFC 9457) with the reason in ``detail``: a bad parameter
is a 400, an unknown device or route a 404, the store being away a 503; a bug is a 500 whose details go to
the log only. ``RequestLog`` wraps the whole app so that every request, routed or not, is one log line.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.static_files import create_static_files_router

from consumers.api.history import StoreUnavailable
from consumers.api.models import Problem
from consumers.api.routes import ROUTES, Services
from consumers.api.timerange import BadParameter

STATIC = Path(__file__).parent / "static"
PAGES = {"/": "index.html", "/history": "history.html", "/meters": "meters.html", "/processes": "processes.html"}
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
       "frame-ancestors 'none'")
PROBLEM_JSON = "application/problem+json"
_enc = msgspec.json.Encoder()


def problem(request: Request, status: int, detail: str) -> Response:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, instance=request.url.path)
    return Response(_enc.encode(body), status_code=status, media_type=PROBLEM_JSON)


def _on_bad_parameter(request: Request, exc: BadParameter) -> Response:
    return problem(request, exc.status, str(exc))


def _on_validation(request: Request, exc: ValidationException) -> Response:
    reasons = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key, msg = item.get("key"), item.get("message", "")
            reasons.append(f"{key}: {msg}" if key else str(msg))
    return problem(request, 400, "; ".join(reasons) or exc.detail or "invalid request")


def _on_http(request: Request, exc: HTTPException) -> Response:
    return problem(request, exc.status_code, exc.detail or HTTPStatus(exc.status_code).phrase)


def _on_store(request: Request, exc: StoreUnavailable) -> Response:
    request.app.state.services.ctx.log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(request, 503, str(exc))


def _on_error(request: Request, exc: Exception) -> Response:
    request.app.state.services.ctx.log.exception("%s %s failed", request.method, request.url.path)
    return problem(request, 500, f"internal error ({type(exc).__name__}); see the api process's log")


def _page_handler(path: str, html: bytes):
    @get(path, include_in_schema=False, name=f"page:{path}", sync_to_thread=False)
    def page() -> Response[bytes]:
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

    return page


def build_app(services: Services) -> Litestar:
    cfg = services.cfg
    pages = [_page_handler(path, (STATIC / name).read_bytes()) for path, name in PAGES.items()]
    api = Router(path="/api/v1", route_handlers=ROUTES)
    static = create_static_files_router(path="/static", directories=[STATIC], include_in_schema=False,
                                        cache_control=None)

    def bind_feed(app: Litestar) -> None:
        import asyncio

        services.feed.bind(asyncio.get_running_loop())

    return Litestar(
        route_handlers=[api, static, *pages],
        state=State({"services": services}),
        on_startup=[bind_feed],
        exception_handlers={BadParameter: _on_bad_parameter, ValidationException: _on_validation,
                            HTTPException: _on_http, StoreUnavailable: _on_store, Exception: _on_error},
        openapi_config=OpenAPIConfig(
            title="wattbus API", version="1", path="/api/v1", render_plugins=[JsonRenderPlugin()],
            description="Latest values from the bus, history from the store and the aggregate consumer's "
                        "buckets, the sim meters' head end, the processes' health. Times are epoch ms UTC "
                        "or local times in site.timezone; errors are application/problem+json."),
        cors_config=CORSConfig(allow_origins=list(cfg.cors_origins), allow_methods=["GET"],
                               allow_headers=["Authorization", "Content-Type"]) if cfg.cors_origins else None,
        debug=False,
        logging_config=None,
    )


class RequestLog:
    """ASGI wrapper: one log line per request (method, path, status, time to the first byte, client)."""

    def __init__(self, app: Any, log: logging.Logger, counters: Any = None):
        self.app, self.log, self.counters = app, log, counters

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        logged = False

        async def send_logged(message) -> None:
            nonlocal logged
            if message["type"] == "http.response.start" and not logged:
                logged = True
                query = scope.get("query_string", b"")
                path = scope.get("path", "") + ("?" + query.decode("latin-1") if query else "")
                client = scope.get("client") or ("-", 0)
                if self.counters is not None:
                    self.counters.inc("http_requests")
                    if message["status"] >= 500:
                        self.counters.inc("http_5xx")
                self.log.info("%s %s %d %.1f ms %s", scope.get("method", "-"), path[:300], message["status"],
                              (time.perf_counter() - t0) * 1000, client[0])
            await send(message)

        await self.app(scope, receive, send_logged)
