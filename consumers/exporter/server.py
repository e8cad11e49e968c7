"""The exporter process: MQTT in, HTTP out (prometheus-client's WSGI app on a threaded server)."""

from __future__ import annotations

import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app

from bus import topics
from bus.consumer import ConsumerContext
from bus.envelope import SOURCES
from bus.mqtt import Message
from consumers.exporter.collector import LatestValues

ROOT_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>wattbus exporter</title></head>
<body style="font-family:sans-serif"><h1>wattbus exporter</h1>
<p>Latest readings of every device, for Prometheus: <a href="metrics">/metrics</a></p></body></html>"""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - Prometheus scrapes every 15 s: keep the log quiet
        pass


def serve(ctx: ConsumerContext, cfg) -> None:
    state = LatestValues(cfg.compat, cfg.compat_device, cfg.stale_after, cfg.max_series)
    registry = CollectorRegistry()
    registry.register(state)
    metrics_app = make_wsgi_app(registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO", "/") in ("/", "/index.html"):
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [ROOT_PAGE]
        return metrics_app(environ, start_response)

    httpd = make_server(cfg.listen, cfg.port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    ctx.log.info("serving metrics on http://%s:%d/metrics", cfg.listen, cfg.port)

    def on_device_status(msg: Message) -> None:
        parsed = topics.parse_device_topic(msg.topic)
        if parsed and parsed[0] in SOURCES:
            state.set_status(parsed[0], parsed[1], msg.payload == b"online")

    def on_process_status(msg: Message) -> None:
        state.set_process(msg.topic.split("/")[1], msg.payload == b"online")

    def on_process_health(msg: Message) -> None:
        if len(msg.payload) > 1 << 20:
            return
        try:
            doc = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict):
            state.set_health(msg.topic.split("/")[1], doc)
        devices = doc.get("devices") if isinstance(doc, dict) else None
        process = msg.topic.split("/")[1]
        if isinstance(devices, list):
            state.set_process(process, state.process_online.get(process, True),
                              [d for d in devices[:cfg.max_series] if isinstance(d, str)])

    ctx.subscribe(topics.ALL_STATUS, on_device_status)
    ctx.subscribe(topics.process_status("+"), on_process_status)
    ctx.subscribe(topics.process_health("+"), on_process_health)
    try:
        ctx.consume_readings(state.update, batch_max=5000, batch_wait=0.0)
    finally:
        httpd.shutdown()
