"""The api process: the bus runtime on the main thread, the ASGI server (uvicorn) on its own thread.

The paho-based runtime keeps what every wattbus process has: status and last will, the health document,
SIGTERM handling, the DLQ. Bus callbacks update ``LiveState`` and hand events to the server's event loop
with ``call_soon_threadsafe`` (``Feed``), so one MQTT connection serves both the latest values and the live
feed. uvicorn runs in a thread, so it installs no signal handlers of its own; on SIGTERM the runtime sets
``ctx.stopping``, the readings loop returns, live feeds end within a second and uvicorn gets 2 s to finish
the requests in progress: the process is gone well within DESIGN's 10 s.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import uvicorn

from bus import rollup, topics
from bus.config import AppConfig, ConfigError
from bus.consumer import ConsumerContext
from bus.mqtt import Message
from bus.sinks.base import SINKS
from consumers.api import Config
from consumers.api.app import RequestLog, build_app
from consumers.api.history import History
from consumers.api.live import Feed, LiveState
from consumers.api.routes import Services

START_TIMEOUT_S = 15.0


def store_sink(app: AppConfig) -> str | None:
    """The first store consumer's sink URL: where this installation keeps its readings."""
    return next((c.sink for c in app.consumers.values() if c.type == "store"), None)


def producer_roles(app: AppConfig) -> dict[str, str]:
    """Process name, and ``type/device`` of its default device, -> the role its config gives (``role`` key).

    Devices a producer lists in its health document inherit its process's role (see ``routes._role``).
    """
    roles: dict[str, str] = {}
    for name, pcfg in app.producers.items():
        role = getattr(pcfg, "role", None)
        if isinstance(role, str):
            roles[name] = role
            roles[f"{pcfg.type}/{getattr(pcfg, 'device', None) or name}"] = role
    return roles


def default_hhpc_device(app: AppConfig) -> str | None:
    for name, pcfg in app.producers.items():
        if pcfg.type == "hhpc":
            return getattr(pcfg, "device", None) or name
    return None


def _config_problems(ctx: ConsumerContext, cfg: Config, sink: str | None) -> tuple[str | None, list[str]]:
    where = f"{ctx.app.path}: consumer.{ctx.name}"
    problems: list[str] = []
    if sink is not None and urlsplit(sink).scheme not in SINKS:
        problems.append(f"{where}.sink: unknown URL scheme in {sink!r}; expected one of {', '.join(SINKS)}")
    token = None
    if cfg.token_file:
        try:
            token = Path(cfg.token_file).read_text("utf-8").strip()
        except OSError as exc:
            problems.append(f"{where}.token_file: cannot read {cfg.token_file}: {exc.strerror or exc}")
        else:
            if len(token) < 16:
                problems.append(f"{where}.token_file: the token in {cfg.token_file} is shorter than 16 "
                                "characters (make one with: openssl rand -hex 24)")
    return token, problems


def limit_malloc_arenas() -> None:
    """One glibc malloc arena and an eager trim: each thread otherwise keeps its own arena of freed memory.

    The history workers' large reads (a day of readings, a year grouped) would leave several MB behind per
    thread; on a Pi that is the difference between 50 and 60 MB. No effect (and no error) off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 1)  # M_ARENA_MAX
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


class _Server(uvicorn.Server):
    """uvicorn wakes ten times a second to see whether it should stop: 0.3 % of a core on an idle Pi. Once a
    second does here (a stop takes up to a second longer; the Date header is still renewed every second)."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # on_tick renews its headers when counter % 10 == 0
            await asyncio.sleep(1.0)


