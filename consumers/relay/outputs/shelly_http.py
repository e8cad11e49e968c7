"""A Shelly Gen2 switch over HTTP RPC: ``Switch.Set``, then ``Switch.GetStatus`` to see the output changed.

Digest auth (SHA-256, user ``admin``) is httpx's; the password comes from a file or the environment.
"""

from __future__ import annotations

import logging

import httpx
import orjson

from bus.secrets import read_secret
from consumers.relay.outputs.config import ShellyHttpConfig
from consumers.relay.outputs.retry import NotConfirmed, until_confirmed

MAX_ANSWER = 64 * 1024


class ShellyHttpOutput:
    kind = "shelly_http"

    def __init__(self, cfg: ShellyHttpConfig, log: logging.Logger) -> None:
        self.cfg, self.log = cfg, log
        password = read_secret(cfg.password_file, cfg.password_env, env_required=cfg.password_env is not None)
        auth = httpx.DigestAuth("admin", password) if password else None
        self.http = httpx.Client(base_url=cfg.url.rstrip("/"), auth=auth, timeout=cfg.timeout)

    def _call(self, method: str, **params: object) -> dict:
        query = {k: orjson.dumps(v).decode() if isinstance(v, bool) else v for k, v in params.items()}
        try:
            r = self.http.get(f"/rpc/{method}", params=query)
        except httpx.HTTPError as exc:
            raise NotConfirmed(f"{method}: {type(exc).__name__}: {exc}") from None
        if r.status_code == 401:
            raise NotConfirmed(f"{method}: the device refused the password (HTTP 401)")
        if r.status_code != 200:
            raise NotConfirmed(f"{method}: HTTP {r.status_code}: {r.text[:200]!r}")
        try:
            body = orjson.loads(r.content[:MAX_ANSWER])
        except orjson.JSONDecodeError:
            raise NotConfirmed(f"{method}: the answer is not JSON: {r.content[:80]!r}") from None
        if not isinstance(body, dict):
            raise NotConfirmed(f"{method}: expected a JSON object, got {type(body).__name__}")
        return body

    def set(self, on: bool) -> None:
        def attempt() -> None:
            self._call("Switch.Set", id=self.cfg.switch, on=on)
            status = self._call("Switch.GetStatus", id=self.cfg.switch)
            if status.get("output") is not on:
                raise NotConfirmed(f"Switch.GetStatus says output {status.get('output')!r:.40}")

        until_confirmed(attempt, self.cfg.retries,
                        f"Shelly {self.cfg.url} switch:{self.cfg.switch} {'on' if on else 'off'}")

    def close(self) -> None:
        self.http.close()
