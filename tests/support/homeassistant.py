"""A real Home Assistant Core for tests: a cached venv, a generated config dir, headless on a free port.

The venv (``~/.cache/wattbus-test/ha-venv-{version}``, or ``$WATTBUS_TEST_CACHE``) is made once with a Python
that the pinned release supports (pyenv's 3.13 here) and ``pip install homeassistant=={version}``; HA's first
start then installs its integrations' requirements into the same venv, so later runs start in seconds.
Setup goes through HA's own front doors: onboarding over REST (the owner user, an auth code, a token), the
MQTT integration through its config flow (HA sets MQTT up from a config entry since 2022.3), a long-lived
token from the websocket, and the websocket API for everything the tests ask.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from tests.support.ports import free_port

HA_VERSION = "2025.4.4"
"""The pinned release: the newest this machine's package index has; needs Python >= 3.13."""
PYTHONS = ("python3.13",)
CACHE = Path(os.environ.get("WATTBUS_TEST_CACHE", Path.home() / ".cache" / "wattbus-test"))
CLIENT_ID = "http://127.0.0.1/"


class Unavailable(Exception):
    """Home Assistant cannot run here (no suitable Python, install failed); the reason is the message."""


def find_python() -> str | None:
    """A Python the pinned HA runs on: pyenv's, else on PATH; each one tried (a pyenv shim may not run)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [str(exe) for name in PYTHONS
                  for exe in sorted(root.glob(f"{name.removeprefix('python')}.*/bin/{name}"), reverse=True)]
    candidates += [found for name in PYTHONS if (found := shutil.which(name))]
    for exe in candidates:
        try:
            check = subprocess.run([exe, "-c", "import venv, ensurepip"], capture_output=True, timeout=60)
            if check.returncode == 0:
                return exe
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def ensure_venv(log: Path) -> Path:
    """The cached venv with HA installed; made (minutes, once) when missing. Raises Unavailable."""
    venv = CACHE / f"ha-venv-{HA_VERSION}"
    stamp = venv / ".wattbus-ready"
    if stamp.exists():
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"ha-venv-{HA_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs (two worktrees) must not build it over each other
        if stamp.exists():
            return venv
        return _build_venv(venv, stamp, log)


def _build_venv(venv: Path, stamp: Path, log: Path) -> Path:
    python = find_python()
    if python is None:
        raise Unavailable(f"no {' or '.join(PYTHONS)} interpreter (Home Assistant {HA_VERSION} needs one)")
    shutil.rmtree(venv, ignore_errors=True)
    with open(log, "ab") as out:
        steps = ([python, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"homeassistant=={HA_VERSION}"])
        for cmd in steps:
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1800).returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise Unavailable(f"{' '.join(cmd[-3:])} failed (log: {log})")
    stamp.write_text(HA_VERSION + "\n")
    return venv


CONFIGURATION = """\
homeassistant:
  name: wattbus test
  latitude: 50.85
  longitude: 4.35
  elevation: 20
  unit_system: metric
  time_zone: Europe/Brussels
  currency: EUR
  country: BE
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
recorder:
  commit_interval: 1
history:
energy:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""


class HomeAssistant:
    """One HA process on a free port, set up and driven through its own APIs."""

    def __init__(self, workdir: Path, venv: Path):
        self.dir = workdir
        self.config = workdir / "config"
        self.venv = venv
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self.log = workdir / "hass.out"

    # -- process -----------------------------------------------------------------------------------
    def start(self, timeout: float = 900.0) -> "HomeAssistant":
        self.config.mkdir(parents=True, exist_ok=True)
        (self.config / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "hass"), "-c", str(self.config), "--log-no-color", "--ignore-os-check"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/api/onboarding", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Home Assistant did not answer within {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    # -- setup through HA's own APIs ---------------------------------------------------------------
    def onboard(self) -> None:
        """Create the owner user (REST onboarding), trade the auth code for a token, then a long-lived one."""
        r = httpx.post(f"{self.url}/api/onboarding/users", timeout=30, json={
            "client_id": CLIENT_ID, "name": "Test", "username": "test", "password": "wattbus-test-pw",
            "language": "en"})
        r.raise_for_status()
        code = r.json()["auth_code"]
        r = httpx.post(f"{self.url}/auth/token", timeout=30, data={
            "grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID})
        r.raise_for_status()
        self.token = r.json()["access_token"]
        self.token = self.ws([{"type": "auth/long_lived_access_token", "client_name": "wattbus tests",
                               "lifespan": 1}])[0]

    def add_mqtt(self, host: str, port: int) -> dict:
        """The MQTT integration through its config flow, as the UI does it."""
        r = httpx.post(f"{self.url}/api/config/config_entries/flow", headers=self.headers, timeout=60,
                       json={"handler": "mqtt", "show_advanced_options": False})
        r.raise_for_status()
        flow = r.json()
        if flow.get("type") == "form":
            r = httpx.post(f"{self.url}/api/config/config_entries/flow/{flow['flow_id']}",
                           headers=self.headers, timeout=60, json={"broker": host, "port": port})
            r.raise_for_status()
            flow = r.json()
        if flow.get("type") != "create_entry":
            raise RuntimeError(f"MQTT config flow did not create an entry: {flow}")
        return flow

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    # -- asking HA ---------------------------------------------------------------------------------
    def states(self) -> dict[str, dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/states", headers=self.headers, timeout=30)
        r.raise_for_status()
        return {s["entity_id"]: s for s in r.json()}

    def ws(self, commands: list[dict[str, Any]]) -> list[Any]:
        """Run websocket commands in order; the results (an error result raises)."""
        return asyncio.run(self._ws(commands))

    async def _ws(self, commands: list[dict[str, Any]]) -> list[Any]:
        out = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.url}/api/websocket") as ws:
                await ws.receive_json()  # auth_required
                await ws.send_json({"type": "auth", "access_token": self.token})
                hello = await ws.receive_json()
                if hello.get("type") != "auth_ok":
                    raise RuntimeError(f"websocket auth failed: {hello}")
                for i, cmd in enumerate(commands, 1):
                    await ws.send_json({"id": i, **cmd})
                    while True:
                        msg = await ws.receive_json(timeout=60)
                        if msg.get("id") == i and msg.get("type") == "result":
                            break
                    if not msg.get("success"):
                        raise RuntimeError(f"websocket {cmd['type']} failed: {msg.get('error')}")
                    out.append(msg.get("result"))
        return out

    def wait(self, predicate, timeout: float, what: str, every: float = 0.5):
        """Poll ``predicate()`` until it returns something truthy; that value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"Home Assistant died while waiting for {what}:\n{self.tail()}")
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; HA log:\n{self.tail()}")
