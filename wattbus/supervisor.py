"""``wattbus up``: every configured process as a child; one that dies is restarted; Ctrl-C stops all.

For development and the demo. In production each process is its own systemd unit (wattbus@NAME).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from bus.config import AppConfig

RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0


def supervise(app: AppConfig, only: list[str] | None = None, extra_env: dict | None = None) -> int:
    names = [n for n in [*app.producers, *app.consumers] if not only or n in only]
    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: dict[str, subprocess.Popen] = {}
    backoff = {n: RESTART_MIN_S for n in names}
    next_start = {n: 0.0 for n in names}
    started_at: dict[str, float] = {}

    def spawn(name: str) -> None:
        children[name] = subprocess.Popen([sys.executable, "-m", "wattbus", "-c", str(app.path), "run", name],
                                          env=extra_env, start_new_session=True)
        started_at[name] = time.monotonic()

    # consumers first, so their subscriptions exist before producers publish
    for name in sorted(names, key=lambda n: n in app.producers):
        spawn(name)
    print(f"wattbus up: {len(names)} processes: {', '.join(names)} (Ctrl-C stops all)", file=sys.stderr)
    while not stopping.wait(0.5):
        now = time.monotonic()
        for name in names:
            p = children.get(name)
            if p is not None and p.poll() is not None:
                ran = now - started_at[name]
                backoff[name] = RESTART_MIN_S if ran > 60 else min(backoff[name] * 2, RESTART_MAX_S)
                print(f"wattbus up: {name} exited with {p.returncode}; restarting in {backoff[name]:.0f} s",
                      file=sys.stderr)
                children.pop(name)
                next_start[name] = now + backoff[name]
            if name not in children and now >= next_start[name]:
                spawn(name)
    for p in children.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 12
    for p in children.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    return 0