def serve(ctx: ConsumerContext, cfg: Config) -> None:
    limit_malloc_arenas()
    sink = cfg.sink or store_sink(ctx.app)
    token, problems = _config_problems(ctx, cfg, sink)
    if problems:
        raise ConfigError(problems)
    feed = Feed()
    live = LiveState(feed)
    history = History(sink, cfg.workers)
    if cfg.hhpc_device is None:
        cfg.hhpc_device = default_hhpc_device(ctx.app)
    services = Services(ctx, cfg, live, feed, history, token, producer_roles(ctx.app))
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    server = _Server(uvicorn.Config(
        RequestLog(build_app(services), ctx.log, ctx.counters), host=cfg.listen, port=cfg.port, log_config=None,
        access_log=False, lifespan="on", timeout_graceful_shutdown=2, server_header=False))
    failed = threading.Event()

    def run_server() -> None:
        try:
            server.run()
        except BaseException:  # uvicorn exits with SystemExit when it cannot bind
            failed.set()
            raise
        finally:
            if not server.started:
                failed.set()

    thread = threading.Thread(target=run_server, name="http", daemon=True)
    thread.start()
    while not server.started and not failed.wait(0.05):
        if ctx.stopping.is_set():
            break
    if failed.is_set():
        history.close()
        raise SystemExit(f"api: cannot serve on {cfg.listen}:{cfg.port} (in use, or not an address of "
                         "this machine?)")
    ctx.log.info("serving the API and dashboard on http://%s:%d/ (history from %s; %s)", cfg.listen, cfg.port,
                 history.describe(), "write routes enabled" if token else "read-only")
    ctx.add_health(lambda: {"http": f"{cfg.listen}:{cfg.port}", "sse_clients": len(feed.clients),
                            "sse_sent": feed.sent, "sse_dropped": feed.dropped})
    subscribe(ctx, live)
    try:
        ctx.consume_readings(live.readings, batch_max=5000, batch_wait=0.0)
    finally:
        server.should_exit = True
        thread.join(8.0)
        history.close()


def subscribe(ctx: ConsumerContext, live: LiveState) -> None:
    """Statuses, health, dead letters, buckets and the sim meters' head-end topics (readings come last)."""

    def on_status(msg: Message) -> None:
        parts = msg.topic.split("/")
        status = msg.payload.decode("utf-8", "replace")
        if status not in ("online", "offline") or len(parts) != 3:
            return
        if parts[0] == "wattbus":
            live.process_status(parts[1], status)
        else:
            live.device_status(parts[0], parts[1], status)

    def on_json(handler, what: str):
        def cb(msg: Message) -> None:
            if not msg.payload:
                return  # a cleared retained message
            try:
                doc = orjson.loads(msg.payload)
            except orjson.JSONDecodeError as exc:
                ctx.dead_letter(msg.payload, f"{what}: not JSON: {exc}", msg.topic)
                return
            if isinstance(doc, dict):
                handler(msg.topic.split("/"), doc)
            else:
                ctx.dead_letter(msg.payload, f"{what}: expected a JSON object", msg.topic)

        return cb

    def on_bucket(msg: Message) -> None:
        if not msg.payload:
            return  # a cleared retained message
        try:
            live.bucket(rollup.decode(msg.payload))
        except Exception as exc:  # msgspec.ValidationError / DecodeError
            ctx.dead_letter(msg.payload, f"bucket: {exc}", msg.topic)

    ctx.subscribe(topics.ALL_STATUS, on_status)
    ctx.subscribe(topics.process_health("+"),
                  on_json(lambda parts, doc: live.process_health(parts[1], doc), "health"))
    ctx.subscribe(topics.dlq("+"), on_json(lambda parts, doc: live.dead_letter(parts[2], doc), "dead letter"))
    ctx.subscribe(topics.aggregate("+", "+", "+"), on_bucket)
    ctx.subscribe(topics.heartbeat("sim", "+"),
                  on_json(lambda parts, doc: live.meter_heartbeat(parts[1], doc), "heartbeat"))
    ctx.subscribe(topics.device_config("sim", "+"),
                  on_json(lambda parts, doc: live.meter_config(parts[1], doc), "meter config"))
